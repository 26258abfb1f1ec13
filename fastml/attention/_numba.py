"""Fused scaled dot-product attention compiled with Numba: tiled online softmax.

The L x S score matrix never exists. The query rows of one key/value head are cut into tiles of
``BLOCK_ROWS`` rows, and each tile walks over the keys in blocks of ``BLOCK_KEYS``:

1. scores = Q_tile K_block^T with one single-threaded BLAS product (``np.dot`` into a buffer);
2. the mask is added, and keys past a row's causal limit or past the valid length get -inf;
3. online softmax (FlashAttention's recurrence): each row keeps its running maximum m and sum l.
   A larger maximum rescales l and the output accumulator by exp(m_old - m_new), so the final
   acc / l equals softmax(scores) V up to rounding;
4. acc = acc * rescale + P V_block, a second BLAS product.

Key blocks entirely above the causal diagonal (or past the valid length) are never visited, so
causal attention does half the work. On the diagonal itself the tile goes through in bands of
``BAND_ROWS`` rows, each up to its own limit. The G query heads that share a key/value head are
stacked into one tile, row r being query r // G of head r % G. Each key and value block is then
read once for all G heads, and a single decoding query still fills G rows.

Cost: O(B Hq L S (E + Ev)) flops in BLAS (about half with is_causal) plus O(B Hq L S) exp
evaluations. Extra memory is O(threads * BLOCK_ROWS * (BLOCK_KEYS + E + 2 Ev)), independent of
L and S. The (batch, key/value head, row tile) items are dealt to the workers round-robin, so
short and long causal tiles mix. Each item is computed the same way on any worker, so the output
does not depend on the thread count.

Two LLVM details earn the speed of the softmax step (Numba 0.68, measured per score on a
Sapphire Rapids core). ``exp`` is a Cody-Waite reduction and a Taylor polynomial in plain
arithmetic, with the power of two built from its bits, so the loop vectorizes: 0.3 ns, where
NumPy's vectorized ``np.exp`` took 2 ns. The row maximum uses ``llvm.maxnum``, which LLVM
vectorizes as a reduction: 0.05 to 0.08 ns, where Python's ``max`` compiled to a scalar loop took 0.7 ns.
"""

import numpy as np

# Numba's np.dot calls SciPy's BLAS. Loading it here, before any blas_threads() block, lets
# threadpoolctl see it and limit it to one thread inside the parallel region.
import scipy.linalg.cython_blas  # noqa: F401
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from fastml._threads import numba_threads
from fastml.attention._tiling import blas_limit, plan

BLOCK_ROWS = 256
BLOCK_KEYS = 512
# Rows per band on the causal diagonal (see _attend_item).
BAND_ROWS = 32

# Fast-math flags for the softmax loops: "reassoc" lets LLVM vectorize the row sums. No "nnan"
# or "ninf": masked scores are -inf on purpose.
_LOOP_MATH = {"nsz", "arcp", "contract", "reassoc"}
# The exp kernel must not be reassociated: that would merge the two halves of the Cody-Waite
# constant ln 2 and lose the precision they exist for.
_EXP_MATH = {"nsz", "contract"}


def attend(q, k, v, kv_batch, mask, kv_lengths, is_causal, scale, n_threads):
    """Return the attention output (B, Hq, L, Ev); see ``fastml.attention._api`` for the inputs."""
    out = np.empty(q.shape[:3] + (v.shape[3],), dtype=q.dtype)
    has_mask = mask is not None
    if not has_mask:
        mask = np.zeros((1, 1, 1, 1), dtype=q.dtype)
    _, n_workers, tile_rows = plan(q.shape, k.shape, v.shape[3], n_threads, BLOCK_ROWS)
    block_keys = min(BLOCK_KEYS, k.shape[2])

    with blas_limit(n_workers, n_threads), numba_threads(n_workers):
        _attend_all(
            q, k, v, kv_batch, mask, has_mask, kv_lengths, is_causal, q.dtype.type(scale),
            tile_rows, block_keys, BAND_ROWS, n_workers, out,
        )
    return out


# ----------------------------------------------------------------------------- exp and max


@intrinsic
def _float_from_bits(typingctx, bits):
    """Reinterpret the bits of an int32 as a float32, or of an int64 as a float64."""
    if bits == types.int32:
        signature, float_type = types.float32(types.int32), ir.FloatType()
    elif bits == types.int64:
        signature, float_type = types.float64(types.int64), ir.DoubleType()
    else:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], float_type)

    return signature, codegen


@intrinsic
def _maxnum(typingctx, a, b):
    """max(a, b) as ``llvm.maxnum``, which the loop vectorizer turns into a vector reduction."""
    if not isinstance(a, types.Float) or a != b:
        return None

    def codegen(context, builder, sig, args):
        llvm_type = args[0].type
        function_type = ir.FunctionType(llvm_type, [llvm_type, llvm_type])
        maxnum = builder.module.declare_intrinsic("llvm.maxnum", [llvm_type], function_type)
        return builder.call(maxnum, args)

    return a(a, b), codegen


def _exp_nonpositive(x):
    """exp(x) for x <= 0 (or -inf); dispatched on the dtype by the overload below."""
    raise NotImplementedError("only callable from Numba-compiled code")


@njit(fastmath=_EXP_MATH, nogil=True, cache=True)
def _exp32(x):
    # exp(x) = 2^n exp(r) with n = round(x / ln 2), |r| <= ln(2) / 2; ln 2 is split in a short
    # head (exact times n) and a tail, so r carries no rounding error (Cody and Waite).
    # Below -87, exp(x) < 2^-125 is within a float32 ulp of zero relative to the row maximum
    # exp(0) = 1, and is flushed to 0 (as is -inf, a masked score).
    clamped = max(x, np.float32(-87.0))
    n = np.floor(clamped * np.float32(1.4426950408889634) + np.float32(0.5))
    r = clamped - n * np.float32(0.693145751953125)
    r = r - n * np.float32(1.4286068203094173e-06)
    # Taylor series to r^7: the first omitted term is below 6e-9 for |r| <= 0.347.
    p = np.float32(1.0 / 5040.0)
    p = p * r + np.float32(1.0 / 720.0)
    p = p * r + np.float32(1.0 / 120.0)
    p = p * r + np.float32(1.0 / 24.0)
    p = p * r + np.float32(1.0 / 6.0)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    # The bits of 2^n: biased exponent n + 127 shifted into place, shifted as a float product
    # because Numba widens int32 shifts to int64, which halves the vector width.
    two_to_n = _float_from_bits(np.int32((n + np.float32(127.0)) * np.float32(8388608.0)))
    return p * two_to_n if x >= np.float32(-87.0) else np.float32(0.0)


@njit(fastmath=_EXP_MATH, nogil=True, cache=True)
def _exp64(x):
    # The float64 twin of _exp32. Below -708, exp(x) < 2^-1021 is flushed to 0.
    clamped = max(x, -708.0)
    n = np.floor(clamped * 1.4426950408889634 + 0.5)
    r = clamped - n * 0.6931471803691238
    r = r - n * 1.9082149292705877e-10
    # Taylor series to r^13: the first omitted term is below 1e-17 for |r| <= 0.347.
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    two_to_n = _float_from_bits(np.int64((n + 1023.0) * 4503599627370496.0))
    return p * two_to_n if x >= -708.0 else 0.0


@overload(_exp_nonpositive)
def _exp_nonpositive_impl(x):
    if x == types.float32:
        return lambda x: _exp32(x)
    if x == types.float64:
        return lambda x: _exp64(x)
    return None


# ----------------------------------------------------------------------------- one tile


@njit(fastmath=_LOOP_MATH, nogil=True, cache=True)
def _online_softmax(scores, row_max, row_sum, rescale):
    """Turn each score row into exp(score - new max) in place and update the running stats.

    ``rescale[r]`` receives exp(old max - new max), the factor that brings the accumulated
    output and sum of row r onto the new maximum. A row whose scores are all -inf so far keeps
    max -inf, sum 0 and rescale 1, and its weights are zeros.
    """
    n_rows, n_cols = scores.shape
    for r in range(n_rows):
        row = scores[r]
        new_max = row_max[r]
        for j in range(n_cols):
            new_max = _maxnum(new_max, row[j])
        if new_max == -np.inf:
            rescale[r] = 1.0
            row[:] = 0.0
            continue

        total = row.dtype.type(0.0)
        for j in range(n_cols):
            weight = _exp_nonpositive(row[j] - new_max)
            row[j] = weight
            total += weight
        rescale[r] = _exp_nonpositive(row_max[r] - new_max)
        row_sum[r] = row_sum[r] * rescale[r] + total
        row_max[r] = new_max


@njit(nogil=True, cache=True)
def _row_limit(i, n_queries, kv_length, is_causal):
    """Return how many keys (the first ones) query i attends to; causal attention is bottom-right."""
    if not is_causal:
        return kv_length
    return min(kv_length, max(0, kv_length - n_queries + i + 1))


@njit(fastmath=_LOOP_MATH, nogil=True, cache=True)
def _add_mask(scores, mask, b, kv_head, group, row_start, key_start):
    """Add the mask to the scores; -inf in the mask wins over any score, even +inf."""
    n_rows, n_cols = scores.shape
    mask_b = b if mask.shape[0] > 1 else 0
    for r in range(n_rows):
        i, g = divmod(row_start + r, group)
        mask_h = kv_head * group + g if mask.shape[1] > 1 else 0
        mask_i = i if mask.shape[2] > 1 else 0
        mask_row = mask[mask_b, mask_h, mask_i, key_start : key_start + n_cols]
        row = scores[r]
        for j in range(n_cols):
            row[j] = -np.inf if mask_row[j] == -np.inf else row[j] + mask_row[j]


@njit(nogil=True, cache=True)
def _hide_past_limits(scores, row_start, group, n_queries, kv_length, is_causal, key_start):
    """Set to -inf the scores of keys past each row's limit (the causal diagonal)."""
    n_rows, n_cols = scores.shape
    for r in range(n_rows):
        limit = _row_limit((row_start + r) // group, n_queries, kv_length, is_causal)
        for j in range(max(0, limit - key_start), n_cols):
            scores[r, j] = -np.inf


@njit(nogil=True, cache=True)
def _attend_item(
    q, k, v, b, kb, kv_head, row_start, row_stop, mask, has_mask, kv_length, is_causal, scale,
    block_keys, band_rows, query_tile, score_buffer, product, acc, row_max, row_sum, rescale,
    out,
):
    """Compute the output rows row_start:row_stop of key/value head kv_head.

    Row r of the tile is query (row_start + r) // G of head kv_head * G + (row_start + r) % G.
    """
    n_queries = q.shape[2]
    group = q.shape[1] // k.shape[1]
    n_rows = row_stop - row_start
    keys = k[kb, kv_head]
    values = v[kb, kv_head]

    # Stack the tile's query rows; the scale is applied here, once per query element.
    for r in range(n_rows):
        i, g = divmod(row_start + r, group)
        for e in range(q.shape[3]):
            query_tile[r, e] = q[b, kv_head * group + g, i, e] * scale
    row_max[:n_rows] = -np.inf
    row_sum[:n_rows] = 0.0
    acc[:n_rows] = 0.0

    # Limits grow with the row, so the first row's limit bounds the keys that every row attends to:
    # those go through with all rows at once, no causal masking needed.
    common_limit = _row_limit(row_start // group, n_queries, kv_length, is_causal)
    _attend_rows(
        keys, values, mask, has_mask, b, kv_head, group, n_queries, kv_length, is_causal,
        row_start, 0, n_rows, 0, common_limit, block_keys,
        query_tile, score_buffer, product, acc, row_max, row_sum, rescale,
    )
    # The causal diagonal band beyond it: bands of band_rows rows, each up to its own last
    # row's limit, so the masked triangle computed in vain is band_rows wide, not n_rows.
    for band_start in range(0, n_rows, band_rows):
        band_stop = min(band_start + band_rows, n_rows)
        band_limit = _row_limit((row_start + band_stop - 1) // group, n_queries, kv_length, is_causal)
        _attend_rows(
            keys, values, mask, has_mask, b, kv_head, group, n_queries, kv_length, is_causal,
            row_start, band_start, band_stop, common_limit, band_limit, block_keys,
            query_tile, score_buffer, product, acc, row_max, row_sum, rescale,
        )

    for r in range(n_rows):
        i, g = divmod(row_start + r, group)
        # A row that saw no key has sum 0 and an accumulator of zeros: it stays zero.
        inverse = 1.0 / row_sum[r] if row_sum[r] > 0 else 0.0
        for e in range(acc.shape[1]):
            out[b, kv_head * group + g, i, e] = acc[r, e] * inverse


@njit(nogil=True, cache=True)
def _attend_rows(
    keys, values, mask, has_mask, b, kv_head, group, n_queries, kv_length, is_causal,
    row_start, first, stop, key_start, key_stop, block_keys,
    query_tile, score_buffer, product, acc, row_max, row_sum, rescale,
):
    """Fold keys key_start:key_stop into the running softmax of tile rows first:stop.

    ``keys`` (S, E) and ``values`` (S, Ev) belong to the key/value head; tile row r is global
    row row_start + r.
    """
    n_rows = stop - first
    queries = query_tile[first:stop]
    first_limit = _row_limit((row_start + first) // group, n_queries, kv_length, is_causal)

    for block_start in range(key_start, key_stop, block_keys):
        block_stop = min(block_start + block_keys, key_stop)
        n_cols = block_stop - block_start
        scores = score_buffer[: n_rows * n_cols].reshape((n_rows, n_cols))
        # (rows, E) @ (E, cols) -> (rows, cols)
        np.dot(queries, keys[block_start:block_stop].T, scores)

        if has_mask:
            _add_mask(scores, mask, b, kv_head, group, row_start + first, block_start)
        if block_stop > first_limit:
            _hide_past_limits(
                scores, row_start + first, group, n_queries, kv_length, is_causal, block_start
            )
        _online_softmax(scores, row_max[first:stop], row_sum[first:stop], rescale)

        # (rows, cols) @ (cols, Ev) -> (rows, Ev)
        np.dot(scores, values[block_start:block_stop], product[:n_rows])
        for r in range(n_rows):
            for e in range(acc.shape[1]):
                acc[first + r, e] = acc[first + r, e] * rescale[r] + product[r, e]


@njit(parallel=True, nogil=True, cache=True)
def _attend_all(
    q, k, v, kv_batch, mask, has_mask, kv_lengths, is_causal, scale,
    block_rows, block_keys, band_rows, n_workers, out,
):
    n_batch, n_heads, n_queries, head_dim = q.shape
    n_kv_heads = k.shape[1]
    value_dim = v.shape[3]
    n_rows = (n_heads // n_kv_heads) * n_queries
    n_tiles = -(-n_rows // block_rows)
    n_items = n_batch * n_kv_heads * n_tiles

    for worker in prange(n_workers):
        # Per-worker buffers, reused for every item of the worker.
        query_tile = np.empty((block_rows, head_dim), dtype=q.dtype)
        score_buffer = np.empty(block_rows * block_keys, dtype=q.dtype)
        product = np.empty((block_rows, value_dim), dtype=q.dtype)
        acc = np.empty((block_rows, value_dim), dtype=q.dtype)
        row_max = np.empty(block_rows, dtype=q.dtype)
        row_sum = np.empty(block_rows, dtype=q.dtype)
        rescale = np.empty(block_rows, dtype=q.dtype)

        # Round-robin: neighbouring row tiles, cheap and expensive under is_causal, go to
        # different workers.
        for item in range(worker, n_items, n_workers):
            tile = item % n_tiles
            head_index = item // n_tiles
            b, kv_head = divmod(head_index, n_kv_heads)
            row_start = tile * block_rows
            row_stop = min(row_start + block_rows, n_rows)
            _attend_item(
                q, k, v, b, kv_batch[b], kv_head, row_start, row_stop, mask, has_mask,
                kv_lengths[b], is_causal, scale, block_keys, band_rows, query_tile,
                score_buffer, product, acc, row_max, row_sum, rescale, out,
            )

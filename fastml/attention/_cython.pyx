"""Fused scaled dot-product attention compiled with Cython and OpenMP: tiled online softmax.

The algorithm of the Numba backend in C. The query rows of one key/value head (the G query heads
of a group stacked, row r being query r // G of head r % G) are cut into tiles of
``BLOCK_ROWS`` rows; a tile walks over the keys in blocks of ``BLOCK_KEYS``: one
single-threaded BLAS GEMM (SciPy's ``cython_blas``) for the scores, the mask and the causal
limit, the online-softmax update of each row's running maximum and sum (which rescales the
output accumulated so far), and a second GEMM that adds P V_block to the accumulator. Key blocks
entirely above the causal diagonal or past the valid length are never visited. Items (batch,
key/value head, row tile) go to the threads round-robin under ``prange``, each with its own
buffers; an item is computed the same way on any thread, so the thread count does not change
the output.

The softmax loops are written so that GCC vectorizes them without -ffast-math: ``exp`` is a
Cody-Waite reduction and a Taylor polynomial in plain arithmetic, rounding with the 1.5 * 2^23
trick (``floorf`` blocks vectorization) and building 2^n from its bits through a union; the row
maximum and sum keep 16 independent lanes, since a single running value is a reduction that GCC
vectorizes only when allowed to reassociate.

Cost: O(B Hq L S (E + Ev)) flops in BLAS (about half with is_causal) plus O(B Hq L S) exp
evaluations; extra memory O(threads * BLOCK_ROWS * (BLOCK_KEYS + E + Ev)), independent of L and S.

Inputs are validated by ``fastml.attention`` before they reach this module: C-contiguous, finite,
one dtype, matching shapes, valid lengths. That is what makes the disabled bounds checks safe.
"""

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memset
from scipy.linalg.cython_blas cimport dgemm, sgemm

import numpy as np

from fastml.attention._tiling import blas_limit, plan

BLOCK_ROWS = 256
BLOCK_KEYS = 512
# Rows per band on the causal diagonal (see _attend_item).
BAND_ROWS = 32

cdef enum:
    # Independent partial results in the row maximum and sum loops: four AVX-512 vectors of
    # float32. Attention at 2048, 16 heads, no mask, 2 threads (GCC 12, -O3 -march=native):
    # 16 lanes 110.9 ms, 32 lanes 109.0, 64 lanes 106.2, in one process each (this VM varies
    # by 10 % between processes).
    _LANES = 64


cdef union _Bits32:
    float value
    int32_t bits


cdef union _Bits64:
    double value
    int64_t bits


def attend(q, k, v, kv_batch, mask, kv_lengths, is_causal, scale, n_threads):
    """Return the attention output (B, Hq, L, Ev); see ``fastml.attention._api`` for the inputs."""
    out = np.empty(q.shape[:3] + (v.shape[3],), dtype=q.dtype)
    has_mask = mask is not None
    if not has_mask:
        mask = np.zeros((1, 1, 1, 1), dtype=q.dtype)

    n_items, n_workers, block_rows = plan(q.shape, k.shape, v.shape[3], n_threads, BLOCK_ROWS)
    block_keys = min(BLOCK_KEYS, k.shape[2])
    # One row of each buffer per worker: the stacked query tile, the scores of a key block,
    # the output accumulator, and running maximum, sum and rescale factor of every row.
    query_tiles = np.empty((n_workers, block_rows * q.shape[3]), dtype=q.dtype)
    score_tiles = np.empty((n_workers, block_rows * block_keys), dtype=q.dtype)
    accumulators = np.empty((n_workers, block_rows * v.shape[3]), dtype=q.dtype)
    row_stats = np.empty((n_workers, 3 * block_rows), dtype=q.dtype)

    with blas_limit(n_workers, n_threads):
        _attend_all(
            q, k, v, kv_batch, mask, has_mask, kv_lengths, is_causal, scale,
            block_rows, block_keys, BAND_ROWS, n_items, n_workers,
            query_tiles, score_tiles, accumulators, row_stats, out,
        )
    return out


def _attend_all(
    const floating[:, :, :, ::1] q,
    const floating[:, :, :, ::1] k,
    const floating[:, :, :, ::1] v,
    const Py_ssize_t[::1] kv_batch,
    const floating[:, :, :, ::1] mask,
    bint has_mask,
    const Py_ssize_t[::1] kv_lengths,
    bint is_causal,
    double scale,
    Py_ssize_t block_rows,
    Py_ssize_t block_keys,
    Py_ssize_t band_rows,
    Py_ssize_t n_items,
    int n_workers,
    floating[:, ::1] query_tiles,
    floating[:, ::1] score_tiles,
    floating[:, ::1] accumulators,
    floating[:, ::1] row_stats,
    floating[:, :, :, ::1] out,
):
    cdef Py_ssize_t n_kv_heads = k.shape[1]
    cdef Py_ssize_t n_rows = (q.shape[1] // n_kv_heads) * q.shape[2]
    cdef Py_ssize_t n_tiles = (n_rows + block_rows - 1) // block_rows
    cdef Py_ssize_t item, b, kv_head, row_start
    cdef int worker

    # Static chunks of one item: item i runs on thread i % n_workers, so neighbouring row tiles,
    # cheap and expensive under is_causal, go to different threads.
    for item in prange(n_items, nogil=True, schedule="static", chunksize=1, num_threads=n_workers):
        worker = threadid()
        b = item // (n_tiles * n_kv_heads)
        kv_head = (item // n_tiles) % n_kv_heads
        row_start = (item % n_tiles) * block_rows
        _attend_item(
            q, k, v, b, kv_batch[b], kv_head, row_start, min(row_start + block_rows, n_rows),
            mask, has_mask, kv_lengths[b], is_causal, <floating>scale, block_keys, band_rows,
            &query_tiles[worker, 0], &score_tiles[worker, 0], &accumulators[worker, 0],
            &row_stats[worker, 0], out,
        )


cdef void _attend_item(
    const floating[:, :, :, ::1] q,
    const floating[:, :, :, ::1] k,
    const floating[:, :, :, ::1] v,
    Py_ssize_t b,
    Py_ssize_t kb,
    Py_ssize_t kv_head,
    Py_ssize_t row_start,
    Py_ssize_t row_stop,
    const floating[:, :, :, ::1] mask,
    bint has_mask,
    Py_ssize_t kv_length,
    bint is_causal,
    floating scale,
    Py_ssize_t block_keys,
    Py_ssize_t band_rows,
    floating* queries,
    floating* scores,
    floating* acc,
    floating* row_stats,
    floating[:, :, :, ::1] out,
) noexcept nogil:
    """Compute the output rows row_start:row_stop of key/value head kv_head."""
    cdef Py_ssize_t n_queries = q.shape[2], head_dim = q.shape[3], value_dim = v.shape[3]
    cdef Py_ssize_t group = q.shape[1] // k.shape[1]
    cdef Py_ssize_t n_rows = row_stop - row_start
    cdef floating* row_max = row_stats
    cdef floating* row_sum = row_stats + n_rows
    cdef floating* rescale = row_stats + 2 * n_rows
    cdef const floating* keys = &k[kb, kv_head, 0, 0]
    cdef const floating* values = &v[kb, kv_head, 0, 0]
    cdef Py_ssize_t r, band_start, band_stop, offset, common_limit, band_limit

    _gather_queries(q, b, kv_head, group, row_start, n_rows, scale, queries)
    for r in range(n_rows):
        row_max[r] = -INFINITY
        row_sum[r] = 0
    memset(acc, 0, n_rows * value_dim * sizeof(floating))

    # Limits grow with the row, so the first row's limit bounds the keys that every row sees:
    # those go through with all rows at once, no causal masking needed.
    common_limit = _row_limit(row_start // group, n_queries, kv_length, is_causal)
    _attend_rows(
        keys, values, mask, has_mask, b, kv_head, group, n_queries, kv_length, is_causal,
        row_start, n_rows, 0, common_limit, block_keys, head_dim, value_dim,
        queries, scores, acc, row_max, row_sum, rescale,
    )
    # The causal diagonal band beyond it: bands of band_rows rows, each up to its own last
    # row's limit, so the masked triangle computed in vain is band_rows wide, not n_rows.
    band_start = row_start
    while band_start < row_stop:
        band_stop = min(band_start + band_rows, row_stop)
        band_limit = _row_limit((band_stop - 1) // group, n_queries, kv_length, is_causal)
        offset = band_start - row_start
        _attend_rows(
            keys, values, mask, has_mask, b, kv_head, group, n_queries, kv_length, is_causal,
            band_start, band_stop - band_start, common_limit, band_limit, block_keys,
            head_dim, value_dim, queries + offset * head_dim, scores, acc + offset * value_dim,
            row_max + offset, row_sum + offset, rescale + offset,
        )
        band_start = band_stop

    _write_rows(acc, row_sum, b, kv_head, group, row_start, n_rows, out)


cdef void _attend_rows(
    const floating* keys,
    const floating* values,
    const floating[:, :, :, ::1] mask,
    bint has_mask,
    Py_ssize_t b,
    Py_ssize_t kv_head,
    Py_ssize_t group,
    Py_ssize_t n_queries,
    Py_ssize_t kv_length,
    bint is_causal,
    Py_ssize_t row_start,
    Py_ssize_t n_rows,
    Py_ssize_t key_start,
    Py_ssize_t key_stop,
    Py_ssize_t block_keys,
    Py_ssize_t head_dim,
    Py_ssize_t value_dim,
    const floating* queries,
    floating* scores,
    floating* acc,
    floating* row_max,
    floating* row_sum,
    floating* rescale,
) noexcept nogil:
    """Fold keys key_start:key_stop into the running softmax of rows row_start + 0..n_rows.

    ``keys`` and ``values`` point to the (S, E) and (S, Ev) arrays of the key/value head; the
    row buffers point to the first of the n_rows rows.
    """
    cdef Py_ssize_t first_limit = _row_limit(row_start // group, n_queries, kv_length, is_causal)
    cdef Py_ssize_t block_start = key_start, n_cols, r, e

    while block_start < key_stop:
        n_cols = min(block_keys, key_stop - block_start)
        _scores(queries, keys + block_start * head_dim, scores, n_rows, n_cols, head_dim)
        if has_mask:
            _add_mask(scores, n_rows, n_cols, mask, b, kv_head, group, row_start, block_start)
        if block_start + n_cols > first_limit:
            _hide_past_limits(scores, n_rows, n_cols, row_start, group, n_queries,
                              kv_length, is_causal, block_start)
        _online_softmax(scores, n_rows, n_cols, row_max, row_sum, rescale)

        for r in range(n_rows):
            for e in range(value_dim):
                acc[r * value_dim + e] *= rescale[r]
        _accumulate_values(scores, values + block_start * value_dim, acc, n_rows, n_cols,
                           value_dim)
        block_start += n_cols


cdef inline Py_ssize_t _row_limit(
    Py_ssize_t i, Py_ssize_t n_queries, Py_ssize_t kv_length, bint is_causal
) noexcept nogil:
    """Return how many keys (the first ones) query i sees; causal attention is bottom-right."""
    if not is_causal:
        return kv_length
    return min(kv_length, max(0, kv_length - n_queries + i + 1))


cdef void _gather_queries(
    const floating[:, :, :, ::1] q,
    Py_ssize_t b,
    Py_ssize_t kv_head,
    Py_ssize_t group,
    Py_ssize_t row_start,
    Py_ssize_t n_rows,
    floating scale,
    floating* queries,
) noexcept nogil:
    """Stack the tile's query rows, scaled once here instead of once per score."""
    cdef Py_ssize_t head_dim = q.shape[3], r, e, i, h
    for r in range(n_rows):
        i = (row_start + r) // group
        h = kv_head * group + (row_start + r) % group
        for e in range(head_dim):
            queries[r * head_dim + e] = q[b, h, i, e] * scale


cdef void _scores(
    const floating* queries,
    const floating* keys,
    floating* scores,
    Py_ssize_t n_rows,
    Py_ssize_t n_cols,
    Py_ssize_t head_dim,
) noexcept nogil:
    """scores (n_rows, n_cols), row-major, = queries (n_rows, E) @ keys (n_cols, E)^T.

    BLAS is column-major, where the row-major result is the n_cols x n_rows matrix
    keys @ queries^T: keys (row-major n_cols x E) is read transposed, queries as it is.
    """
    cdef char transa = b"T", transb = b"N"
    cdef int m = <int>n_cols, n = <int>n_rows, kdim = <int>head_dim
    cdef floating alpha = 1.0, beta = 0.0
    if floating is float:
        sgemm(&transa, &transb, &m, &n, &kdim, &alpha, <float*>keys, &kdim,
              <float*>queries, &kdim, &beta, scores, &m)
    else:
        dgemm(&transa, &transb, &m, &n, &kdim, &alpha, <double*>keys, &kdim,
              <double*>queries, &kdim, &beta, scores, &m)


cdef void _accumulate_values(
    const floating* weights,
    const floating* values,
    floating* acc,
    Py_ssize_t n_rows,
    Py_ssize_t n_cols,
    Py_ssize_t value_dim,
) noexcept nogil:
    """acc (n_rows, Ev) += weights (n_rows, n_cols) @ values (n_cols, Ev), all row-major.

    Column-major, that is acc^T (Ev x n_rows) += values^T (Ev x n_cols) @ weights^T: both
    row-major operands are already the transposes BLAS needs.
    """
    cdef char trans = b"N"
    cdef int m = <int>value_dim, n = <int>n_rows, kdim = <int>n_cols
    cdef floating alpha = 1.0, beta = 1.0
    if floating is float:
        sgemm(&trans, &trans, &m, &n, &kdim, &alpha, <float*>values, &m,
              <float*>weights, &kdim, &beta, acc, &m)
    else:
        dgemm(&trans, &trans, &m, &n, &kdim, &alpha, <double*>values, &m,
              <double*>weights, &kdim, &beta, acc, &m)


cdef void _add_mask(
    floating* scores,
    Py_ssize_t n_rows,
    Py_ssize_t n_cols,
    const floating[:, :, :, ::1] mask,
    Py_ssize_t b,
    Py_ssize_t kv_head,
    Py_ssize_t group,
    Py_ssize_t row_start,
    Py_ssize_t key_start,
) noexcept nogil:
    """Add the mask to the scores; -inf in the mask wins over any score, even +inf."""
    cdef Py_ssize_t r, j, i, g
    cdef Py_ssize_t mask_b = b if mask.shape[0] > 1 else 0, mask_h, mask_i
    cdef const floating* mask_row
    cdef floating* row
    for r in range(n_rows):
        i = (row_start + r) // group
        g = (row_start + r) % group
        mask_h = kv_head * group + g if mask.shape[1] > 1 else 0
        mask_i = i if mask.shape[2] > 1 else 0
        mask_row = &mask[mask_b, mask_h, mask_i, key_start]
        row = scores + r * n_cols
        for j in range(n_cols):
            row[j] = -INFINITY if mask_row[j] == -INFINITY else row[j] + mask_row[j]


cdef void _hide_past_limits(
    floating* scores,
    Py_ssize_t n_rows,
    Py_ssize_t n_cols,
    Py_ssize_t row_start,
    Py_ssize_t group,
    Py_ssize_t n_queries,
    Py_ssize_t kv_length,
    bint is_causal,
    Py_ssize_t key_start,
) noexcept nogil:
    """Set to -inf the scores of keys past each row's limit (the causal diagonal)."""
    cdef Py_ssize_t r, j, limit
    for r in range(n_rows):
        limit = _row_limit((row_start + r) // group, n_queries, kv_length, is_causal)
        for j in range(max(0, limit - key_start), n_cols):
            scores[r * n_cols + j] = -INFINITY


cdef void _online_softmax(
    floating* scores,
    Py_ssize_t n_rows,
    Py_ssize_t n_cols,
    floating* row_max,
    floating* row_sum,
    floating* rescale,
) noexcept nogil:
    """Turn each score row into exp(score - new max) in place and update the running stats.

    ``rescale[r]`` receives exp(old max - new max), the factor that brings the accumulated
    output and sum of row r onto the new maximum. A row whose scores are all -inf so far keeps
    max -inf, sum 0 and rescale 1, and its weights are zeros.
    """
    cdef Py_ssize_t r
    cdef floating new_max, total
    cdef floating* row
    for r in range(n_rows):
        row = scores + r * n_cols
        new_max = _row_max(row, n_cols, row_max[r])
        if new_max == -INFINITY:
            rescale[r] = 1
            memset(row, 0, n_cols * sizeof(floating))
            continue
        total = _exp_shifted_sum(row, n_cols, new_max)
        rescale[r] = _exp_nonpositive(row_max[r] - new_max)
        row_sum[r] = row_sum[r] * rescale[r] + total
        row_max[r] = new_max


cdef floating _row_max(const floating* row, Py_ssize_t n, floating start) noexcept nogil:
    cdef floating lanes[_LANES]
    cdef floating x
    cdef Py_ssize_t j = 0, t, width
    for t in range(_LANES):
        lanes[t] = start
    # Whole chunks of _LANES first: a constant trip count keeps the lanes in vector registers.
    while j + _LANES <= n:
        for t in range(_LANES):
            x = row[j + t]
            lanes[t] = x if x > lanes[t] else lanes[t]
        j += _LANES
    for t in range(n - j):
        x = row[j + t]
        lanes[t] = x if x > lanes[t] else lanes[t]

    # Fold the lanes pairwise, so that this too runs on whole vectors.
    width = _LANES // 2
    while width > 0:
        for t in range(width):
            lanes[t] = lanes[t + width] if lanes[t + width] > lanes[t] else lanes[t]
        width //= 2
    return lanes[0]


cdef floating _exp_shifted_sum(floating* row, Py_ssize_t n, floating shift) noexcept nogil:
    """Replace row[j] by exp(row[j] - shift) and return their sum."""
    cdef floating lanes[_LANES]
    cdef floating weight
    cdef Py_ssize_t j = 0, t, width
    for t in range(_LANES):
        lanes[t] = 0
    # One pass: each weight goes into its lane's sum while it is still in a register. Whole
    # chunks first, as in _row_max.
    while j + _LANES <= n:
        for t in range(_LANES):
            weight = _exp_nonpositive(row[j + t] - shift)
            row[j + t] = weight
            lanes[t] += weight
        j += _LANES
    for t in range(n - j):
        weight = _exp_nonpositive(row[j + t] - shift)
        row[j + t] = weight
        lanes[t] += weight

    width = _LANES // 2
    while width > 0:
        for t in range(width):
            lanes[t] += lanes[t + width]
        width //= 2
    return lanes[0]


cdef inline floating _exp_nonpositive(floating x) noexcept nogil:
    """exp(x) for x <= 0 or -inf, in plain arithmetic that GCC vectorizes.

    exp(x) = 2^n exp(r) with n = round(x / ln 2) and |r| <= ln(2) / 2; ln 2 is split in a short
    head (exact times n) and a tail, so r carries no rounding error (Cody and Waite). Adding and
    subtracting 1.5 * 2^23 (2^52 for double) rounds to the nearest integer. Below -87 (float) or
    -708 (double) the result, relative to the row maximum exp(0) = 1, is under one ulp and is
    flushed to 0, as is -inf, a masked score.
    """
    cdef _Bits32 bits32
    cdef _Bits64 bits64
    cdef floating clamped, n, r, p
    if floating is float:
        clamped = x if x > <float>-87.0 else <float>-87.0
        n = (clamped * <float>1.4426950408889634 + <float>12582912.0) - <float>12582912.0
        r = clamped - n * <float>0.693145751953125
        r = r - n * <float>1.4286068203094173e-06
        # Taylor series to r^7: the first omitted term is below 6e-9 for |r| <= 0.347.
        p = <float>(1.0 / 5040.0)
        p = p * r + <float>(1.0 / 720.0)
        p = p * r + <float>(1.0 / 120.0)
        p = p * r + <float>(1.0 / 24.0)
        p = p * r + <float>(1.0 / 6.0)
        p = p * r + <float>0.5
        p = p * r + <float>1.0
        p = p * r + <float>1.0
        # The bits of 2^n: the biased exponent n + 127 moved into the exponent field.
        bits32.bits = <int32_t>((n + <float>127.0) * <float>8388608.0)
        return p * bits32.value if x >= <float>-87.0 else <float>0.0
    else:
        clamped = x if x > -708.0 else -708.0
        n = (clamped * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0
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
        bits64.bits = <int64_t>((n + 1023.0) * 4503599627370496.0)
        return p * bits64.value if x >= -708.0 else 0.0


cdef void _write_rows(
    const floating* acc,
    const floating* row_sum,
    Py_ssize_t b,
    Py_ssize_t kv_head,
    Py_ssize_t group,
    Py_ssize_t row_start,
    Py_ssize_t n_rows,
    floating[:, :, :, ::1] out,
) noexcept nogil:
    """Divide each accumulated row by its sum and store it at its (head, query) place."""
    cdef Py_ssize_t value_dim = out.shape[3], r, e, i, h
    cdef floating inverse
    for r in range(n_rows):
        i = (row_start + r) // group
        h = kv_head * group + (row_start + r) % group
        # A row that saw no key has sum 0 and an accumulator of zeros: it stays zero.
        inverse = 1 / row_sum[r] if row_sum[r] > 0 else 0
        for e in range(value_dim):
            out[b, h, i, e] = acc[r * value_dim + e] * inverse

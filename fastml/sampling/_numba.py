"""Sampling compiled with Numba: linear-time selection instead of a sort, parallel over rows.

Per row of V tokens, with buffers owned by the row's block of rows:

1. ``z = logits / temperature`` in float64, and its maximum.
2. Top-k keeps the first k tokens in token order (higher logit first, the lower index first
   among equals): ``_dense_prefix`` with unit weights.
3. Weights ``w = exp(z - max)`` and fixed-point masses ``q`` (see _weights.py) of the tokens
   still in.
4. Top-p keeps the shortest prefix, in token order, whose mass reaches ``ceil(top_p * total)``:
   ``_dense_prefix`` (or ``_prefix_select`` after top-k) with the masses as weights.
5. Min-p drops the tokens with ``w < min_p`` except the first min_tokens_to_keep.
6. The draw walks the kept tokens in ascending index order until the running mass exceeds
   ``u * total``.

The selections are where the speed comes from. One pass builds a histogram of the gaps below
the maximum logit, in buckets of 1/16 logit, with the weight of each bucket. The running weight
over the buckets finds the bucket that contains the boundary. Every token of the earlier buckets
is in and every one of the later buckets is out, so only the boundary bucket is resolved token
by token. An introselect on (logit, index) does that without a sort: it keeps the side of the
pivot that contains the boundary, knowing the weight of the upper side. Because masses are
integers, every weight sum is exact and the result is the naive backend's, whatever the order of
the tokens in memory.

Cost per row: O(V) for steps 1 to 3 and the histogram passes, plus O(b) expected for the
introselect on the b tokens of the boundary bucket. The worst case is O(b log b), because after
2 log2(b) + 8 partitions the introselect heapsorts what is left. The draw is O(V), or O(n log n) when the n kept tokens
are at most V/32, so sorting their indices is cheaper than a pass. Memory: 48 bytes per token
and 8 KB of histogram per block of rows. Rows are independent, so blocks run in parallel
(``prange``) and the result does not depend on the number of threads.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from fastml._threads import numba_threads
from fastml.sampling._weights import (
    BUCKETS_PER_LOGIT,
    EXP_COEFFICIENTS,
    EXP_CUTOFF,
    LN2_HI,
    LN2_LO,
    LOG2E,
    N_BUCKETS,
    ROUNDER,
)

# Below this many candidates the introselect runs on them directly; above, the histogram pass
# first narrows the work to one bucket.
HISTOGRAM_MIN = 2048
# Ranges this small are sorted by insertion.
INSERTION_MAX = 16
# The draw sorts the kept indices when they are at most 1/SORT_FRACTION of the vocabulary.
SORT_FRACTION = 32
# Searches (the draw, greedy) test blocks of this many tokens before they walk one block.
SEARCH_BLOCK = 256


def greedy(logits, n_threads):
    """Return the index of the largest logit of every row; the lowest index wins a tie."""
    tokens = np.empty(logits.shape[0], dtype=np.int64)
    with numba_threads(n_threads):
        _greedy_rows(logits, tokens)
    return tokens


def filter_mask(logits, temperature, top_k, top_p, min_p, min_keep, shift, n_threads):
    """Return a boolean array of the shape of `logits`: True for the tokens every filter keeps."""
    mask = np.zeros(logits.shape, dtype=np.bool_)
    no_draws = np.empty(0)
    tokens = np.empty(0, dtype=np.int64)
    settings = (temperature, top_k, top_p, min_p, min_keep, math.ldexp(1.0, shift))
    with numba_threads(n_threads):
        _rows(logits, *settings, no_draws, _n_blocks(logits, n_threads), mask, tokens)
    return mask


def sample(logits, temperature, top_k, top_p, min_p, min_keep, shift, uniforms, n_threads):
    """Return one token per row, drawn from the kept tokens with the uniform number of that row."""
    no_mask = np.zeros((0, 0), dtype=np.bool_)
    tokens = np.empty(logits.shape[0], dtype=np.int64)
    settings = (temperature, top_k, top_p, min_p, min_keep, math.ldexp(1.0, shift))
    with numba_threads(n_threads):
        _rows(logits, *settings, uniforms, _n_blocks(logits, n_threads), no_mask, tokens)
    return tokens


def _n_blocks(logits, n_threads):
    return max(1, min(logits.shape[0], n_threads))


@njit(parallel=True, nogil=True, cache=True)
def _greedy_rows(logits, tokens):
    for row in prange(logits.shape[0]):
        tokens[row] = _argmax(logits[row])


@njit(nogil=True, cache=True)
def _argmax(values):
    """Return the index of the first maximum of `values`.

    Two vectorized passes (the maximum, then blocks searched for it) are faster than one pass
    that carries the index along, which LLVM does not vectorize.
    """
    top = _maximum(values)
    n = values.shape[0]
    for start in range(0, n, SEARCH_BLOCK):
        stop = min(start + SEARCH_BLOCK, n)
        found = False
        for i in range(start, stop):
            found |= values[i] == top
        if found:
            for i in range(start, stop):
                if values[i] == top:
                    return i
    return -1


@njit(parallel=True, nogil=True, cache=True)
def _rows(logits, temperature, top_k, top_p, min_p, min_keep, scale, uniforms, n_blocks, mask, tokens):
    """Filter every row, then fill its row of `mask`, or draw its token when `uniforms` is not empty."""
    n_rows, n_tokens = logits.shape
    rows_per_block = -(-n_rows // n_blocks)
    for block in prange(n_blocks):
        z = np.empty(n_tokens, dtype=np.float64)
        w = np.empty(n_tokens, dtype=np.float64)
        q = np.empty(n_tokens, dtype=np.int64)
        kept_masses = np.empty(n_tokens, dtype=np.int64)
        candidates = np.empty(n_tokens, dtype=np.intp)
        scratch = np.empty(n_tokens, dtype=np.intp)
        histogram = np.empty(N_BUCKETS, dtype=np.int64)

        for row in range(block * rows_per_block, min(n_rows, (block + 1) * rows_per_block)):
            n = _kept_tokens(
                logits[row], temperature, top_k, top_p, min_p, min_keep, scale,
                z, w, q, candidates, scratch, histogram,
            )
            if uniforms.shape[0] == 0:
                _fill_mask(mask[row], candidates, n)
            else:
                tokens[row] = _draw(q, candidates, n, uniforms[row], kept_masses)


@njit(nogil=True, cache=True)
def _kept_tokens(
    x, temperature, top_k, top_p, min_p, min_keep, scale, z, w, q, candidates, scratch, histogram
):
    """Filter row `x`; return the number n of kept tokens.

    n == len(x) means that every token is kept, and then `candidates` may be stale. Otherwise
    the kept tokens are candidates[:n], in no particular order. Fills z, the weights w and the
    masses q of (at least) the kept tokens.
    """
    n_tokens = x.shape[0]
    top = _scale(x, temperature, z)
    n = n_tokens
    listed = False

    if top_k > 0 and max(top_k, min_keep) < n_tokens:
        n = _dense_prefix(z, q, True, top, max(top_k, min_keep), candidates, scratch, histogram)
        listed = True

    if listed:
        total = _candidate_weights(z, top, scale, candidates, n, w, q)
    else:
        total = _dense_weights(z, top, scale, w, q)

    if top_p < 1.0:
        target = np.int64(math.ceil(top_p * np.float64(total)))
        keep = min(min_keep, n)
        if listed:
            size = _prefix_select(z, q, False, candidates, 0, n, target, histogram)
            if size < keep:
                # The nucleus is candidates[:size]; the next ones in token order lead the rest.
                size += _prefix_select(z, q, True, candidates, size, n, keep - size, histogram)
        else:
            size = _dense_prefix(z, q, False, top, target, candidates, scratch, histogram)
            if size < keep:
                # Both are prefixes of the token order, so the longer one contains the nucleus.
                size = _dense_prefix(z, q, True, top, keep, candidates, scratch, histogram)
        n = size
        listed = True

    if min_p > 0.0:
        if not listed and min_keep == 1:
            # The first token has weight 1 >= min_p, so the min_p test alone keeps it.
            n = _compact_min_p_dense(w, min_p, candidates)
        else:
            if not listed:
                for i in range(n_tokens):
                    candidates[i] = i
            head = _prefix_select(z, q, True, candidates, 0, n, min(min_keep, n), histogram)
            n = head + _compact_min_p(w, candidates, head, n, min_p)
    return n


@njit(nogil=True, cache=True)
def _scale(x, temperature, z):
    """Write x / temperature into z as float64; return the maximum."""
    if temperature == 1.0:
        for i in range(x.shape[0]):
            z[i] = x[i]
    else:
        for i in range(x.shape[0]):
            z[i] = np.float64(x[i]) / temperature
    return _maximum(z)


@njit(nogil=True, cache=True)
def _maximum(values):
    """Return the largest entry of `values` (no NaN), with 8 independent running maxima.

    The maximum does not depend on the order of comparisons, but LLVM does not reorder a
    floating-point reduction on its own. Separate lanes let it vectorize the loop.
    """
    lanes = np.full(8, -np.inf)
    n_full = values.shape[0] // 8 * 8
    for start in range(0, n_full, 8):
        for lane in range(8):
            value = values[start + lane]
            lanes[lane] = value if value > lanes[lane] else lanes[lane]
    top = -np.inf
    for lane in range(8):
        top = max(top, lanes[lane])
    for i in range(n_full, values.shape[0]):
        top = max(top, values[i])
    return top


@intrinsic
def _float64_from_bits(typingctx, bits):
    """Reinterpret the 64 bits of an int64 as a float64 (no conversion)."""
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@njit(nogil=True, cache=True, inline="always")
def _exp_weight(x):
    """exp(x) for x <= 0, operation for operation as ``_weights.exp_weight``."""
    # Clamping first and selecting at the end, instead of branching, lets the loops vectorize.
    clamped = x if x > EXP_CUTOFF else EXP_CUTOFF
    k = (clamped * LOG2E + ROUNDER) - ROUNDER
    r = (clamped - k * LN2_HI) - k * LN2_LO
    p = EXP_COEFFICIENTS[0]
    for j in range(1, len(EXP_COEFFICIENTS)):
        p = p * r + EXP_COEFFICIENTS[j]
    # 2**k built from its bits (biased exponent k + 1023, zero mantissa): the exact value of the
    # POW2 table that the other backends read, without a gather.
    p = p * _float64_from_bits((np.int64(k) + 1023) << 52)
    return p if x >= EXP_CUTOFF else 0.0


@njit(nogil=True, cache=True)
def exp_weights(x):
    """Return exp(x) for every x <= 0 as the kernels compute it (exposed for tests)."""
    out = np.empty(x.shape[0], dtype=np.float64)
    for i in range(x.shape[0]):
        out[i] = _exp_weight(x[i])
    return out


@njit(nogil=True, cache=True)
def _dense_weights(z, top, scale, w, q):
    """Fill the weights and masses of every token; return the total mass."""
    total = 0
    for i in range(z.shape[0]):
        weight = _exp_weight(z[i] - top)
        w[i] = weight
        mass = np.int64(weight * scale)
        q[i] = mass
        total += mass
    return total


@njit(nogil=True, cache=True)
def _candidate_weights(z, top, scale, candidates, n, w, q):
    """Fill the weights and masses of candidates[:n]; return their total mass."""
    total = 0
    for j in range(n):
        i = candidates[j]
        weight = _exp_weight(z[i] - top)
        w[i] = weight
        mass = np.int64(weight * scale)
        q[i] = mass
        total += mass
    return total


@njit(nogil=True, cache=True, inline="always")
def _before(z, a, b):
    """Return whether token a comes before token b: a higher logit, or an equal one and a lower index."""
    return z[a] > z[b] or (z[a] == z[b] and a < b)


@njit(nogil=True, cache=True, inline="always")
def _weight(q, unit, i):
    return 1 if unit else q[i]


@njit(nogil=True, cache=True, inline="always")
def _bucket(value, top):
    """Histogram bucket of a logit: its gap below `top` in 1/16 logit, the last bucket open-ended."""
    gap = (top - value) * BUCKETS_PER_LOGIT
    # Written so that an infinite gap (value = -inf) and NaN (top = value = -inf) fall in the
    # last bucket. The gap never decreases as the logit decreases, so buckets follow the order.
    if gap < N_BUCKETS - 1:
        return np.intp(gap)
    return N_BUCKETS - 1


@njit(nogil=True, cache=True)
def _prefix_select(z, q, unit, candidates, lo, hi, target, histogram):
    """Move the shortest prefix, in token order, of candidates[lo:hi] whose weight reaches
    `target` to the front of that range; return its length.

    Weights are the masses q, or 1 per token when `unit` (top-k). When the whole range weighs
    less than `target`, every candidate is in the prefix.
    """
    if target <= 0:
        return 0
    if hi - lo <= HISTOGRAM_MIN:
        return _weighted_select(z, q, unit, candidates, lo, hi, target)

    top = -np.inf
    for j in range(lo, hi):
        top = max(top, z[candidates[j]])
    histogram[:] = 0
    for j in range(lo, hi):
        i = candidates[j]
        histogram[_bucket(z[i], top)] += _weight(q, unit, i)

    boundary, below = _boundary_bucket(histogram, target)
    if boundary < 0:
        return hi - lo

    # Earlier buckets are in whole; the boundary bucket follows them and is resolved exactly.
    n_before = _move_buckets_first(z, candidates, lo, hi, top, boundary)
    n_at = _move_buckets_first(z, candidates, lo + n_before, hi, top, boundary + 1)
    start = lo + n_before
    return n_before + _weighted_select(z, q, unit, candidates, start, start + n_at, target - below)


@njit(nogil=True, cache=True)
def _dense_prefix(z, q, unit, top, target, candidates, scratch, histogram):
    """Fill candidates[:n] with the shortest prefix, in token order, of the whole row whose
    weight reaches `target`; return n. `top` is the row's maximum logit.

    The same as ``_prefix_select`` on every token, without a candidate list to read.
    """
    n_tokens = z.shape[0]
    if target <= 0:
        return 0

    histogram[:] = 0
    for i in range(n_tokens):
        histogram[_bucket(z[i], top)] += _weight(q, unit, i)
    boundary, below = _boundary_bucket(histogram, target)
    if boundary < 0:
        for i in range(n_tokens):
            candidates[i] = i
        return n_tokens

    # Tokens of earlier buckets go to candidates, those of the boundary bucket to scratch, and
    # then after them. Storing unconditionally and advancing by the comparison avoids the branch
    # mispredictions of a nucleus that covers a sizable fraction of the row.
    front = 0
    n_at = 0
    for i in range(n_tokens):
        b = _bucket(z[i], top)
        candidates[front] = i
        front += b < boundary
        scratch[n_at] = i
        n_at += b == boundary
    candidates[front : front + n_at] = scratch[:n_at]
    return front + _weighted_select(z, q, unit, candidates, front, front + n_at, target - below)


@njit(nogil=True, cache=True)
def _boundary_bucket(histogram, target):
    """Return the first bucket where the running weight reaches `target` (-1 if none) and the
    weight of the buckets before it."""
    below = 0
    for b in range(histogram.shape[0]):
        if below + histogram[b] >= target:
            return b, below
        below += histogram[b]
    return -1, below


@njit(nogil=True, cache=True)
def _compact_min_p_dense(w, min_p, candidates):
    """Fill candidates with every token whose weight is at least min_p; return their count."""
    n = 0
    for i in range(w.shape[0]):
        if w[i] >= min_p:
            candidates[n] = i
            n += 1
    return n


@njit(nogil=True, cache=True)
def _move_buckets_first(z, candidates, lo, hi, top, limit):
    """Move the candidates of buckets below `limit` to the front of candidates[lo:hi]; return their count."""
    store = lo
    for j in range(lo, hi):
        i = candidates[j]
        if _bucket(z[i], top) < limit:
            candidates[j] = candidates[store]
            candidates[store] = i
            store += 1
    return store - lo


@njit(nogil=True, cache=True)
def _weighted_select(z, q, unit, candidates, lo, hi, target):
    """``_prefix_select`` by introselect alone: partition around a pivot, keep the side that
    contains the boundary, subtract the weight of what is decided to be in."""
    start = lo
    need = target
    depth_limit = 2 * _bit_length(hi - lo) + 8
    while need > 0 and hi > lo:
        if hi - lo <= INSERTION_MAX or depth_limit == 0:
            # Too small to partition, or too many bad pivots: sort what is left and walk it.
            if hi - lo <= INSERTION_MAX:
                _insertion_sort(z, candidates, lo, hi)
            else:
                _heapsort(z, candidates, lo, hi)
            for j in range(lo, hi):
                need -= _weight(q, unit, candidates[j])
                if need <= 0:
                    return j + 1 - start
            return hi - start
        depth_limit -= 1

        pivot_at = _partition(z, candidates, lo, hi)
        pivot = candidates[pivot_at]
        upper = 0
        for j in range(lo, pivot_at):
            upper += _weight(q, unit, candidates[j])
        if upper >= need:
            hi = pivot_at
        elif upper + _weight(q, unit, pivot) >= need:
            return pivot_at + 1 - start
        else:
            need -= upper + _weight(q, unit, pivot)
            lo = pivot_at + 1
    return lo - start


@njit(nogil=True, cache=True)
def _partition(z, candidates, lo, hi):
    """Partition candidates[lo:hi] around the median of its first, middle and last entries.

    Return the pivot's final position. The tokens that come before the pivot end up on its left.
    """
    mid = lo + (hi - lo) // 2
    last = hi - 1
    # Order the three samples, then park the median at the end.
    if _before(z, candidates[mid], candidates[lo]):
        _swap(candidates, mid, lo)
    if _before(z, candidates[last], candidates[lo]):
        _swap(candidates, last, lo)
    if _before(z, candidates[last], candidates[mid]):
        _swap(candidates, last, mid)
    _swap(candidates, mid, last)

    pivot = candidates[last]
    store = lo
    for j in range(lo, last):
        if _before(z, candidates[j], pivot):
            _swap(candidates, j, store)
            store += 1
    _swap(candidates, store, last)
    return store


@njit(nogil=True, cache=True, inline="always")
def _swap(candidates, a, b):
    candidates[a], candidates[b] = candidates[b], candidates[a]


@njit(nogil=True, cache=True)
def _insertion_sort(z, candidates, lo, hi):
    for j in range(lo + 1, hi):
        token = candidates[j]
        k = j
        while k > lo and _before(z, token, candidates[k - 1]):
            candidates[k] = candidates[k - 1]
            k -= 1
        candidates[k] = token


@njit(nogil=True, cache=True)
def _heapsort(z, candidates, lo, hi):
    """Sort candidates[lo:hi] in token order, in O(n log n) whatever the input."""
    n = hi - lo
    # A heap whose root is the token that comes last, moved to the end one at a time.
    for root in range(n // 2 - 1, -1, -1):
        _sift_down(z, candidates, lo, root, n)
    for end in range(n - 1, 0, -1):
        _swap(candidates, lo, lo + end)
        _sift_down(z, candidates, lo, 0, end)


@njit(nogil=True, cache=True)
def _sift_down(z, candidates, lo, root, size):
    while True:
        child = 2 * root + 1
        if child >= size:
            return
        if child + 1 < size and _before(z, candidates[lo + child], candidates[lo + child + 1]):
            child += 1
        if not _before(z, candidates[lo + root], candidates[lo + child]):
            return
        _swap(candidates, lo + root, lo + child)
        root = child


@njit(nogil=True, cache=True, inline="always")
def _bit_length(n):
    length = 0
    while n > 0:
        n >>= 1
        length += 1
    return length


@njit(nogil=True, cache=True)
def _compact_min_p(w, candidates, lo, hi, min_p):
    """Keep the candidates of candidates[lo:hi] whose weight is at least min_p at the front; return their count."""
    store = lo
    for j in range(lo, hi):
        i = candidates[j]
        if w[i] >= min_p:
            candidates[store] = i
            store += 1
    return store - lo


@njit(nogil=True, cache=True)
def _fill_mask(mask_row, candidates, n):
    if n == mask_row.shape[0]:
        mask_row[:] = True
    else:
        for j in range(n):
            mask_row[candidates[j]] = True


@njit(nogil=True, cache=True)
def _draw(q, candidates, n, u, kept_masses):
    """Return the first kept token, in ascending index order, whose running mass exceeds u * total."""
    n_tokens = q.shape[0]
    if n == n_tokens:
        return _first_exceeding(q, _threshold(q, u))

    if n * SORT_FRACTION <= n_tokens:
        # Few kept tokens: sorting their indices is cheaper than a pass over the vocabulary.
        kept = candidates[:n]
        kept.sort()
        total = 0
        for j in range(n):
            total += q[kept[j]]
        threshold = min(np.int64(math.floor(u * np.float64(total))), total - 1)
        running = 0
        for j in range(n):
            running += q[kept[j]]
            if running > threshold:
                return kept[j]
        return -1

    # Many kept tokens: lay their masses out by index, 0 for the others.
    kept_masses[:] = 0
    for j in range(n):
        kept_masses[candidates[j]] = q[candidates[j]]
    return _first_exceeding(kept_masses, _threshold(kept_masses, u))


@njit(nogil=True, cache=True)
def _threshold(masses, u):
    """Return min(floor(u * total), total - 1) for the total of `masses`."""
    total = 0
    for i in range(masses.shape[0]):
        total += masses[i]
    return min(np.int64(math.floor(u * np.float64(total))), total - 1)


@njit(nogil=True, cache=True)
def _first_exceeding(masses, threshold):
    """Return the first index whose running sum of `masses` exceeds `threshold`.

    Whole blocks are summed first (a vectorized loop), and only the block where the running sum
    crosses the threshold is walked. Integer sums make this equal to a plain running sum.
    """
    n = masses.shape[0]
    running = 0
    for start in range(0, n, SEARCH_BLOCK):
        stop = min(start + SEARCH_BLOCK, n)
        block = 0
        for i in range(start, stop):
            block += masses[i]
        if running + block > threshold:
            for i in range(start, stop):
                running += masses[i]
                if running > threshold:
                    return i
        running += block
    return -1

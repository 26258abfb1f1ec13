# distutils: extra_compile_args = -ffp-contract=off
"""Sampling compiled with Cython and OpenMP: the Numba backend's algorithm, in C.

Per row: ``z = logits / temperature`` in float64; top-k as the shortest prefix of the token
order (higher logit first, the lower index first among equals) of weight k, with unit weights;
weights ``exp(z - max)`` and fixed-point masses (see _weights.py); top-p as the shortest prefix
whose mass reaches ``ceil(top_p * total)``; min-p; then the draw over the kept tokens in
ascending index order. ``_dense_prefix`` and ``_prefix_select`` avoid a sort: a histogram of the
gaps below the maximum logit (buckets of 1/16 logit) locates the boundary bucket in one pass, and
an introselect that tracks the weight of the pivot's upper side resolves that bucket alone.
Masses are integers, so every sum is exact and the result equals the naive backend's.

Cost per row of V tokens: O(V) for the scaling, the weights and the histogram passes, plus O(b)
expected for the introselect on the b tokens of the boundary bucket (O(b log b) at worst, by a
heapsort fallback). The draw is O(V), or O(n log n) to sort the n kept indices when n <= V/32.
Memory: 48 bytes per token and 8 KB of histogram per thread. Rows run in parallel under
``prange``; each row is independent, so the result does not depend on the thread count.

The module is compiled with -ffp-contract=off: a fused multiply-add rounds once where the other
backends round twice, and would change the weights in the last bit. Inputs are validated by
``fastml.sampling`` before they reach this module, which makes the disabled bounds checks safe.
"""

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY, ceil, floor
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport qsort
from libc.string cimport memcpy, memset

import math

import numpy as np

from fastml.sampling import _weights

cdef enum:
    _N_COEFFICIENTS = 14
    # Below this many candidates the introselect runs on them directly.
    _HISTOGRAM_MIN = 2048
    _INSERTION_MAX = 16
    # The draw sorts the kept indices when they are at most 1/_SORT_FRACTION of the vocabulary.
    _SORT_FRACTION = 32
    # Searches (the draw, greedy) test blocks of this many tokens before they walk one block.
    _BLOCK = 256

cdef double _EXP_CUTOFF = _weights.EXP_CUTOFF
cdef double _LOG2E = _weights.LOG2E
cdef double _ROUNDER = _weights.ROUNDER
cdef double _LN2_HI = _weights.LN2_HI
cdef double _LN2_LO = _weights.LN2_LO
cdef double _BUCKETS_PER_LOGIT = _weights.BUCKETS_PER_LOGIT
cdef Py_ssize_t _N_BUCKETS = _weights.N_BUCKETS
cdef double _COEFFICIENTS[_N_COEFFICIENTS]
assert len(_weights.EXP_COEFFICIENTS) == _N_COEFFICIENTS
for _j, _coefficient in enumerate(_weights.EXP_COEFFICIENTS):
    _COEFFICIENTS[_j] = _coefficient


cdef struct Workspace:
    double* z              # logits / temperature
    double* w              # weights exp(z - max)
    int64_t* q             # masses floor(w * 2**shift)
    int64_t* kept_masses   # masses of the kept tokens laid out by index, 0 elsewhere
    Py_ssize_t* candidates
    Py_ssize_t* scratch
    int64_t* histogram
    Py_ssize_t n_tokens


def greedy(logits, n_threads):
    """Return the index of the largest logit of every row; the lowest index wins a tie."""
    tokens = np.empty(logits.shape[0], dtype=np.int64)
    _greedy_rows(logits, tokens, n_threads)
    return tokens


def filter_mask(logits, temperature, top_k, top_p, min_p, min_keep, shift, n_threads):
    """Return a boolean array of the shape of `logits`: True for the tokens every filter keeps."""
    mask = np.zeros(logits.shape, dtype=bool)
    _rows(
        logits, temperature, top_k, top_p, min_p, min_keep, math.ldexp(1.0, shift),
        np.empty(0), False, mask.view(np.uint8), np.empty(0, dtype=np.int64), n_threads,
    )
    return mask


def sample(logits, temperature, top_k, top_p, min_p, min_keep, shift, uniforms, n_threads):
    """Return one token per row, drawn from the kept tokens with the uniform number of that row."""
    tokens = np.empty(logits.shape[0], dtype=np.int64)
    _rows(
        logits, temperature, top_k, top_p, min_p, min_keep, math.ldexp(1.0, shift),
        uniforms, True, np.zeros((0, 0), dtype=np.uint8), tokens, n_threads,
    )
    return tokens


def exp_weights(const double[::1] x):
    """Return exp(x) for every x <= 0 as the kernels compute it (exposed for tests)."""
    cdef double[::1] out = np.empty(x.shape[0])
    cdef Py_ssize_t i
    for i in range(x.shape[0]):
        out[i] = _exp_weight(x[i])
    return np.asarray(out)


def _greedy_rows(const floating[:, ::1] logits, int64_t[::1] tokens, int n_threads):
    cdef Py_ssize_t row
    for row in prange(logits.shape[0], nogil=True, schedule="static", num_threads=n_threads):
        tokens[row] = _argmax(&logits[row, 0], logits.shape[1])


def _rows(
    const floating[:, ::1] logits,
    double temperature,
    Py_ssize_t top_k,
    double top_p,
    double min_p,
    Py_ssize_t min_keep,
    double scale,
    const double[::1] uniforms,
    bint draw,
    uint8_t[:, ::1] mask,
    int64_t[::1] tokens,
    int n_threads,
):
    """Filter every row, then fill its row of `mask`, or draw its token when `draw`."""
    cdef Py_ssize_t n_rows = logits.shape[0], n_tokens = logits.shape[1], row, n
    cdef int thread
    cdef Workspace space

    # One workspace per thread, allocated here with the GIL held.
    n_threads = max(1, min(n_threads, n_rows))
    cdef double[:, ::1] z = np.empty((n_threads, n_tokens))
    cdef double[:, ::1] w = np.empty((n_threads, n_tokens))
    cdef int64_t[:, ::1] q = np.empty((n_threads, n_tokens), dtype=np.int64)
    cdef int64_t[:, ::1] kept_masses = np.empty((n_threads, n_tokens), dtype=np.int64)
    cdef Py_ssize_t[:, ::1] candidates = np.empty((n_threads, n_tokens), dtype=np.intp)
    cdef Py_ssize_t[:, ::1] scratch = np.empty((n_threads, n_tokens), dtype=np.intp)
    cdef int64_t[:, ::1] histogram = np.empty((n_threads, _N_BUCKETS), dtype=np.int64)

    # Dynamic scheduling: the cost of a row depends on where its boundaries fall.
    for row in prange(n_rows, nogil=True, schedule="dynamic", num_threads=n_threads):
        # Assigned as a whole, so that Cython makes `space` private to the thread.
        thread = threadid()
        space = Workspace(
            z=&z[thread, 0], w=&w[thread, 0], q=&q[thread, 0],
            kept_masses=&kept_masses[thread, 0], candidates=&candidates[thread, 0],
            scratch=&scratch[thread, 0], histogram=&histogram[thread, 0], n_tokens=n_tokens,
        )
        n = _kept_tokens(
            &logits[row, 0], temperature, top_k, top_p, min_p, min_keep, scale, &space
        )
        if draw:
            tokens[row] = _draw(&space, n, uniforms[row])
        else:
            _fill_mask(&mask[row, 0], &space, n)


cdef Py_ssize_t _kept_tokens(
    const floating* x,
    double temperature,
    Py_ssize_t top_k,
    double top_p,
    double min_p,
    Py_ssize_t min_keep,
    double scale,
    Workspace* space,
) noexcept nogil:
    """Filter one row; return the number n of kept tokens.

    n == n_tokens means that every token is kept, and then the candidates may be stale.
    Otherwise the kept tokens are candidates[:n], in no particular order.
    """
    cdef Py_ssize_t n_tokens = space.n_tokens, n = n_tokens, size, keep, head, i
    cdef bint listed = False
    cdef int64_t total, target
    cdef double top = _scale(x, n_tokens, temperature, space.z)

    if top_k > 0 and max(top_k, min_keep) < n_tokens:
        n = _dense_prefix(space, True, top, max(top_k, min_keep))
        listed = True

    if listed:
        total = _candidate_weights(space, n, top, scale)
    else:
        total = _dense_weights(space, top, scale)

    if top_p < 1.0:
        target = <int64_t>ceil(top_p * <double>total)
        keep = min(min_keep, n)
        if listed:
            size = _prefix_select(space, False, 0, n, target)
            if size < keep:
                # The nucleus is candidates[:size]; the next ones in token order lead the rest.
                size = size + _prefix_select(space, True, size, n, keep - size)
        else:
            size = _dense_prefix(space, False, top, target)
            if size < keep:
                # Both are prefixes of the token order, so the longer one contains the nucleus.
                size = _dense_prefix(space, True, top, keep)
        n = size
        listed = True

    if min_p > 0.0:
        if not listed and min_keep == 1:
            # The first token has weight 1 >= min_p, so the min_p test alone keeps it.
            n = _compact_min_p_dense(space, min_p)
        else:
            if not listed:
                for i in range(n_tokens):
                    space.candidates[i] = i
            head = _prefix_select(space, True, 0, n, min(min_keep, n))
            n = head + _compact_min_p(space, head, n, min_p)
    return n


cdef double _scale(const floating* x, Py_ssize_t n, double temperature, double* z) noexcept nogil:
    """Write x / temperature into z as float64; return the maximum."""
    cdef Py_ssize_t i
    if temperature == 1.0:
        for i in range(n):
            z[i] = x[i]
    else:
        for i in range(n):
            z[i] = <double>x[i] / temperature
    return _maximum(z, n)


cdef double _maximum(const floating* values, Py_ssize_t n) noexcept nogil:
    """Return the largest of values[:n] (no NaN), with 8 independent running maxima.

    The maximum does not depend on the order of comparisons, but the compiler does not reorder
    a floating-point reduction on its own. Separate lanes let it vectorize the loop.
    """
    cdef double lanes[8]
    cdef double top = -INFINITY, value
    cdef Py_ssize_t n_full = n // 8 * 8, start, lane, i
    for lane in range(8):
        lanes[lane] = -INFINITY
    for start in range(0, n_full, 8):
        for lane in range(8):
            value = values[start + lane]
            lanes[lane] = value if value > lanes[lane] else lanes[lane]
    for lane in range(8):
        top = lanes[lane] if lanes[lane] > top else top
    for i in range(n_full, n):
        top = values[i] if values[i] > top else top
    return top


cdef Py_ssize_t _argmax(const floating* values, Py_ssize_t n) noexcept nogil:
    """Return the index of the first maximum: the maximum, then blocks searched for it."""
    cdef double top = _maximum(values, n)
    cdef Py_ssize_t block, start, stop, i
    cdef bint found
    for block in range((n + _BLOCK - 1) // _BLOCK):
        start = block * _BLOCK
        stop = min(start + _BLOCK, n)
        found = False
        for i in range(start, stop):
            found = found | (values[i] == top)
        if found:
            for i in range(start, stop):
                if values[i] == top:
                    return i
    return -1


cdef inline double _exp_weight(double x) noexcept nogil:
    """exp(x) for x <= 0, operation for operation as ``_weights.exp_weight``."""
    cdef double clamped = x if x > _EXP_CUTOFF else _EXP_CUTOFF
    cdef double k = (clamped * _LOG2E + _ROUNDER) - _ROUNDER
    cdef double r = (clamped - k * _LN2_HI) - k * _LN2_LO
    cdef double p = _COEFFICIENTS[0], power
    cdef int64_t bits
    cdef int j
    for j in range(1, _N_COEFFICIENTS):
        p = p * r + _COEFFICIENTS[j]
    # 2**k built from its bits (biased exponent k + 1023, zero mantissa): the exact value of the
    # POW2 table that the other backends read, without a gather.
    bits = (<int64_t>k + 1023) << 52
    memcpy(&power, &bits, 8)
    p = p * power
    return p if x >= _EXP_CUTOFF else 0.0


cdef int64_t _dense_weights(Workspace* space, double top, double scale) noexcept nogil:
    """Fill the weights and masses of every token; return the total mass."""
    cdef Py_ssize_t i
    cdef int64_t total = 0, mass
    cdef double weight
    for i in range(space.n_tokens):
        weight = _exp_weight(space.z[i] - top)
        space.w[i] = weight
        mass = <int64_t>(weight * scale)
        space.q[i] = mass
        total += mass
    return total


cdef int64_t _candidate_weights(Workspace* space, Py_ssize_t n, double top, double scale) noexcept nogil:
    """Fill the weights and masses of candidates[:n]; return their total mass."""
    cdef Py_ssize_t j, i
    cdef int64_t total = 0, mass
    cdef double weight
    for j in range(n):
        i = space.candidates[j]
        weight = _exp_weight(space.z[i] - top)
        space.w[i] = weight
        mass = <int64_t>(weight * scale)
        space.q[i] = mass
        total += mass
    return total


cdef inline bint _before(const double* z, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """Return whether token a comes before token b: a higher logit, or an equal one and a lower index."""
    return z[a] > z[b] or (z[a] == z[b] and a < b)


cdef inline int64_t _weight(Workspace* space, bint unit, Py_ssize_t i) noexcept nogil:
    return 1 if unit else space.q[i]


cdef inline Py_ssize_t _bucket(double value, double top) noexcept nogil:
    """Histogram bucket of a logit: its gap below `top` in 1/16 logit, the last bucket open-ended."""
    cdef double gap = (top - value) * _BUCKETS_PER_LOGIT
    # Written so that an infinite gap (value = -inf) and NaN (top = value = -inf) fall in the
    # last bucket. The gap never decreases as the logit decreases, so buckets follow the order.
    if gap < _N_BUCKETS - 1:
        return <Py_ssize_t>gap
    return _N_BUCKETS - 1


cdef Py_ssize_t _boundary_bucket(const int64_t* histogram, int64_t target, int64_t* below) noexcept nogil:
    """Return the first bucket where the running weight reaches `target` (-1 if none); set
    `below` to the weight of the buckets before it."""
    cdef Py_ssize_t b
    below[0] = 0
    for b in range(_N_BUCKETS):
        if below[0] + histogram[b] >= target:
            return b
        below[0] += histogram[b]
    return -1


cdef Py_ssize_t _dense_prefix(Workspace* space, bint unit, double top, int64_t target) noexcept nogil:
    """Fill candidates[:n] with the shortest prefix, in token order, of the whole row whose
    weight reaches `target`; return n. `top` is the row's maximum logit.

    The same as ``_prefix_select`` on every token, without a candidate list to read.
    """
    cdef Py_ssize_t n_tokens = space.n_tokens, i, b, boundary, front = 0, n_at = 0
    cdef int64_t below
    cdef double* z = space.z
    if target <= 0:
        return 0

    memset(space.histogram, 0, _N_BUCKETS * sizeof(int64_t))
    for i in range(n_tokens):
        space.histogram[_bucket(z[i], top)] += _weight(space, unit, i)
    boundary = _boundary_bucket(space.histogram, target, &below)
    if boundary < 0:
        for i in range(n_tokens):
            space.candidates[i] = i
        return n_tokens

    # Tokens of earlier buckets go to candidates, those of the boundary bucket to scratch, and
    # then after them. Storing unconditionally and advancing by the comparison avoids the branch
    # mispredictions of a nucleus that covers a sizable fraction of the row.
    for i in range(n_tokens):
        b = _bucket(z[i], top)
        space.candidates[front] = i
        front += b < boundary
        space.scratch[n_at] = i
        n_at += b == boundary
    memcpy(space.candidates + front, space.scratch, n_at * sizeof(Py_ssize_t))
    return front + _weighted_select(space, unit, front, front + n_at, target - below)


cdef Py_ssize_t _prefix_select(
    Workspace* space, bint unit, Py_ssize_t lo, Py_ssize_t hi, int64_t target
) noexcept nogil:
    """Move the shortest prefix, in token order, of candidates[lo:hi] whose weight reaches
    `target` to the front of that range; return its length.

    Weights are the masses, or 1 per token when `unit` (top-k). When the whole range weighs
    less than `target`, every candidate is in the prefix.
    """
    cdef Py_ssize_t j, i, boundary, n_before, n_at, start
    cdef double top = -INFINITY
    cdef int64_t below
    cdef Py_ssize_t* candidates = space.candidates
    if target <= 0:
        return 0
    if hi - lo <= _HISTOGRAM_MIN:
        return _weighted_select(space, unit, lo, hi, target)

    for j in range(lo, hi):
        top = max(top, space.z[candidates[j]])
    memset(space.histogram, 0, _N_BUCKETS * sizeof(int64_t))
    for j in range(lo, hi):
        i = candidates[j]
        space.histogram[_bucket(space.z[i], top)] += _weight(space, unit, i)
    boundary = _boundary_bucket(space.histogram, target, &below)
    if boundary < 0:
        return hi - lo

    # Earlier buckets are in whole; the boundary bucket follows them and is resolved exactly.
    n_before = _move_buckets_first(space, lo, hi, top, boundary)
    n_at = _move_buckets_first(space, lo + n_before, hi, top, boundary + 1)
    start = lo + n_before
    return n_before + _weighted_select(space, unit, start, start + n_at, target - below)


cdef Py_ssize_t _move_buckets_first(
    Workspace* space, Py_ssize_t lo, Py_ssize_t hi, double top, Py_ssize_t limit
) noexcept nogil:
    """Move the candidates of buckets below `limit` to the front of candidates[lo:hi]; return their count."""
    cdef Py_ssize_t store = lo, j, i
    cdef Py_ssize_t* candidates = space.candidates
    for j in range(lo, hi):
        i = candidates[j]
        if _bucket(space.z[i], top) < limit:
            candidates[j] = candidates[store]
            candidates[store] = i
            store += 1
    return store - lo


cdef Py_ssize_t _weighted_select(
    Workspace* space, bint unit, Py_ssize_t lo, Py_ssize_t hi, int64_t target
) noexcept nogil:
    """``_prefix_select`` by introselect alone: partition around a pivot, keep the side that
    contains the boundary, subtract the weight of what is decided to be in."""
    cdef Py_ssize_t start = lo, j, pivot_at, pivot
    cdef int64_t need = target, upper
    cdef int depth_limit = 2 * _bit_length(hi - lo) + 8
    cdef Py_ssize_t* candidates = space.candidates

    while need > 0 and hi > lo:
        if hi - lo <= _INSERTION_MAX or depth_limit == 0:
            # Too small to partition, or too many bad pivots: sort what is left and walk it.
            if hi - lo <= _INSERTION_MAX:
                _insertion_sort(space.z, candidates, lo, hi)
            else:
                _heapsort(space.z, candidates, lo, hi)
            for j in range(lo, hi):
                need -= _weight(space, unit, candidates[j])
                if need <= 0:
                    return j + 1 - start
            return hi - start
        depth_limit -= 1

        pivot_at = _partition(space.z, candidates, lo, hi)
        pivot = candidates[pivot_at]
        upper = 0
        for j in range(lo, pivot_at):
            upper += _weight(space, unit, candidates[j])
        if upper >= need:
            hi = pivot_at
        elif upper + _weight(space, unit, pivot) >= need:
            return pivot_at + 1 - start
        else:
            need -= upper + _weight(space, unit, pivot)
            lo = pivot_at + 1
    return lo - start


cdef Py_ssize_t _partition(const double* z, Py_ssize_t* candidates, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """Partition candidates[lo:hi] around the median of its first, middle and last entries.

    Return the pivot's final position. The tokens that come before the pivot end up on its left.
    """
    cdef Py_ssize_t mid = lo + (hi - lo) // 2, last = hi - 1, store = lo, j, pivot
    # Order the three samples, then park the median at the end.
    if _before(z, candidates[mid], candidates[lo]):
        _swap(candidates, mid, lo)
    if _before(z, candidates[last], candidates[lo]):
        _swap(candidates, last, lo)
    if _before(z, candidates[last], candidates[mid]):
        _swap(candidates, last, mid)
    _swap(candidates, mid, last)

    pivot = candidates[last]
    for j in range(lo, last):
        if _before(z, candidates[j], pivot):
            _swap(candidates, j, store)
            store += 1
    _swap(candidates, store, last)
    return store


cdef inline void _swap(Py_ssize_t* candidates, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    cdef Py_ssize_t token = candidates[a]
    candidates[a] = candidates[b]
    candidates[b] = token


cdef void _insertion_sort(const double* z, Py_ssize_t* candidates, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t j, k, token
    for j in range(lo + 1, hi):
        token = candidates[j]
        k = j
        while k > lo and _before(z, token, candidates[k - 1]):
            candidates[k] = candidates[k - 1]
            k -= 1
        candidates[k] = token


cdef void _heapsort(const double* z, Py_ssize_t* candidates, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """Sort candidates[lo:hi] in token order, in O(n log n) whatever the input."""
    cdef Py_ssize_t n = hi - lo, root, end
    # A heap whose root is the token that comes last, moved to the end one at a time.
    for root in range(n // 2 - 1, -1, -1):
        _sift_down(z, candidates + lo, root, n)
    for end in range(n - 1, 0, -1):
        _swap(candidates, lo, lo + end)
        _sift_down(z, candidates + lo, 0, end)


cdef void _sift_down(const double* z, Py_ssize_t* heap, Py_ssize_t root, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t child
    while True:
        child = 2 * root + 1
        if child >= size:
            return
        if child + 1 < size and _before(z, heap[child], heap[child + 1]):
            child += 1
        if not _before(z, heap[root], heap[child]):
            return
        _swap(heap, root, child)
        root = child


cdef inline int _bit_length(Py_ssize_t n) noexcept nogil:
    cdef int length = 0
    while n > 0:
        n >>= 1
        length += 1
    return length


cdef Py_ssize_t _compact_min_p(Workspace* space, Py_ssize_t lo, Py_ssize_t hi, double min_p) noexcept nogil:
    """Keep the candidates of candidates[lo:hi] whose weight is at least min_p at the front; return their count."""
    cdef Py_ssize_t store = lo, j, i
    for j in range(lo, hi):
        i = space.candidates[j]
        if space.w[i] >= min_p:
            space.candidates[store] = i
            store += 1
    return store - lo


cdef Py_ssize_t _compact_min_p_dense(Workspace* space, double min_p) noexcept nogil:
    """Fill candidates with every token whose weight is at least min_p; return their count."""
    cdef Py_ssize_t n = 0, i
    for i in range(space.n_tokens):
        if space.w[i] >= min_p:
            space.candidates[n] = i
            n += 1
    return n


cdef void _fill_mask(uint8_t* mask_row, Workspace* space, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    if n == space.n_tokens:
        memset(mask_row, 1, n)
    else:
        for j in range(n):
            mask_row[space.candidates[j]] = 1


cdef int _compare_indices(const void* a, const void* b) noexcept nogil:
    cdef Py_ssize_t left = (<const Py_ssize_t*>a)[0], right = (<const Py_ssize_t*>b)[0]
    return (left > right) - (left < right)


cdef Py_ssize_t _draw(Workspace* space, Py_ssize_t n, double u) noexcept nogil:
    """Return the first kept token, in ascending index order, whose running mass exceeds u * total."""
    cdef Py_ssize_t n_tokens = space.n_tokens, j
    cdef Py_ssize_t* kept = space.candidates
    cdef int64_t total = 0, running = 0, threshold
    if n == n_tokens:
        return _first_exceeding(space.q, n_tokens, _threshold(space.q, n_tokens, u))

    if n * _SORT_FRACTION <= n_tokens:
        # Few kept tokens: sorting their indices is cheaper than a pass over the vocabulary.
        qsort(kept, n, sizeof(Py_ssize_t), _compare_indices)
        for j in range(n):
            total += space.q[kept[j]]
        threshold = min(<int64_t>floor(u * <double>total), total - 1)
        for j in range(n):
            running += space.q[kept[j]]
            if running > threshold:
                return kept[j]
        return -1

    # Many kept tokens: lay their masses out by index, 0 for the others.
    memset(space.kept_masses, 0, n_tokens * sizeof(int64_t))
    for j in range(n):
        space.kept_masses[kept[j]] = space.q[kept[j]]
    return _first_exceeding(
        space.kept_masses, n_tokens, _threshold(space.kept_masses, n_tokens, u)
    )


cdef int64_t _threshold(const int64_t* masses, Py_ssize_t n, double u) noexcept nogil:
    """Return min(floor(u * total), total - 1) for the total of masses[:n]."""
    cdef int64_t total = 0
    cdef Py_ssize_t i
    for i in range(n):
        total += masses[i]
    return min(<int64_t>floor(u * <double>total), total - 1)


cdef Py_ssize_t _first_exceeding(const int64_t* masses, Py_ssize_t n, int64_t threshold) noexcept nogil:
    """Return the first index whose running sum of masses[:n] exceeds `threshold`.

    Whole blocks are summed first (a vectorized loop), and only the block where the running sum
    crosses the threshold is walked. Integer sums make this equal to a plain running sum.
    """
    cdef Py_ssize_t block, start, stop, i
    cdef int64_t running = 0, block_mass
    for block in range((n + _BLOCK - 1) // _BLOCK):
        start = block * _BLOCK
        stop = min(start + _BLOCK, n)
        block_mass = 0
        for i in range(start, stop):
            block_mass += masses[i]
        if running + block_mass > threshold:
            for i in range(start, stop):
                running += masses[i]
                if running > threshold:
                    return i
        running += block_mass
    return -1

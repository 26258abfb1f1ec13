"""k-nearest neighbours compiled with Cython and OpenMP.

The algorithm of the Numba backend, in C. Blocks of up to 256 queries (``query_block``) run in
parallel under ``prange``. A block walks the training rows in tiles of ``TRAIN_TILE`` with one
single-threaded BLAS GEMM per tile (SciPy's ``cython_blas``) into the thread's own buffer, and
each query keeps a bounded max-heap of its best ``k + EXTRA_CANDIDATES`` approximate scores
(``||y||^2 / 2 - x.y``, or ``-x^.y^`` for cosine; see ``fastml.knn._common``). The scan counts
GROUP scores at a time against the heap top in a branch-free loop that the compiler vectorizes,
and only a group with a hit reaches the scalar loop that updates the heap.

The candidates are then recomputed with the naive backend's reference formulas (float64, features
in order), heap-sorted by (distance, index) and certified by the bound of ``fastml.knn._common``;
an uncertified query is scanned exactly. The pragma below turns off the contraction of
``a * b + c`` into a fused multiply-add, which rounds once instead of twice: with it the
reference distances would differ from the naive backend's in the last bit.

Manhattan distances have no product form. Each tile is transposed to feature-major float64 and a
query adds ``|x_f - y_f|`` feature by feature across the tile, a loop the compiler vectorizes.

Cost: O(n_query n_train d) flops in BLAS, O(n_query n_train) vectorized comparisons and about
m ln(n_train / m) heap updates per query, m = k + EXTRA_CANDIDATES. Memory beyond the output:
O(threads block (TRAIN_TILE + m)), never n_query x n_train. Manhattan: O(n_query n_train d)
float64 operations and O(threads d tile) memory.

Inputs are validated by ``fastml.knn`` before they reach this module: C-contiguous, finite, one
dtype, matching shapes, 1 <= k <= n_train. That is what makes the disabled bounds checks safe.
"""

from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY, fabs, sqrt
from scipy.linalg.cython_blas cimport dgemm, sgemm

import numpy as np

from fastml._threads import blas_threads
from fastml.knn._common import (
    METRIC_CODES,
    manhattan_tile,
    n_candidates,
    query_block,
    row_norms,
    score_plan,
)
# The votes cost O(n_query k), nothing next to the search: compiling them would gain nothing.
from fastml.knn._numpy import class_scores, weighted_means  # noqa: F401

cdef extern from *:
    """
    #if defined(__clang__)
    #pragma STDC FP_CONTRACT OFF
    #elif defined(__GNUC__)
    #pragma GCC optimize ("fp-contract=off")
    #endif
    """

cdef enum:
    _TRAIN_TILE = 1024
    # Scores compared per vectorized count before the heap is touched.
    _GROUP = 64
    _SQEUCLIDEAN = 0
    _EUCLIDEAN = 1
    _COSINE = 2
    _MANHATTAN = 3

TRAIN_TILE = _TRAIN_TILE
GROUP = _GROUP


def kneighbors(X_train, X_query, k, metric, n_threads):
    """Return ``(distances, indices)`` of the k nearest training rows of every query row."""
    distances, indices, _ = search(X_train, X_query, k, metric, n_threads)
    return distances, indices


def search(X_train, X_query, k, metric, n_threads):
    """Return ``(distances, indices, n_full_scans)``; the last counts uncertified queries."""
    n_query = X_query.shape[0]
    distances = np.empty((n_query, k), dtype=np.float64)
    indices = np.empty((n_query, k), dtype=np.intp)

    # The GEMMs run inside parallel blocks, so BLAS itself must stay single-threaded. Threads
    # beyond the number of query blocks would only be woken up to wait.
    block = query_block(n_query)
    n_threads = max(1, min(n_threads, -(-n_query // block)))
    with blas_threads(1):
        if metric == "manhattan":
            tile = manhattan_tile(X_train.shape[1], TRAIN_TILE)
            _manhattan_blocks(X_train, X_query, block, tile, X_train.dtype == np.float32,
                              distances, indices, n_threads)
            n_full_scans = 0
        else:
            n_full_scans = _search_with_products(X_train, X_query, k, metric, block, distances, indices, n_threads)
    return distances.astype(X_train.dtype), indices, n_full_scans


def _search_with_products(X_train, X_query, k, metric, block, distances, indices, n_threads):
    train_norms = row_norms(X_train)
    query_norms = row_norms(X_query)
    plan = score_plan(X_train, X_query, metric, train_norms, query_norms)
    full_scan = np.zeros(X_query.shape[0], dtype=np.uint8)
    _product_blocks(
        plan.queries, plan.train, plan.half_norms, plan.query_points, plan.train_points,
        query_norms, train_norms, plan.base, plan.margin,
        plan.slope, plan.shrink, plan.sqrt_bound, plan.round_to_single, METRIC_CODES[metric],
        n_candidates(k, X_train.shape[0]), block, distances, indices, full_scan, n_threads,
    )
    return int(full_scan.sum())


# --------------------------------------------------------------------------------------------
# Heaps of (value, index) pairs: the larger value is the larger pair, then the larger index.


cdef inline bint _pair_less(double value, Py_ssize_t index, double other_value, Py_ssize_t other_index) noexcept nogil:
    return value < other_value or (value == other_value and index < other_index)


cdef void _sift_down(floating* values, Py_ssize_t* indices, Py_ssize_t root, Py_ssize_t size) noexcept nogil:
    """Restore the max-heap order of values[:size] below `root`."""
    cdef floating value = values[root]
    cdef Py_ssize_t index = indices[root], child

    while True:
        child = 2 * root + 1
        if child >= size:
            break
        if child + 1 < size and _pair_less(values[child], indices[child], values[child + 1], indices[child + 1]):
            child += 1
        if not _pair_less(value, index, values[child], indices[child]):
            break
        values[root] = values[child]
        indices[root] = indices[child]
        root = child
    values[root] = value
    indices[root] = index


cdef void _heap_sort(floating* values, Py_ssize_t* indices, Py_ssize_t size) noexcept nogil:
    """Sort values[:size] and indices[:size] ascending by (value, index)."""
    cdef Py_ssize_t root, end
    cdef floating value
    cdef Py_ssize_t index

    for root in range(size // 2 - 1, -1, -1):
        _sift_down(values, indices, root, size)
    for end in range(size - 1, 0, -1):
        value = values[0]
        values[0] = values[end]
        values[end] = value
        index = indices[0]
        indices[0] = indices[end]
        indices[end] = index
        _sift_down(values, indices, 0, end)


cdef void _push_row(
    const floating* scores,
    const floating* offsets,
    Py_ssize_t n,
    Py_ssize_t start,
    floating* heap_values,
    Py_ssize_t* heap_indices,
    Py_ssize_t size,
) noexcept nogil:
    """Offer the scores ``offsets[j] - scores[j]`` of rows start + j to a max-heap.

    Groups of GROUP scores are first counted against the heap top: the count has no branch, so
    the compiler vectorizes it, and only a group with a score below the top reaches the scalar
    loop that updates the heap.
    """
    cdef Py_ssize_t full = n // _GROUP * _GROUP, g, group, j
    cdef floating threshold = heap_values[0]
    cdef int below

    for g in range(n // _GROUP):
        group = g * _GROUP
        below = 0
        for j in range(group, group + _GROUP):
            below += (offsets[j] - scores[j]) < threshold
        if below > 0:
            _push_range(scores, offsets, group, group + _GROUP, start, heap_values, heap_indices, size)
            threshold = heap_values[0]
    _push_range(scores, offsets, full, n, start, heap_values, heap_indices, size)


cdef inline void _push_range(
    const floating* scores,
    const floating* offsets,
    Py_ssize_t first,
    Py_ssize_t stop,
    Py_ssize_t start,
    floating* heap_values,
    Py_ssize_t* heap_indices,
    Py_ssize_t size,
) noexcept nogil:
    # A new pair beats the top only if its score is strictly smaller: its index is larger than
    # every index in the heap, so on an equal score the earlier row stays (the tie rule).
    cdef Py_ssize_t j
    cdef floating score

    for j in range(first, stop):
        score = offsets[j] - scores[j]
        if score < heap_values[0]:
            heap_values[0] = score
            heap_indices[0] = start + j
            _sift_down(heap_values, heap_indices, 0, size)


# --------------------------------------------------------------------------------------------
# Reference distances: float64, features in order, exactly as the naive backend computes them.


cdef double _reference_distance(
    int metric, const floating* x, const floating* y, Py_ssize_t n, double x_norm, double y_norm
) noexcept nogil:
    cdef double total = 0.0, diff
    cdef Py_ssize_t f

    if metric == _MANHATTAN:
        for f in range(n):
            total += fabs(<double>x[f] - <double>y[f])
        return total
    if metric == _COSINE:
        if x_norm == 0.0 or y_norm == 0.0:
            return 1.0
        for f in range(n):
            total += <double>x[f] * <double>y[f]
        return min(2.0, max(0.0, 1.0 - total / (x_norm * y_norm)))
    for f in range(n):
        diff = <double>x[f] - <double>y[f]
        total += diff * diff
    if metric == _EUCLIDEAN:
        return sqrt(total)
    return total


cdef inline double _rounded(double value, bint single) noexcept nogil:
    """`value` rounded to float32 when `single`."""
    if single:
        return <double><float>value
    return value


# --------------------------------------------------------------------------------------------
# Euclidean, sqeuclidean and cosine: products per tile, then certified candidates.


def _product_blocks(
    const floating[:, ::1] queries,
    const floating[:, ::1] train,
    const floating[::1] half_norms,
    const floating[:, ::1] query_points,
    const floating[:, ::1] train_points,
    const double[::1] query_norms,
    const double[::1] train_norms,
    const double[::1] base,
    const double[::1] margin,
    double slope,
    double shrink,
    bint sqrt_bound,
    bint single,
    int metric,
    Py_ssize_t n_cand,
    Py_ssize_t block,
    double[:, ::1] distances,
    Py_ssize_t[:, ::1] indices,
    unsigned char[::1] full_scan,
    int n_threads,
):
    cdef Py_ssize_t n_query = queries.shape[0], n_blocks = (n_query + block - 1) // block
    cdef Py_ssize_t b, start, stop, i, thread
    cdef double bound
    dtype = np.asarray(queries).dtype
    # Buffers per thread: the products of a tile, the heaps of a block, one query's candidates.
    cdef floating[:, ::1] dots = np.empty((n_threads, block * _TRAIN_TILE), dtype=dtype)
    cdef floating[:, ::1] heap_values = np.empty((n_threads, block * n_cand), dtype=dtype)
    cdef Py_ssize_t[:, ::1] heap_indices = np.empty((n_threads, block * n_cand), dtype=np.intp)
    cdef double[:, ::1] exact = np.empty((n_threads, n_cand))
    cdef Py_ssize_t[:, ::1] exact_indices = np.empty((n_threads, n_cand), dtype=np.intp)

    for b in prange(n_blocks, nogil=True, schedule="dynamic", num_threads=n_threads):
        thread = threadid()
        start = b * block
        stop = min(start + block, n_query)
        _scan_tiles(queries, train, half_norms, start, stop, n_cand, &dots[thread, 0],
                    &heap_values[thread, 0], &heap_indices[thread, 0])
        for i in range(stop - start):
            # The lower bound on the exact distance of every row outside the candidates.
            bound = (base[start + i] + slope * heap_values[thread, i * n_cand] - margin[start + i]) * shrink
            if sqrt_bound:
                bound = sqrt(max(bound, 0.0))
            full_scan[start + i] = not _finish_query(
                start + i, &heap_indices[thread, i * n_cand], n_cand, bound, query_points,
                train_points, query_norms, train_norms, single, metric,
                &exact[thread, 0], &exact_indices[thread, 0], distances, indices,
            )


cdef void _scan_tiles(
    const floating[:, ::1] queries,
    const floating[:, ::1] train,
    const floating[::1] half_norms,
    Py_ssize_t start,
    Py_ssize_t stop,
    Py_ssize_t n_cand,
    floating* dots,
    floating* heap_values,
    Py_ssize_t* heap_indices,
) noexcept nogil:
    """Fill each query's heap with its best approximate scores over all training tiles."""
    cdef Py_ssize_t n_train = train.shape[0], n_rows = stop - start
    cdef Py_ssize_t tile, tile_start, width, i

    for i in range(n_rows * n_cand):
        heap_values[i] = INFINITY
        heap_indices[i] = n_train

    for tile in range((n_train + _TRAIN_TILE - 1) // _TRAIN_TILE):
        tile_start = tile * _TRAIN_TILE
        width = min(_TRAIN_TILE, n_train - tile_start)
        _products(&queries[start, 0], &train[tile_start, 0], dots, n_rows, width, queries.shape[1])
        for i in range(n_rows):
            _push_row(dots + i * width, &half_norms[tile_start], width, tile_start,
                      heap_values + i * n_cand, heap_indices + i * n_cand, n_cand)


cdef void _products(
    const floating* queries,
    const floating* train,
    floating* dots,
    Py_ssize_t n_rows,
    Py_ssize_t width,
    Py_ssize_t n_features,
) noexcept nogil:
    """dots (n_rows, width), row-major, = queries (n_rows, d) @ train (width, d).T, one GEMM.

    BLAS is column-major, where the row-major result is the width x n_rows matrix
    train @ queries.T: train (row-major width x d) is read transposed, queries as it is.
    """
    cdef char transa = b"T", transb = b"N"
    cdef int m = <int>width, n = <int>n_rows, k = <int>n_features
    cdef floating alpha = 1.0, beta = 0.0

    if floating is float:
        sgemm(&transa, &transb, &m, &n, &k, &alpha, <float*>train, &k,
              <float*>queries, &k, &beta, dots, &m)
    else:
        dgemm(&transa, &transb, &m, &n, &k, &alpha, <double*>train, &k,
              <double*>queries, &k, &beta, dots, &m)


cdef bint _finish_query(
    Py_ssize_t query,
    const Py_ssize_t* heap_indices,
    Py_ssize_t n_cand,
    double bound,
    const floating[:, ::1] query_points,
    const floating[:, ::1] train_points,
    const double[::1] query_norms,
    const double[::1] train_norms,
    bint single,
    int metric,
    double* exact,
    Py_ssize_t* exact_indices,
    double[:, ::1] distances,
    Py_ssize_t[:, ::1] indices,
) noexcept nogil:
    """Recompute, sort and certify one query's candidates, and write its k nearest rows.

    `bound` is a lower bound on the exact distance of every row outside the candidates.
    Returns False if it does not certify them: the k nearest rows then come from an exact scan
    of every training row.
    """
    cdef Py_ssize_t k = distances.shape[1], n_features = query_points.shape[1], c, j
    cdef bint certified

    for c in range(n_cand):
        j = heap_indices[c]
        exact[c] = _rounded(_reference_distance(
            metric, &query_points[query, 0], &train_points[j, 0], n_features,
            query_norms[query], train_norms[j]), single)
        exact_indices[c] = j
    _heap_sort(exact, exact_indices, n_cand)

    certified = n_cand == train_points.shape[0] or _rounded(bound, single) > exact[k - 1]
    if not certified:
        _exact_scan(query, query_points, train_points, query_norms, train_norms, metric, single,
                    exact, exact_indices, k)

    for c in range(k):
        distances[query, c] = exact[c]
        indices[query, c] = exact_indices[c]
    return certified


cdef void _exact_scan(
    Py_ssize_t query,
    const floating[:, ::1] query_points,
    const floating[:, ::1] train_points,
    const double[::1] query_norms,
    const double[::1] train_norms,
    int metric,
    bint single,
    double* values,
    Py_ssize_t* indices,
    Py_ssize_t k,
) noexcept nogil:
    """Write the exact k nearest rows of `query`, sorted, into values[:k] and indices[:k]."""
    cdef Py_ssize_t j, root, n_features = query_points.shape[1]
    cdef double value

    for j in range(train_points.shape[0]):
        value = _rounded(_reference_distance(
            metric, &query_points[query, 0], &train_points[j, 0], n_features,
            query_norms[query], train_norms[j]), single)
        if j < k:
            values[j] = value
            indices[j] = j
            if j == k - 1:
                for root in range(k // 2 - 1, -1, -1):
                    _sift_down(values, indices, root, k)
        elif value < values[0]:
            values[0] = value
            indices[0] = j
            _sift_down(values, indices, 0, k)
    _heap_sort(values, indices, k)


# --------------------------------------------------------------------------------------------
# Manhattan: exact float64 sums over feature-major tiles.


def _manhattan_blocks(
    const floating[:, ::1] X_train,
    const floating[:, ::1] X_query,
    Py_ssize_t block,
    Py_ssize_t tile,
    bint single,
    double[:, ::1] distances,
    Py_ssize_t[:, ::1] indices,
    int n_threads,
):
    cdef Py_ssize_t n_query = X_query.shape[0], n_features = X_query.shape[1], k = distances.shape[1]
    cdef Py_ssize_t n_blocks = (n_query + block - 1) // block, b, thread
    # Buffers per thread: a transposed tile, one query's sums over it, the heaps of a block.
    cdef double[:, ::1] transposed = np.empty((n_threads, n_features * tile))
    cdef double[:, ::1] sums = np.empty((n_threads, tile))
    cdef double[:, ::1] heap_values = np.empty((n_threads, block * k))
    cdef Py_ssize_t[:, ::1] heap_indices = np.empty((n_threads, block * k), dtype=np.intp)

    for b in prange(n_blocks, nogil=True, schedule="static", num_threads=n_threads):
        thread = threadid()
        _manhattan_block(X_train, X_query, b * block, min((b + 1) * block, n_query),
                         tile, single, &transposed[thread, 0], &sums[thread, 0],
                         &heap_values[thread, 0], &heap_indices[thread, 0], distances, indices)


cdef void _manhattan_block(
    const floating[:, ::1] X_train,
    const floating[:, ::1] X_query,
    Py_ssize_t start,
    Py_ssize_t stop,
    Py_ssize_t tile,
    bint single,
    double* transposed,
    double* sums,
    double* heap_values,
    Py_ssize_t* heap_indices,
    double[:, ::1] distances,
    Py_ssize_t[:, ::1] indices,
) noexcept nogil:
    cdef Py_ssize_t n_train = X_train.shape[0], n_features = X_train.shape[1], k = distances.shape[1]
    cdef Py_ssize_t t, tile_start, width, r, f, i, c

    for i in range((stop - start) * k):
        heap_values[i] = INFINITY
        heap_indices[i] = n_train

    for t in range((n_train + tile - 1) // tile):
        tile_start = t * tile
        width = min(tile, n_train - tile_start)
        # (d, width) feature-major, so that one feature of the whole tile is contiguous.
        for r in range(width):
            for f in range(n_features):
                transposed[f * width + r] = X_train[tile_start + r, f]
        for i in range(stop - start):
            _manhattan_row(&X_query[start + i, 0], transposed, n_features, width, sums, single)
            _push_exact(sums, width, tile_start, heap_values + i * k, heap_indices + i * k, k)

    for i in range(stop - start):
        _heap_sort(heap_values + i * k, heap_indices + i * k, k)
        for c in range(k):
            distances[start + i, c] = heap_values[i * k + c]
            indices[start + i, c] = heap_indices[i * k + c]


cdef void _manhattan_row(
    const floating* x,
    const double* transposed,
    Py_ssize_t n_features,
    Py_ssize_t width,
    double* sums,
    bint single,
) noexcept nogil:
    """sums[:width] = rounded sum over f of |x_f - y_f|, added in feature order for each y."""
    cdef Py_ssize_t f, r
    cdef double value
    cdef const double* row

    for r in range(width):
        sums[r] = 0.0
    for f in range(n_features):
        value = x[f]
        row = transposed + f * width
        for r in range(width):
            sums[r] += fabs(value - row[r])
    if single:
        for r in range(width):
            sums[r] = <double><float>sums[r]


cdef void _push_exact(
    const double* values,
    Py_ssize_t width,
    Py_ssize_t start,
    double* heap_values,
    Py_ssize_t* heap_indices,
    Py_ssize_t size,
) noexcept nogil:
    """Offer exact distances of rows start:start+width (ascending index) to a max-heap."""
    cdef Py_ssize_t r
    for r in range(width):
        if values[r] < heap_values[0]:
            heap_values[0] = values[r]
            heap_indices[0] = start + r
            _sift_down(heap_values, heap_indices, 0, size)

"""k-means compiled with Cython and OpenMP.

The Numba backend's algorithm with the same fixed row blocks. Blocks of rows run in parallel
under ``prange``. Each tile of up to 4096 rows gets its dot products with the centers from one
single-threaded BLAS GEMM (SciPy's ``cython_blas``) into the thread's own buffer. Each block adds
its samples to its own float64 sums, reduced afterwards in block order, so the result does not
depend on the thread count.

Cost per iteration: O(n k d) flops in BLAS plus O(n d); extra memory O(threads 2^18 + B k d)
with B <= 16 blocks. k-means++ scores its candidates exactly in float64 without storing a
distance matrix: O(n d (3 + ln k)) per step.

Inputs are validated by ``fastml.kmeans`` before they reach this module: C-contiguous, finite,
matching dtypes and shapes. That is what makes the disabled bounds checks safe.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY
from scipy.linalg.cython_blas cimport dgemm, sgemm

import numpy as np

from fastml._threads import blas_threads
from fastml.kmeans._common import first_within_tolerance, row_blocks
from fastml.kmeans._lloyd import lloyd as _lloyd

cdef enum:
    # Rows per GEMM tile, independent of the 256-row alignment of the blocks. Fewer, larger
    # GEMM calls measured faster with 2 threads: at n=1M, d=16, k=16 an iteration took 17 ms
    # with 256-row tiles and 11 ms with 4096 (about 1.25x and 2x the 1-thread speed), while
    # n=100k, d=32, k=64 stayed near 3.8 ms. Capped so that a tile of scores stays near 1 MiB.
    _CHUNK = 4096
    _MIN_CHUNK = 256
    _TILE_ENTRIES = 262144


def lloyd(X, sample_weight, centers, max_iter, tol, n_threads):
    """Run Lloyd's algorithm from `centers`; return ``(centers, labels, inertia, n_iter)``."""
    # The GEMMs run inside parallel blocks, so BLAS itself must stay single-threaded.
    with blas_threads(1):
        return _lloyd(accumulate, _assign, X, sample_weight, centers, max_iter, tol, n_threads)


def assign(X, sample_weight, centers, n_threads):
    """Return ``(labels, inertia)`` of `X` against fixed `centers`."""
    with blas_threads(1):
        return _assign(X, sample_weight, centers, n_threads)


def kmeans_plusplus(X, sample_weight, n_clusters, uniforms, n_threads):
    """Return the sample indices of `n_clusters` greedy k-means++ centers (see the naive backend)."""
    weights = sample_weight.astype(np.float64)
    bounds = row_blocks(X.shape[0])
    chosen = np.empty(n_clusters, dtype=np.intp)
    closest = np.full(X.shape[0], np.inf)

    chosen[0] = _draw(weights, uniforms[0, 0])
    _update_closest(X, closest, chosen[0], n_threads)
    for step in range(1, n_clusters):
        potential = weights * closest
        if potential.sum() == 0:
            potential = weights
        candidates = np.array([_draw(potential, u) for u in uniforms[step]], dtype=np.intp)

        potentials = _candidate_potentials(X, weights, closest, candidates, bounds, n_threads)
        chosen[step] = candidates[first_within_tolerance(potentials.tolist())]
        _update_closest(X, closest, chosen[step], n_threads)
    return chosen


def _draw(const double[::1] weights, double u):
    """First index whose cumulative weight exceeds u * total; never an index of zero weight."""
    cdef Py_ssize_t n = weights.shape[0], i
    cdef double total = 0.0, running = 0.0, target

    for i in range(n):
        total += weights[i]
    target = u * total
    for i in range(n):
        running += weights[i]
        if running > target:
            return i
    # Rounding pushed the target up to the total: take the last positive weight.
    i = n - 1
    while weights[i] == 0:
        i -= 1
    return i


def accumulate(
    const floating[:, ::1] X,
    const floating[::1] sample_weight,
    const floating[:, ::1] centers,
    int[::1] labels,
    double[:, ::1] sums,
    double[::1] weights,
    int n_threads,
):
    """Assign each sample to its nearest center; fill per-cluster weighted sums and weights."""
    cdef Py_ssize_t n_features = X.shape[1], n_clusters = centers.shape[0]
    cdef Py_ssize_t[::1] bounds = row_blocks(X.shape[0])
    cdef Py_ssize_t n_blocks = bounds.shape[0] - 1, b
    cdef double[:, :, ::1] block_sums = np.zeros((n_blocks, n_clusters, n_features))
    cdef double[:, ::1] block_weights = np.zeros((n_blocks, n_clusters))
    cdef floating[::1] half_sq = _half_squared_norms(centers)
    cdef Py_ssize_t tile_rows = _tile_rows(n_clusters)
    cdef floating[:, ::1] dots = np.empty((n_threads, tile_rows * n_clusters), dtype=np.asarray(X).dtype)
    cdef floating[:, ::1] best = np.empty((n_threads, tile_rows), dtype=np.asarray(X).dtype)

    for b in prange(n_blocks, nogil=True, schedule="static", num_threads=n_threads):
        _accumulate_block(
            X, sample_weight, centers, half_sq, bounds[b], bounds[b + 1],
            labels, block_sums[b], block_weights[b], tile_rows, &dots[threadid(), 0],
            &best[threadid(), 0],
        )

    # Reduce in block order, so the sums do not depend on which thread ran which block.
    sums[...] = 0.0
    weights[...] = 0.0
    for b in range(n_blocks):
        _add_into(block_sums[b], sums)
        _add_row_into(block_weights[b], weights)


def _assign(
    const floating[:, ::1] X,
    const floating[::1] sample_weight,
    const floating[:, ::1] centers,
    int n_threads,
):
    cdef Py_ssize_t n_clusters = centers.shape[0]
    cdef Py_ssize_t[::1] bounds = row_blocks(X.shape[0])
    cdef Py_ssize_t n_blocks = bounds.shape[0] - 1, b
    cdef double[::1] block_inertia = np.zeros(n_blocks)
    cdef int[::1] labels = np.empty(X.shape[0], dtype=np.int32)
    cdef floating[::1] half_sq = _half_squared_norms(centers)
    cdef Py_ssize_t tile_rows = _tile_rows(n_clusters)
    cdef floating[:, ::1] dots = np.empty((n_threads, tile_rows * n_clusters), dtype=np.asarray(X).dtype)
    cdef floating[:, ::1] best = np.empty((n_threads, tile_rows), dtype=np.asarray(X).dtype)

    for b in prange(n_blocks, nogil=True, schedule="static", num_threads=n_threads):
        block_inertia[b] = _assign_block(
            X, sample_weight, centers, half_sq, bounds[b], bounds[b + 1],
            labels, tile_rows, &dots[threadid(), 0], &best[threadid(), 0],
        )
    return np.asarray(labels), float(np.sum(block_inertia))


cdef void _accumulate_block(
    const floating[:, ::1] X,
    const floating[::1] sample_weight,
    const floating[:, ::1] centers,
    const floating[::1] half_sq,
    Py_ssize_t block_start,
    Py_ssize_t block_stop,
    int[::1] labels,
    double[:, ::1] sums,
    double[::1] weights,
    Py_ssize_t tile_rows,
    floating* dots,
    floating* best,
) noexcept nogil:
    cdef Py_ssize_t tile, start, stop, row, f
    cdef int label
    cdef double w

    for tile in range((block_stop - block_start + tile_rows - 1) // tile_rows):
        start = block_start + tile * tile_rows
        stop = min(start + tile_rows, block_stop)
        _label_tile(
            &X[start, 0], &centers[0, 0], &half_sq[0], stop - start, centers.shape[0],
            X.shape[1], &labels[start], dots, best,
        )

        for row in range(start, stop):
            label = labels[row]
            w = sample_weight[row]
            weights[label] += w
            for f in range(X.shape[1]):
                sums[label, f] += w * X[row, f]


cdef double _assign_block(
    const floating[:, ::1] X,
    const floating[::1] sample_weight,
    const floating[:, ::1] centers,
    const floating[::1] half_sq,
    Py_ssize_t block_start,
    Py_ssize_t block_stop,
    int[::1] labels,
    Py_ssize_t tile_rows,
    floating* dots,
    floating* best,
) noexcept nogil:
    cdef Py_ssize_t tile, start, stop, row
    cdef double inertia = 0.0

    for tile in range((block_stop - block_start + tile_rows - 1) // tile_rows):
        start = block_start + tile * tile_rows
        stop = min(start + tile_rows, block_stop)
        _label_tile(
            &X[start, 0], &centers[0, 0], &half_sq[0], stop - start, centers.shape[0],
            X.shape[1], &labels[start], dots, best,
        )

        # The inertia uses the exact distance, free of the cancellation in the scores.
        for row in range(start, stop):
            inertia += sample_weight[row] * _squared_distance(
                &X[row, 0], &centers[labels[row], 0], X.shape[1]
            )
    return inertia


cdef void _label_tile(
    const floating* X,
    const floating* centers,
    const floating* half_sq,
    Py_ssize_t n_rows,
    Py_ssize_t n_clusters,
    Py_ssize_t n_features,
    int* tile_labels,
    floating* dots,
    floating* best,
) noexcept nogil:
    """Write the nearest center of the n_rows samples starting at X into tile_labels.

    The nearest center minimizes ||c||^2/2 - x.c (||x||^2 is the same for every center, and
    halving is exact). ``dots`` holds the k x n_rows products center-major, so that the scan over
    centers compares whole runs of samples at once, which the compiler vectorizes. Raw pointers,
    not memoryviews: passing a memoryview updates its shared reference count atomically, and at
    one call per tile the two threads contended on it (2 threads were only 1.25x faster than 1
    at n=1M, d=16, k=16).
    """
    cdef Py_ssize_t i, j
    cdef const floating* center_dots
    cdef floating score, half
    cdef int closer

    _center_major_dots(X, centers, dots, n_rows, n_clusters, n_features)

    for i in range(n_rows):
        best[i] = half_sq[0] - dots[i]
        tile_labels[i] = 0
    # Strict < over ascending j: a tie keeps the lower center index. Both updates are arithmetic
    # (a min and a multiply by the 0/1 comparison) so that every store is unconditional: written
    # as selects, GCC 12 turned them into masked stores that cost 3x more.
    for j in range(1, n_clusters):
        center_dots = dots + j * n_rows
        half = half_sq[j]
        for i in range(n_rows):
            score = half - center_dots[i]
            closer = score < best[i]
            tile_labels[i] += closer * (<int>j - tile_labels[i])
            best[i] = min(score, best[i])


cdef void _center_major_dots(
    const floating* X,
    const floating* centers,
    floating* dots,
    Py_ssize_t n_rows,
    Py_ssize_t n_clusters,
    Py_ssize_t n_features,
) noexcept nogil:
    """dots (k, n_rows), row-major, = centers (k, d) @ X.T, with one single-threaded GEMM.

    BLAS is column-major, where the row-major result is the n_rows x k matrix X @ centers.T:
    X (row-major n_rows x d) is read transposed, centers (row-major k x d) as it is.
    """
    cdef char transa = b"T", transb = b"N"
    cdef int m = <int>n_rows, n = <int>n_clusters, k = <int>n_features
    cdef floating alpha = 1.0, beta = 0.0

    if floating is float:
        sgemm(&transa, &transb, &m, &n, &k, &alpha, <float*>X, &k,
              <float*>centers, &k, &beta, dots, &m)
    else:
        dgemm(&transa, &transb, &m, &n, &k, &alpha, <double*>X, &k,
              <double*>centers, &k, &beta, dots, &m)


cdef inline double _squared_distance(const floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    cdef double total = 0.0, diff
    cdef Py_ssize_t f
    for f in range(n):
        diff = <double>a[f] - <double>b[f]
        total += diff * diff
    return total


def _tile_rows(n_clusters):
    """Rows per GEMM tile: _CHUNK, fewer when k is large, never below _MIN_CHUNK."""
    return max(_MIN_CHUNK, min(_CHUNK, _TILE_ENTRIES // n_clusters))


def _half_squared_norms(const floating[:, ::1] centers):
    """||c||^2 / 2 of each center, in the dtype of the centers (as the BLAS products are)."""
    out = np.zeros(centers.shape[0], dtype=np.asarray(centers).dtype)
    cdef floating[::1] norms = out
    cdef Py_ssize_t j, f
    for j in range(centers.shape[0]):
        for f in range(centers.shape[1]):
            norms[j] += centers[j, f] * centers[j, f]
        norms[j] *= 0.5
    return out


cdef void _add_into(const double[:, ::1] source, double[:, ::1] target) noexcept:
    cdef Py_ssize_t i, j
    for i in range(source.shape[0]):
        for j in range(source.shape[1]):
            target[i, j] += source[i, j]


cdef void _add_row_into(const double[::1] source, double[::1] target) noexcept:
    cdef Py_ssize_t i
    for i in range(source.shape[0]):
        target[i] += source[i]


def _update_closest(const floating[:, ::1] X, double[::1] closest, Py_ssize_t center, int n_threads):
    cdef Py_ssize_t row
    cdef double distance
    for row in prange(X.shape[0], nogil=True, schedule="static", num_threads=n_threads):
        distance = _squared_distance(&X[row, 0], &X[center, 0], X.shape[1])
        if distance < closest[row]:
            closest[row] = distance


def _candidate_potentials(
    const floating[:, ::1] X,
    const double[::1] weights,
    const double[::1] closest,
    const Py_ssize_t[::1] candidates,
    const Py_ssize_t[::1] bounds,
    int n_threads,
):
    """Potential sum_i w_i min(closest_i, ||x_i - x_c||^2) of each candidate c."""
    cdef Py_ssize_t n_blocks = bounds.shape[0] - 1, n_candidates = candidates.shape[0]
    cdef double[:, ::1] partial = np.zeros((n_blocks, n_candidates))
    cdef Py_ssize_t b, t, row
    cdef double distance, total

    for b in prange(n_blocks, nogil=True, schedule="static", num_threads=n_threads):
        for t in range(n_candidates):
            total = 0.0
            for row in range(bounds[b], bounds[b + 1]):
                distance = _squared_distance(&X[row, 0], &X[candidates[t], 0], X.shape[1])
                total = total + weights[row] * min(closest[row], distance)
            partial[b, t] = total

    # Summed in block order: the same bits for any thread count, and the same as Numba's.
    potentials = np.zeros(n_candidates)
    for b in range(n_blocks):
        potentials += partial[b]
    return potentials

"""k-means compiled with Numba.

The assignment step works on a fixed number of row blocks (``row_blocks``), processed in
parallel with ``prange``. Inside a block, each tile of ``CHUNK`` rows gets its dot products with
the centers from one single-threaded BLAS product (``np.dot``) into a k x CHUNK buffer owned by
the block, then a vectorized scan picks the center minimizing ||c||^2/2 - x.c. Each sample's
weighted coordinates are added to the block's own float64 sums, so no two threads write the same
memory, and the block sums are reduced in block order. Because the blocks depend on n only, never
on the thread count, the result is bitwise the same for any number of threads.

Cost per iteration: O(n k d) flops in BLAS plus O(n d); extra memory O(B (CHUNK k + k d)) for
B <= 16 blocks. k-means++ scores its candidates exactly in float64, in parallel over the same
blocks, without storing a distance matrix: O(n d (3 + ln k)) per step.
"""

import numpy as np
from numba import njit, prange

from fastml._threads import blas_threads, numba_threads
from fastml.kmeans._common import CHUNK, TIE_RTOL, row_blocks
from fastml.kmeans._lloyd import lloyd as _lloyd


def lloyd(X, sample_weight, centers, max_iter, tol, n_threads):
    """Run Lloyd's algorithm from `centers`; return ``(centers, labels, inertia, n_iter)``."""
    # The BLAS calls run inside parallel blocks, so BLAS itself must stay single-threaded.
    with blas_threads(1), numba_threads(n_threads):
        return _lloyd(accumulate, _assign, X, sample_weight, centers, max_iter, tol, n_threads)


def accumulate(X, sample_weight, centers, labels, sums, weights, n_threads):
    """Assign each sample to its nearest center; fill per-cluster weighted sums and weights."""
    bounds = row_blocks(X.shape[0])
    block_sums = np.empty((len(bounds) - 1,) + sums.shape, dtype=np.float64)
    block_weights = np.empty((len(bounds) - 1, weights.shape[0]), dtype=np.float64)
    _accumulate_blocks(X, sample_weight, centers, bounds, labels, block_sums, block_weights)
    _reduce_blocks(block_sums, block_weights, sums, weights)


def assign(X, sample_weight, centers, n_threads):
    """Return ``(labels, inertia)`` of `X` against fixed `centers`."""
    with blas_threads(1), numba_threads(n_threads):
        return _assign(X, sample_weight, centers, n_threads)


def _assign(X, sample_weight, centers, n_threads):
    bounds = row_blocks(X.shape[0])
    labels = np.empty(X.shape[0], dtype=np.int32)
    block_inertia = np.empty(len(bounds) - 1, dtype=np.float64)
    _assign_blocks(X, sample_weight, centers, bounds, labels, block_inertia)
    return labels, float(block_inertia.sum())


def kmeans_plusplus(X, sample_weight, n_clusters, uniforms, n_threads):
    """Return the sample indices of `n_clusters` greedy k-means++ centers (see the naive backend)."""
    weights = sample_weight.astype(np.float64)
    with numba_threads(n_threads):
        return _kmeans_plusplus(X, weights, n_clusters, uniforms, row_blocks(X.shape[0]))


@njit(nogil=True, cache=True)
def _half_squared_norms(centers):
    n_clusters, n_features = centers.shape
    out = np.zeros(n_clusters, dtype=centers.dtype)
    for j in range(n_clusters):
        for f in range(n_features):
            out[j] += centers[j, f] * centers[j, f]
    return out * 0.5


@njit(nogil=True, cache=True)
def _label_tile(X, centers, half_sq, start, stop, dots, best, labels):
    """Write the nearest center of rows start:stop into ``labels[start:stop]``.

    The nearest center minimizes ||c||^2/2 - x.c (||x||^2 is the same for every center, and
    halving is exact). The scores are computed center-major, as ``dots`` (k, rows) =
    centers @ X.T, so that the scan over centers runs along contiguous samples instead of an
    argmin along each short row.
    """
    n_rows = stop - start
    n_clusters = centers.shape[0]
    tile = dots[: n_clusters * n_rows].reshape((n_clusters, n_rows))
    np.dot(centers, X[start:stop].T, tile)

    for i in range(n_rows):
        best[i] = half_sq[0] - tile[0, i]
        labels[start + i] = 0
    # Strict < over ascending j: a tie keeps the lower center index.
    for j in range(1, n_clusters):
        for i in range(n_rows):
            score = half_sq[j] - tile[j, i]
            if score < best[i]:
                best[i] = score
                labels[start + i] = j


@njit(parallel=True, nogil=True, cache=True)
def _accumulate_blocks(X, sample_weight, centers, bounds, labels, block_sums, block_weights):
    n_clusters, n_features = centers.shape
    half_sq = _half_squared_norms(centers)

    for b in prange(len(bounds) - 1):
        dots = np.empty(CHUNK * n_clusters, dtype=X.dtype)
        best = np.empty(CHUNK, dtype=X.dtype)
        sums = block_sums[b]
        weights = block_weights[b]
        sums[:] = 0.0
        weights[:] = 0.0

        for start in range(bounds[b], bounds[b + 1], CHUNK):
            stop = min(start + CHUNK, bounds[b + 1])
            _label_tile(X, centers, half_sq, start, stop, dots, best, labels)
            for row in range(start, stop):
                label = labels[row]
                w = np.float64(sample_weight[row])
                weights[label] += w
                for f in range(n_features):
                    sums[label, f] += w * X[row, f]


@njit(nogil=True, cache=True)
def _reduce_blocks(block_sums, block_weights, sums, weights):
    sums[:] = 0.0
    weights[:] = 0.0
    for b in range(block_sums.shape[0]):
        sums += block_sums[b]
        weights += block_weights[b]


@njit(parallel=True, nogil=True, cache=True)
def _assign_blocks(X, sample_weight, centers, bounds, labels, block_inertia):
    n_clusters = centers.shape[0]
    half_sq = _half_squared_norms(centers)

    for b in prange(len(bounds) - 1):
        dots = np.empty(CHUNK * n_clusters, dtype=X.dtype)
        best = np.empty(CHUNK, dtype=X.dtype)
        inertia = 0.0
        for start in range(bounds[b], bounds[b + 1], CHUNK):
            stop = min(start + CHUNK, bounds[b + 1])
            _label_tile(X, centers, half_sq, start, stop, dots, best, labels)
            # The inertia uses the exact distance, free of the cancellation in the scores.
            for row in range(start, stop):
                inertia += sample_weight[row] * _squared_distance(X, row, centers, labels[row])
        block_inertia[b] = inertia


@njit(nogil=True, cache=True)
def _squared_distance(X, row, centers, j):
    total = 0.0
    for f in range(X.shape[1]):
        diff = np.float64(X[row, f]) - np.float64(centers[j, f])
        total += diff * diff
    return total


@njit(nogil=True, cache=True)
def _draw(weights, u):
    """First index whose cumulative weight exceeds u * total; never an index of zero weight."""
    n = weights.shape[0]
    cumulative = np.cumsum(weights)
    target = u * cumulative[n - 1]
    index = np.searchsorted(cumulative, target, side="right")
    if index == n:
        index = n - 1
        while weights[index] == 0:
            index -= 1
    return index


@njit(nogil=True, cache=True)
def _first_within_tolerance(values):
    """Return the index of the first value within TIE_RTOL of the minimum (see _common)."""
    threshold = values.min() * (1 + TIE_RTOL)
    for i in range(values.shape[0]):
        if values[i] <= threshold:
            return i
    return 0


@njit(parallel=True, nogil=True, cache=True)
def _candidate_potentials(X, weights, closest, candidates, bounds):
    """Potential sum_i w_i min(closest_i, ||x_i - x_c||^2) of each candidate c."""
    n_blocks = len(bounds) - 1
    partial = np.zeros((n_blocks, candidates.shape[0]), dtype=np.float64)
    for b in prange(n_blocks):
        for t in range(candidates.shape[0]):
            total = 0.0
            for row in range(bounds[b], bounds[b + 1]):
                distance = _squared_distance(X, row, X, candidates[t])
                total += weights[row] * min(closest[row], distance)
            partial[b, t] = total

    potentials = np.zeros(candidates.shape[0], dtype=np.float64)
    for b in range(n_blocks):
        potentials += partial[b]
    return potentials


@njit(parallel=True, nogil=True, cache=True)
def _update_closest(X, closest, center):
    for row in prange(X.shape[0]):
        closest[row] = min(closest[row], _squared_distance(X, row, X, center))


@njit(nogil=True, cache=True)
def _kmeans_plusplus(X, weights, n_clusters, uniforms, bounds):
    chosen = np.empty(n_clusters, dtype=np.intp)
    chosen[0] = _draw(weights, uniforms[0, 0])
    closest = np.full(X.shape[0], np.inf)
    _update_closest(X, closest, chosen[0])

    candidates = np.empty(uniforms.shape[1], dtype=np.intp)
    for step in range(1, n_clusters):
        potential = weights * closest
        if potential.sum() == 0:
            potential = weights
        for t in range(uniforms.shape[1]):
            candidates[t] = _draw(potential, uniforms[step, t])

        potentials = _candidate_potentials(X, weights, closest, candidates, bounds)
        chosen[step] = candidates[_first_within_tolerance(potentials)]
        _update_closest(X, closest, chosen[step])
    return chosen


"""k-means vectorized with NumPy.

The assignment step is a matrix product per tile of rows: for a sample x the nearest center
minimizes ||c||^2 - 2 x.c, because ||x||^2 is the same for every center. Tiles of ``CHUNK`` rows
keep the score matrix at CHUNK x k however large n is; BLAS runs the products on
``n_threads`` threads. Cluster sums are accumulated in float64 with one ``bincount`` per tile.

Cost per iteration: O(n k d) flops in BLAS plus O(n d) to accumulate; extra memory O(CHUNK (k + d)).
k-means++ computes exact squared distances in float64, tile by tile: O(n d (2 + ln k)) per step.
"""

import numpy as np

from fastml._threads import blas_threads
from fastml.kmeans._common import first_within_tolerance
from fastml.kmeans._lloyd import lloyd as _lloyd

CHUNK = 2048


def lloyd(X, sample_weight, centers, max_iter, tol, n_threads):
    """Run Lloyd's algorithm from `centers`; return ``(centers, labels, inertia, n_iter)``."""
    with blas_threads(n_threads):
        return _lloyd(accumulate, assign, X, sample_weight, centers, max_iter, tol, n_threads)


def accumulate(X, sample_weight, centers, labels, sums, weights, n_threads):
    """Assign each sample to its nearest center; fill per-cluster weighted sums and weights."""
    n_clusters, n_features = centers.shape
    centers_sq = np.einsum("ij,ij->i", centers, centers)
    sums.fill(0.0)
    weights.fill(0.0)

    for start in range(0, X.shape[0], CHUNK):
        rows = slice(start, start + CHUNK)
        tile_labels = _nearest(X[rows], centers, centers_sq)
        labels[rows] = tile_labels

        w = sample_weight[rows].astype(np.float64)
        weights += np.bincount(tile_labels, weights=w, minlength=n_clusters)

        # One bincount for all features: bin (label, feature) of a flattened (k, d) array.
        bins = (tile_labels[:, None] * n_features + np.arange(n_features)).ravel()
        weighted = (X[rows] * w[:, None]).ravel()
        sums += np.bincount(bins, weights=weighted, minlength=sums.size).reshape(sums.shape)


def assign(X, sample_weight, centers, n_threads):
    """Return ``(labels, inertia)`` of `X` against fixed `centers`."""
    centers_sq = np.einsum("ij,ij->i", centers, centers)
    labels = np.empty(X.shape[0], dtype=np.int32)
    inertia = 0.0
    with blas_threads(n_threads):
        for start in range(0, X.shape[0], CHUNK):
            rows = slice(start, start + CHUNK)
            labels[rows] = _nearest(X[rows], centers, centers_sq)
            distances = _squared_distances(X[rows], centers[labels[rows]])
            inertia += float(distances @ sample_weight[rows].astype(np.float64))
    return labels, inertia


def kmeans_plusplus(X, sample_weight, n_clusters, uniforms, n_threads):
    """Return the sample indices of `n_clusters` greedy k-means++ centers (see the naive backend)."""
    weights = sample_weight.astype(np.float64)
    chosen = [_draw(weights, uniforms[0, 0])]
    closest = _distances_to(X, X[chosen[0]])

    for step in range(1, n_clusters):
        potential = weights * closest
        if potential.sum() == 0:
            potential = weights
        candidates = [_draw(potential, u) for u in uniforms[step]]

        trials = [np.minimum(closest, _distances_to(X, X[c])) for c in candidates]
        best = first_within_tolerance([float(weights @ distances) for distances in trials])

        chosen.append(candidates[best])
        closest = trials[best]
    return np.array(chosen, dtype=np.intp)


def _nearest(X, centers, centers_sq):
    # (chunk, k) scores; argmin returns the first minimum, so ties go to the lower index.
    scores = centers_sq - 2 * (X @ centers.T)
    return np.argmin(scores, axis=1).astype(np.int32)


def _squared_distances(A, B):
    """Row-wise ||a - b||^2 in float64."""
    diff = A.astype(np.float64) - B.astype(np.float64)
    return np.einsum("ij,ij->i", diff, diff)


def _distances_to(X, point):
    """Squared distance in float64 from every row of `X` to `point`, tile by tile."""
    point = point.astype(np.float64)
    out = np.empty(X.shape[0], dtype=np.float64)
    for start in range(0, X.shape[0], CHUNK):
        diff = X[start : start + CHUNK].astype(np.float64) - point
        out[start : start + CHUNK] = np.einsum("ij,ij->i", diff, diff)
    return out


def _draw(weights, u):
    """Return the first index whose cumulative weight exceeds u * total (never a zero weight)."""
    cumulative = np.cumsum(weights)
    index = int(np.searchsorted(cumulative, u * cumulative[-1], side="right"))
    if index == len(weights):
        index = int(np.flatnonzero(weights > 0)[-1])
    return index

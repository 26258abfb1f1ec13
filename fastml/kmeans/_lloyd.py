"""The Lloyd loop shared by the NumPy, Numba and Cython backends.

Each of those backends supplies two kernels with the same contract:

- ``accumulate(X, sample_weight, centers, labels, sums, weights, n_threads)`` writes the
  nearest center of every sample into ``labels`` (a tie goes to the lower center index). It fills
  ``sums`` (k, d) and ``weights`` (k,), both float64, with the weighted sum and the total weight
  of the samples of each cluster;
- ``assign(X, sample_weight, centers, n_threads)`` returns ``(labels, inertia)`` for fixed
  centers, the inertia summed in float64 from exact squared distances.

The loop itself is cheap (O(k d) per iteration), so it is written here once. The naive backend
keeps a pure-Python copy of it, so that it stays an independent oracle.
"""

import numpy as np

# Rows per temporary array when the loop itself computes distances (empty clusters only).
TILE_ROWS = 4096


def lloyd(accumulate, assign, X, sample_weight, centers_init, max_iter, tol, n_threads):
    """Run Lloyd iterations from `centers_init`; return ``(centers, labels, inertia, n_iter)``.

    Stops when the labels repeat (strict convergence), when the squared center shift summed over
    clusters is at most `tol` (already scaled to the data), or after `max_iter` iterations. The
    returned labels and inertia are recomputed for the returned centers in every case.
    """
    n_samples, n_features = X.shape
    n_clusters = centers_init.shape[0]

    centers = centers_init.copy()
    labels = np.full(n_samples, -1, dtype=np.int32)
    labels_old = np.empty_like(labels)
    sums = np.empty((n_clusters, n_features), dtype=np.float64)
    weights = np.empty(n_clusters, dtype=np.float64)

    for n_iter in range(1, max_iter + 1):
        labels, labels_old = labels_old, labels
        accumulate(X, sample_weight, centers, labels, sums, weights, n_threads)
        relocate_empty_clusters(X, sample_weight, centers, labels, sums, weights)
        new_centers = update_centers(centers, sums, weights).astype(X.dtype)

        center_shift = float(np.sum((new_centers.astype(np.float64) - centers) ** 2))
        centers = new_centers
        if np.array_equal(labels, labels_old) or center_shift <= tol:
            break

    labels, inertia = assign(X, sample_weight, centers, n_threads)
    return centers, labels, inertia, n_iter


def update_centers(centers, sums, weights):
    """Return the new centers (float64): weighted means, a cluster without weight keeps its center."""
    new_centers = centers.astype(np.float64)
    occupied = weights > 0
    new_centers[occupied] = sums[occupied] / weights[occupied, None]
    return new_centers


def relocate_empty_clusters(X, sample_weight, centers, labels, sums, weights):
    """Move each empty cluster onto one of the samples farthest from their own center.

    Empty clusters, in ascending index, take the positive-weight samples in order of decreasing
    distance to their assigned (old) center, equal distances in ascending sample index. The sample
    leaves its old cluster's sums. Updates `sums` and `weights` in place.
    """
    empty = np.flatnonzero(weights == 0)
    if empty.size == 0:
        return

    distances = np.empty(X.shape[0])
    for start in range(0, X.shape[0], TILE_ROWS):
        rows = slice(start, start + TILE_ROWS)
        diff = X[rows].astype(np.float64) - centers[labels[rows]]
        distances[rows] = np.einsum("ij,ij->i", diff, diff)
    candidates = np.flatnonzero(sample_weight > 0)
    order = candidates[np.argsort(-distances[candidates], kind="stable")]

    for cluster, sample in zip(empty, order):
        weight = float(sample_weight[sample])
        point = X[sample].astype(np.float64) * weight
        old = labels[sample]
        sums[old] -= point
        weights[old] -= weight
        sums[cluster] = point
        weights[cluster] = weight

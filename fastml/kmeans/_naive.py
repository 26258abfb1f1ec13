"""k-means in pure Python: lists and loops, the version to read first and the oracle for the rest.

Cost: O(n k d) per Lloyd iteration and O(n k d (2 + ln k)) for k-means++, all in the
interpreter (about a microsecond per multiply-add), so it is meant for small inputs. Every sum is
taken in float64 (Python floats) in sample order. For float32 input the centers are rounded to
float32 after each update, as the other backends store them.
"""

from array import array

import numpy as np

from fastml.kmeans._common import first_within_tolerance


def kmeans_plusplus(X, sample_weight, n_clusters, uniforms, n_threads):
    """Return the sample indices of `n_clusters` greedy k-means++ centers.

    ``uniforms[0][0]`` picks the first center and ``uniforms[c]`` contains the draws of the
    candidates of step c. The caller draws them, so that every backend uses the same numbers.
    """
    points = X.tolist()
    weights = sample_weight.tolist()
    draws = uniforms.tolist()

    # The first center: a sample drawn with probability proportional to its weight.
    chosen = [_draw(weights, draws[0][0])]
    closest = [_squared_distance(point, points[chosen[0]]) for point in points]

    for step in range(1, n_clusters):
        # Candidates drawn with probability proportional to weight * squared distance.
        potential = [w * d for w, d in zip(weights, closest)]
        if sum(potential) == 0:
            # Every weighted sample is already a center: no choice can lower the potential.
            potential = weights
        candidates = [_draw(potential, u) for u in draws[step]]

        # Greedy: keep the candidate whose addition lowers the potential most.
        trials = []
        for candidate in candidates:
            distances = [
                min(d, _squared_distance(point, points[candidate]))
                for d, point in zip(closest, points)
            ]
            trials.append((sum(w * d for w, d in zip(weights, distances)), distances))
        best = first_within_tolerance([total for total, _ in trials])

        chosen.append(candidates[best])
        closest = trials[best][1]
    return chosen


def lloyd(X, sample_weight, centers, max_iter, tol, n_threads):
    """Run Lloyd's algorithm from `centers`; return ``(centers, labels, inertia, n_iter)``."""
    points = X.tolist()
    weights = sample_weight.tolist()
    round_center = _rounding(X.dtype)
    centers = centers.tolist()
    labels = None

    for n_iter in range(1, max_iter + 1):
        old_labels = labels
        labels = [_nearest(point, centers) for point in points]

        # Weighted sum and total weight of each cluster.
        n_features = len(points[0])
        sums = [[0.0] * n_features for _ in centers]
        totals = [0.0] * len(centers)
        for point, weight, label in zip(points, weights, labels):
            totals[label] += weight
            for f in range(n_features):
                sums[label][f] += weight * point[f]

        _relocate_empty_clusters(points, weights, centers, labels, sums, totals)

        # New centers are the weighted means; a cluster left without weight keeps its center.
        new_centers = [
            round_center([s / total for s in row]) if total > 0 else center
            for row, total, center in zip(sums, totals, centers)
        ]
        shift = sum(_squared_distance(a, b) for a, b in zip(new_centers, centers))
        centers = new_centers
        if labels == old_labels or shift <= tol:
            break

    labels = [_nearest(point, centers) for point in points]
    inertia = _inertia(points, weights, centers, labels)
    return np.array(centers, dtype=X.dtype), np.array(labels, dtype=np.int32), inertia, n_iter


def assign(X, sample_weight, centers, n_threads):
    """Return ``(labels, inertia)`` of `X` against fixed `centers`."""
    points = X.tolist()
    centers = centers.tolist()
    labels = [_nearest(point, centers) for point in points]
    inertia = _inertia(points, sample_weight.tolist(), centers, labels)
    return np.array(labels, dtype=np.int32), inertia


def _relocate_empty_clusters(points, weights, centers, labels, sums, totals):
    """Give each empty cluster one of the samples farthest from their own center.

    Empty clusters in ascending index take the positive-weight samples in order of decreasing
    distance to their (old) center; equal distances go in ascending sample index.
    """
    empty = [j for j, total in enumerate(totals) if total == 0]
    if not empty:
        return

    distance = [_squared_distance(p, centers[label]) for p, label in zip(points, labels)]
    farthest = sorted(
        (i for i, w in enumerate(weights) if w > 0), key=lambda i: -distance[i]
    )
    for cluster, sample in zip(empty, farthest):
        weight = weights[sample]
        moved = [weight * x for x in points[sample]]
        old = labels[sample]
        sums[old] = [s - m for s, m in zip(sums[old], moved)]
        totals[old] -= weight
        sums[cluster] = moved
        totals[cluster] = weight


def _nearest(point, centers):
    """Return the index of the closest center; strict < keeps the lower index on a tie."""
    best, best_distance = 0, _squared_distance(point, centers[0])
    for j in range(1, len(centers)):
        distance = _squared_distance(point, centers[j])
        if distance < best_distance:
            best, best_distance = j, distance
    return best


def _squared_distance(a, b):
    total = 0.0
    for x, y in zip(a, b):
        total += (x - y) * (x - y)
    return total


def _inertia(points, weights, centers, labels):
    return sum(
        w * _squared_distance(p, centers[label]) for p, w, label in zip(points, weights, labels)
    )


def _draw(weights, u):
    """Return the first index whose cumulative weight exceeds u * total (never a zero weight).

    With cumulative sums c, the result i satisfies c[i-1] <= u * total < c[i], so weights[i] > 0.
    Rounding can push u * total up to the last sum; then the last positive weight is taken.
    """
    cumulative = []
    running = 0.0
    for w in weights:
        running += w
        cumulative.append(running)
    target = u * running
    for i, c in enumerate(cumulative):
        if c > target:
            return i
    return max(i for i, w in enumerate(weights) if w > 0)


def _rounding(dtype):
    if dtype == np.float32:
        return lambda values: array("f", values).tolist()
    return lambda values: values

"""k-nearest neighbours in pure Python: the obvious algorithm, and the oracle for the other backends.

For every query the distance to every training row is computed in float64 (Python floats), the
features added one after the other, then rounded to the input dtype. ``heapq.nsmallest`` keeps
the k smallest (distance, index) pairs, so equal distances go in ascending index. These reference
formulas define the answer that every backend returns:

- sqeuclidean: ``sum((x_f - y_f) ** 2)``; euclidean: its square root;
- manhattan: ``sum(abs(x_f - y_f))``;
- cosine: ``1 - sum(x_f * y_f) / (||x|| ||y||)`` clipped to [0, 2], and 1.0 when either norm is
  zero, with ``||x|| = sqrt(sum(x_f * x_f))``.

Cost: O(n_query n_train d) interpreted operations (about a microsecond each) plus
O(n_query n_train log k) for the selection; memory O(n_train) per query. Meant for small inputs.
"""

import heapq
import math
from array import array

import numpy as np


def kneighbors(X_train, X_query, k, metric, n_threads):
    """Return ``(distances, indices)`` of the k nearest training rows of every query row."""
    train = X_train.tolist()
    rounded = _rounding(X_train.dtype)
    distances = np.empty((X_query.shape[0], k), dtype=X_train.dtype)
    indices = np.empty((X_query.shape[0], k), dtype=np.intp)

    if metric == "cosine":
        train_norms = [_norm(y) for y in train]
    for row, x in enumerate(X_query.tolist()):
        if metric == "cosine":
            x_norm = _norm(x)
            values = [_cosine(x, y, x_norm, y_norm) for y, y_norm in zip(train, train_norms)]
        elif metric == "manhattan":
            values = [_manhattan(x, y) for y in train]
        else:
            values = [_squared_euclidean(x, y) for y in train]
            if metric == "euclidean":
                values = [math.sqrt(v) for v in values]

        # Tuples compare by distance first, then by index: the tie rule.
        nearest = heapq.nsmallest(k, zip(rounded(values), range(len(train))))
        distances[row] = [value for value, _ in nearest]
        indices[row] = [index for _, index in nearest]
    return distances, indices


def class_scores(neighbor_codes, weights, n_classes):
    """Return the summed weight of each class among the neighbours, shape (n_query, n_classes).

    The weights of a row are added in neighbour order (nearest first).
    """
    scores = []
    for codes, row_weights in zip(neighbor_codes.tolist(), weights.tolist()):
        totals = [0.0] * n_classes
        for code, weight in zip(codes, row_weights):
            totals[code] += weight
        scores.append(totals)
    return np.array(scores, dtype=np.float64).reshape(len(scores), n_classes)


def weighted_means(neighbor_targets, weights):
    """Return the weighted mean of the neighbours' targets, shape (n_query, n_outputs).

    `neighbor_targets` has shape (n_query, k, n_outputs); sums run in neighbour order.
    """
    means = []
    for targets, row_weights in zip(neighbor_targets.tolist(), weights.tolist()):
        total_weight = 0.0
        sums = [0.0] * len(targets[0])
        for target, weight in zip(targets, row_weights):
            total_weight += weight
            for output, value in enumerate(target):
                sums[output] += weight * value
        means.append([s / total_weight for s in sums])
    n_query, _, n_outputs = neighbor_targets.shape
    return np.array(means, dtype=np.float64).reshape(n_query, n_outputs)


def _squared_euclidean(x, y):
    total = 0.0
    for a, b in zip(x, y):
        diff = a - b
        total += diff * diff
    return total


def _manhattan(x, y):
    total = 0.0
    for a, b in zip(x, y):
        total += abs(a - b)
    return total


def _cosine(x, y, x_norm, y_norm):
    if x_norm == 0.0 or y_norm == 0.0:
        return 1.0
    dot = 0.0
    for a, b in zip(x, y):
        dot += a * b
    return min(2.0, max(0.0, 1.0 - dot / (x_norm * y_norm)))


def _norm(x):
    # A plain loop, not sum(): since Python 3.12 sum() of floats is compensated, which would
    # differ from the other backends in the last bit.
    total = 0.0
    for a in x:
        total += a * a
    return math.sqrt(total)


def _rounding(dtype):
    """Return a function rounding a list of Python floats to `dtype` (float32 or float64)."""
    if dtype == np.float32:
        return lambda values: array("f", values).tolist()
    return lambda values: values

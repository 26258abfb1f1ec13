"""The scoring plan and the error bound shared by the NumPy, Numba and Cython kNN backends.

The fast backends rank the training rows of a query by an approximate score, keep the best
``n_candidates(k, n_train)``, recompute those with the reference formula, and then prove that no
other row can enter the top k. This module builds the inputs of that scheme once, in NumPy, so
that every backend uses the same numbers.

Approximate score, from matrix products in the input dtype T:

- euclidean and sqeuclidean: ``s(y) = ||y||^2 / 2 - x.y``, which is ``(||x - y||^2 - ||x||^2) / 2``;
- cosine: ``s(y) = -x^.y^`` with x^ = x / ||x|| (a zero vector stays zero), which is
  ``cosine_distance(x, y) - 1``.

Error bound. With u the unit roundoff (2^-24 for float32, 2^-53 for float64) and
``g(n, u) = n u / (1 - n u)``, a dot product of d terms errs by at most
``g(d, u) sum |x_i y_i| <= g(d, u) ||x|| ||y||`` (Higham, Accuracy and Stability of Numerical
Algorithms, 2nd ed., section 3.1). Adding the rounding of the norms, of the normalization and of
the subtraction gives, for every training row y:

- euclidean: ``|s(y) - exact| <= (g(d + 8, u_T) + g(d + 8, u_64)) (||x|| + R)^2 / 2``, with R
  the largest training norm;
- cosine: ``|s(y) - exact| <= g(d + 8, u_T) + g(3 d + 16, u_64)``, the second term covering the
  float64 reference formula as well.

Certificate. Every row outside the candidates scored at least the largest candidate score ``t``.
Its exact distance is then at least ``(base + slope t - margin) * shrink``, or the square root of
that for euclidean. Here base and slope turn a score back into a distance, margin is twice the
error bound in distance units, and ``shrink = 1 - 2 g(d + 8, u_64)`` covers the rounding of the
float64 sum of squares. If that lower bound, rounded to T, is strictly greater than the k-th reference
distance among the candidates, the candidates contain all k nearest rows, ties included. If not,
the backend scans every training row for that query with the reference formula.
"""

from typing import NamedTuple

import numpy as np

# Candidates kept beyond k. More candidates make the certificate fail less often on near-ties
# and cost one more heap entry each.
EXTRA_CANDIDATES = 8

# Integer codes of the metrics, as the compiled kernels receive them.
SQEUCLIDEAN, EUCLIDEAN, COSINE, MANHATTAN = 0, 1, 2, 3
METRIC_CODES = {"sqeuclidean": SQEUCLIDEAN, "euclidean": EUCLIDEAN, "cosine": COSINE, "manhattan": MANHATTAN}

# Rows per block when summing squares feature by feature, so a block stays in cache.
_NORM_BLOCK = 1024

# Queries per parallel block of the compiled backends. With a tile of 1024 training rows, 256
# queries keep the float32 products of a tile at 1 MiB, which fits the L2 cache. With blocks of
# 64 the Numba search ran about 30% slower (one core, 100,000 x 64 float32 training rows). Fewer
# queries are split into 8 blocks or more, so that the threads share them, of 32 rows at least.
MAX_QUERY_BLOCK = 256
_MIN_QUERY_BLOCK = 32

# Manhattan kernels transpose a tile of training rows to float64 (d x width). Capping it at
# 1 MiB keeps it in the L2 cache, which the per-query pass over all its features reads.
_MANHATTAN_TILE_BYTES = 1 << 20


class ScorePlan(NamedTuple):
    """The inputs of the approximate search and of its certificate for one kneighbors call.

    All arrays share one working dtype W: the input dtype T, or float64 when float32 scores
    would overflow. Distances are rounded to T in any case (`round_to_single`).
    """

    queries: np.ndarray  # (n_query, d): left factor of the products
    train: np.ndarray  # (n_train, d): right factor
    half_norms: np.ndarray  # (n_train,): additive term of each score
    query_points: np.ndarray  # (n_query, d): coordinates for the exact distances
    train_points: np.ndarray  # (n_train, d)
    base: np.ndarray  # (n_query,) float64
    margin: np.ndarray  # (n_query,) float64
    slope: float
    shrink: float
    sqrt_bound: bool  # take the square root of the lower bound (euclidean)
    round_to_single: bool  # round exact distances to float32


def n_candidates(k, n_train):
    """Return how many candidates the approximate search keeps per query."""
    return min(n_train, k + EXTRA_CANDIDATES)


def query_block(n_query):
    """Return the number of queries per parallel block for `n_query` queries."""
    return min(MAX_QUERY_BLOCK, max(_MIN_QUERY_BLOCK, -(-n_query // 8)))


def manhattan_tile(n_features, largest):
    """Return the width of a Manhattan tile: at most `largest` rows, about 1 MiB, at least 64."""
    return max(64, min(largest, _MANHATTAN_TILE_BYTES // (8 * n_features)))


def row_norms(X):
    """Return the float64 norm of every row, summing squares feature by feature in order.

    The order of the additions is that of the naive backend (``total += x * x`` over the
    features), so the cosine distances of all backends are bitwise equal.
    """
    n_rows, n_features = X.shape
    out = np.empty(n_rows, dtype=np.float64)
    for start in range(0, n_rows, _NORM_BLOCK):
        block = X[start : start + _NORM_BLOCK]
        total = np.zeros(block.shape[0], dtype=np.float64)
        for f in range(n_features):
            column = block[:, f].astype(np.float64)
            total += column * column
        out[start : start + _NORM_BLOCK] = np.sqrt(total)
    return out


def score_plan(X_train, X_query, metric, train_norms, query_norms):
    """Build the ScorePlan of a euclidean, sqeuclidean or cosine search.

    `train_norms` and `query_norms` are the float64 row norms (``row_norms``).
    """
    n_query, n_features = X_query.shape
    dtype = X_train.dtype
    single = dtype == np.float32
    unit_64 = np.finfo(np.float64).eps / 2
    shrink = 1.0 - 2 * _gamma(n_features + 8, unit_64)

    if metric == "cosine":
        error = _gamma(n_features + 8, np.finfo(dtype).eps / 2) + _gamma(3 * n_features + 16, unit_64)
        return ScorePlan(
            queries=_normalized(X_query, query_norms, dtype),
            train=_normalized(X_train, train_norms, dtype),
            half_norms=np.zeros(X_train.shape[0], dtype=dtype),
            query_points=X_query,
            train_points=X_train,
            base=np.ones(n_query),
            margin=np.full(n_query, 2 * error),
            slope=1.0,
            shrink=shrink,
            sqrt_bound=False,
            round_to_single=single,
        )

    # float32 scores of magnitude near 3e38 would overflow: score in float64 instead.
    largest = float(query_norms.max(initial=0.0)) + float(train_norms.max())
    if single and largest**2 > float(np.finfo(np.float32).max) / 8:
        dtype = np.dtype(np.float64)
    queries = X_query.astype(dtype, copy=False)
    train = X_train.astype(dtype, copy=False)
    # Twice the score error, times 2 to turn a score into a squared distance.
    error = _gamma(n_features + 8, np.finfo(dtype).eps / 2) + _gamma(n_features + 8, unit_64)
    return ScorePlan(
        queries=queries,
        train=train,
        half_norms=(0.5 * train_norms * train_norms).astype(dtype),
        query_points=queries,
        train_points=train,
        base=query_norms * query_norms,
        margin=2 * error * (query_norms + train_norms.max()) ** 2,
        slope=2.0,
        shrink=shrink,
        sqrt_bound=metric == "euclidean",
        round_to_single=single,
    )


def _gamma(n, unit):
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of n rounded operations."""
    return n * unit / (1 - n * unit)


def _normalized(X, norms, dtype):
    """Return X with unit rows in `dtype`; a row of norm zero stays zero.

    The product with the rounded inverse norm errs by at most 3 u_T per coordinate.
    """
    inverse = (1.0 / np.where(norms > 0, norms, 1.0)).astype(dtype)
    return X.astype(dtype, copy=False) * inverse[:, None]

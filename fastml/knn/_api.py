"""k-nearest neighbours: validation, then dispatch to a backend; the votes on top of the search."""

import numpy as np

from fastml import backends
from fastml._threads import get_num_threads
from fastml._validation import check_array, check_int, check_option

METRICS = ("euclidean", "sqeuclidean", "cosine", "manhattan")
WEIGHTS = ("uniform", "distance")
TASKS = ("classification", "regression")


def kneighbors(X_train, X_query, k, *, metric="euclidean", backend="auto"):
    """Find the k nearest training rows of every query row by brute force.

    Parameters
    ----------
    X_train : array-like of shape (n_train, n_features)
    X_query : array-like of shape (n_query, n_features)
        May have no rows. If both inputs are float32 the computation and the distances are
        float32; otherwise both are converted to float64 (integers included).
    k : int
        Between 1 and n_train.
    metric : {"euclidean", "sqeuclidean", "cosine", "manhattan"}
        Cosine distance is ``1 - cos(angle)``, and 1.0 to or from an all-zero vector.
    backend : {"auto", "naive", "numpy", "numba", "cython"}

    Returns
    -------
    distances : ndarray of shape (n_query, k)
        Sorted ascending in each row.
    indices : ndarray of shape (n_query, k), intp
        Training row indices; equal distances are ordered by ascending index.
    """
    X_train, X_query = _check_pair(X_train, X_query)
    distances, indices, _ = _search(X_train, X_query, k, metric, backend)
    return distances, indices


def predict(
    X_train,
    y_train,
    X_query,
    k,
    *,
    task="classification",
    weights="uniform",
    metric="euclidean",
    backend="auto",
):
    """Predict the target of every query row from its k nearest training rows.

    Parameters
    ----------
    y_train : array-like of shape (n_train,), or (n_train, n_outputs) for regression
        Class labels (any sortable values) or real targets.
    task : {"classification", "regression"}
        Classification returns the class with the largest summed weight among the neighbours; a
        tie goes to the smallest label. Regression returns the weighted mean of the neighbours'
        targets.
    weights : {"uniform", "distance"} or callable
        "distance" weighs a neighbour by 1 / distance. A query at distance zero from some
        training rows is decided by those rows alone, each with weight 1. A callable receives
        the (n_query, k) distances and returns non-negative weights of the same shape, with a
        positive sum in every row.
    X_train, X_query, k, metric, backend
        As in ``kneighbors``.

    Returns
    -------
    ndarray of shape (n_query,), or (n_query, n_outputs) for a 2-D regression target
    """
    check_option(task, "task", TASKS)
    _check_weights(weights)
    X_train, X_query = _check_pair(X_train, X_query)
    if task == "classification":
        classes, scores = _class_scores(X_train, y_train, X_query, k, weights, metric, backend)
        # argmax returns the first maximum, and classes are sorted: a tie goes to the smallest.
        return classes[np.argmax(scores, axis=1)]

    targets = _check_regression_targets(y_train, X_train.shape[0])
    distances, indices, module = _search(X_train, X_query, k, metric, backend)
    means = module.weighted_means(targets[indices], _neighbor_weights(distances, weights))
    return means[:, 0] if np.ndim(y_train) == 1 else means


def predict_proba(X_train, y_train, X_query, k, *, weights="uniform", metric="euclidean", backend="auto"):
    """Return the class probabilities of every query row, shape (n_query, n_classes).

    The columns follow the sorted class labels (``np.unique(y_train)``). The probability of a
    class is its summed neighbour weight divided by the summed weight of all k neighbours. The
    parameters are those of ``predict``.
    """
    _check_weights(weights)
    X_train, X_query = _check_pair(X_train, X_query)
    _, scores = _class_scores(X_train, y_train, X_query, k, weights, metric, backend)
    return scores / scores.sum(axis=1, keepdims=True)


def _class_scores(X_train, y_train, X_query, k, weights, metric, backend):
    """Return ``(classes, scores)``: the sorted labels and their summed weights per query.

    `X_train` and `X_query` are already validated by ``_check_pair``.
    """
    classes, codes = _encode_labels(y_train, X_train.shape[0])
    distances, indices, module = _search(X_train, X_query, k, metric, backend)
    scores = module.class_scores(codes[indices], _neighbor_weights(distances, weights), classes.size)
    return classes, scores


def _search(X_train, X_query, k, metric, backend, check_train=True):
    """Check the search parameters and run it on validated arrays; return the backend too.

    An estimator passes ``check_train=False`` for training rows whose magnitude it checked at fit.
    """
    k = _check_k(k, X_train.shape[0])
    check_option(metric, "metric", METRICS)
    if check_train:
        check_magnitude(X_train, "X_train", metric)
    check_magnitude(X_query, "X_query", metric)
    module = backends.load("knn", backend)

    if X_query.shape[0] == 0:
        distances = np.empty((0, k), dtype=X_train.dtype)
        indices = np.empty((0, k), dtype=np.intp)
    else:
        distances, indices = module.kneighbors(X_train, X_query, k, metric, get_num_threads())
    return distances, indices, module


def _check_weights(weights):
    if not callable(weights):
        check_option(weights, "weights", WEIGHTS)


def _neighbor_weights(distances, weights):
    """Return the (n_query, k) float64 weight of every neighbour."""
    if callable(weights):
        return _call_weights(weights, distances)

    distances = distances.astype(np.float64)
    if weights == "uniform":
        return np.ones_like(distances)
    zero = distances == 0
    with np.errstate(divide="ignore"):
        inverse = 1.0 / distances
    # A row with an exact match is decided by the rows at distance zero alone.
    return np.where(zero.any(axis=1, keepdims=True), zero.astype(np.float64), inverse)


def _call_weights(weights, distances):
    result = np.asarray(weights(distances), dtype=np.float64)
    if result.shape != distances.shape:
        raise ValueError(
            f"the weights function returned shape {result.shape}; expected {distances.shape}, "
            "the shape of the distances it received"
        )
    if not np.isfinite(result).all() or (result < 0).any():
        raise ValueError("the weights function must return finite, non-negative weights")
    if result.size and not (result.sum(axis=1) > 0).all():
        raise ValueError("the weights function returned a row of zero weights; every query needs a positive sum")
    return result


def _encode_labels(y, n_train):
    """Return ``(classes, codes)``: the sorted distinct labels and each sample's position in them."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y_train must be 1-D with shape (n_train,) for classification, got shape {y.shape}")
    if y.shape[0] != n_train:
        raise ValueError(f"y_train has {y.shape[0]} labels but X_train has {n_train} rows; they must match")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError("y_train contains NaN or infinity; class labels must be finite")
    classes, codes = np.unique(y, return_inverse=True)
    return classes, codes.astype(np.intp)


def _check_regression_targets(y, n_train):
    """Return the targets as float64 of shape (n_train, n_outputs)."""
    ndim = np.ndim(y)
    if ndim not in (1, 2):
        raise ValueError(
            f"y_train must have shape (n_train,) or (n_train, n_outputs), got shape {np.shape(y)}"
        )
    targets = check_array(y, "y_train", ndim=ndim, dtype=(np.float64,), min_samples=0)
    if targets.shape[0] != n_train:
        raise ValueError(f"y_train has {targets.shape[0]} rows but X_train has {n_train}; they must match")
    return targets.reshape(n_train, -1)


def _check_pair(X_train, X_query):
    """Validate both arrays; return them C-contiguous in one float dtype."""
    X_train = check_array(X_train, "X_train")
    X_query = check_array(X_query, "X_query", min_samples=0)
    if X_query.shape[1] != X_train.shape[1]:
        raise ValueError(
            f"X_query has {X_query.shape[1]} features but X_train has {X_train.shape[1]}; "
            "they must match"
        )
    if X_train.dtype != X_query.dtype:
        # Mixed float32 and float64: compute in float64 rather than lose precision silently.
        X_train = X_train.astype(np.float64)
        X_query = X_query.astype(np.float64)
    return X_train, X_query


def _check_k(k, n_train):
    k = check_int(k, "k", min_value=1)
    if k > n_train:
        raise ValueError(
            f"k={k} is greater than the number of training rows n_train={n_train}; "
            f"k must be between 1 and {n_train}"
        )
    return k


def check_magnitude(X, name, metric):
    """Raise ``ValueError`` if a distance between rows of this size could overflow float64.

    Squares of coordinates near 1e154 overflow; rejecting them here keeps every backend finite.
    """
    if X.size == 0:
        return
    largest = float(np.abs(X).max())
    n_features = X.shape[1]
    if metric == "manhattan":
        limit = np.finfo(np.float64).max / (2 * n_features)
    else:
        limit = np.sqrt(np.finfo(np.float64).max / (4 * n_features))
    if largest > limit:
        raise ValueError(
            f"{name} has a value of magnitude {largest:.3g}, above {limit:.3g}, where {metric} "
            "distances overflow float64; rescale the data"
        )

"""``NearestNeighbors``, ``KNeighborsClassifier`` and ``KNeighborsRegressor``: scikit-learn
compatible estimators around ``fastml.knn``.

Parameter and attribute names are scikit-learn's (``n_neighbors``, ``weights``, ``metric``, ``p``,
``n_samples_fit_``, ``classes_``, ``effective_metric_``), plus ``backend``. The search is always
brute force, so scikit-learn's ``algorithm``, ``leaf_size``, ``radius``, ``metric_params`` and
``n_jobs`` are not parameters; the thread count is ``fastml.set_num_threads``.
"""

import warnings

import numpy as np

from fastml._estimator_base import (
    BaseEstimator,
    ClassifierMixin,
    RegressorMixin,
    check_features,
    check_is_fitted,
    record_features,
)
from fastml._validation import check_array, check_int, check_option
from fastml.knn import _api

try:
    from sklearn.exceptions import DataConversionWarning
except ImportError:

    class DataConversionWarning(UserWarning):
        """A target of shape (n_samples, 1) was converted to shape (n_samples,)."""


# Names scikit-learn accepts for the metrics fastml implements, and what they mean here.
_METRIC_ALIASES = {
    "euclidean": "euclidean",
    "l2": "euclidean",
    "sqeuclidean": "sqeuclidean",
    "cosine": "cosine",
    "manhattan": "manhattan",
    "l1": "manhattan",
    "cityblock": "manhattan",
}


def effective_metric(metric, p):
    """Return the fastml metric that scikit-learn's `metric` and `p` describe.

    "minkowski" is "manhattan" with p=1 and "euclidean" with p=2; other values of p raise.
    """
    if metric == "minkowski":
        if p == 1:
            return "manhattan"
        if p == 2:
            return "euclidean"
        raise ValueError(f"invalid p={p!r} for metric='minkowski'; only p=1 and p=2 are supported")
    check_option(metric, "metric", ("minkowski", *_METRIC_ALIASES))
    return _METRIC_ALIASES[metric]


class _NeighborsBase(BaseEstimator):
    """Fitting (storing the training rows) and ``kneighbors``, shared by the three estimators."""

    def _fit(self, X):
        self.effective_metric_ = effective_metric(self.metric, self.p)
        self.effective_metric_params_ = {}
        check_int(self.n_neighbors, "n_neighbors", min_value=1)
        validated = check_array(X, "X")
        _api.check_magnitude(validated, "X", self.effective_metric_)
        record_features(self, X, validated)
        self._fit_X = validated
        self.n_samples_fit_ = validated.shape[0]

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        """Find the nearest training samples of each row of `X`.

        With ``X=None`` the queries are the training samples, and each is left out of its own
        neighbours. When more than n_neighbors duplicates of a sample rank before it, the first
        of them is left out instead, as scikit-learn does.

        Returns ``(distances, indices)``, each of shape (n_queries, n_neighbors) and sorted by
        distance (equal distances by ascending index), or only the indices when
        ``return_distance`` is false.
        """
        check_is_fitted(self, "_fit_X")
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        k = check_int(k, "n_neighbors", min_value=1)

        if X is None:
            distances, indices = self._kneighbors_of_training(k)
        else:
            if k > self.n_samples_fit_:
                raise ValueError(
                    f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {k}, "
                    f"n_samples_fit = {self.n_samples_fit_}"
                )
            distances, indices = self._search(self._check_X(X), k)
        return (distances, indices) if return_distance else indices

    def kneighbors_graph(self, X=None, n_neighbors=None, mode="connectivity"):
        """Return the k-neighbours graph as a sparse CSR matrix of shape (n_queries, n_samples_fit).

        `mode` "connectivity" stores ones, "distance" the distances. Needs SciPy.
        """
        from scipy.sparse import csr_matrix

        check_option(mode, "mode", ("connectivity", "distance"))
        distances, indices = self.kneighbors(X, n_neighbors)
        n_queries, k = indices.shape
        data = np.ones(indices.size) if mode == "connectivity" else distances.ravel()
        indptr = np.arange(0, n_queries * k + 1, k)
        return csr_matrix((data, indices.ravel(), indptr), shape=(n_queries, self.n_samples_fit_))

    def _kneighbors_of_training(self, k):
        n = self.n_samples_fit_
        if k >= n:
            raise ValueError(
                f"Expected n_neighbors < n_samples_fit when X is None, because each training "
                f"sample is left out of its own neighbours, but n_neighbors = {k}, n_samples_fit = {n}"
            )
        distances, indices = self._search(self._fit_X, k + 1)

        # Drop each sample from its own row. Where duplicates at distance zero pushed it out,
        # drop the first of them, which is as good as the sample itself.
        is_self = indices == np.arange(n)[:, None]
        is_self[~is_self.any(axis=1), 0] = True
        keep = ~is_self
        return distances[keep].reshape(n, k), indices[keep].reshape(n, k)

    def _search(self, X, k):
        """Search the fitted rows for the validated queries `X`, without checking them again."""
        train = self._fit_X
        if X.dtype != train.dtype:
            # Mixed float32 and float64: search in float64, as fastml.knn.kneighbors does.
            train, X = train.astype(np.float64), X.astype(np.float64)
        distances, indices, _ = _api._search(
            train, X, k, self.effective_metric_, self.backend, check_train=False
        )
        return distances, indices

    def _check_X(self, X):
        X = check_array(X, "X", min_samples=0)
        check_features(self, X)
        return X

    def _check_fitted_X(self, X):
        check_is_fitted(self, "_fit_X")
        return self._check_X(X)


class NearestNeighbors(_NeighborsBase):
    """Unsupervised k-nearest-neighbour search, as ``sklearn.neighbors.NearestNeighbors``.

    Parameters
    ----------
    n_neighbors : int
        Neighbours returned by ``kneighbors`` when it is not given another count.
    metric : {"minkowski", "euclidean", "sqeuclidean", "cosine", "manhattan", "l1", "l2", "cityblock"}
        "minkowski" with ``p`` 1 or 2 is manhattan or euclidean, as in scikit-learn.
    p : {1, 2}
        Power of the Minkowski metric; used only with metric="minkowski".
    backend : {"auto", "naive", "numpy", "numba", "cython"}

    Attributes
    ----------
    n_samples_fit_ : int
    n_features_in_ : int
    effective_metric_ : str
        The fastml metric used: "euclidean", "sqeuclidean", "cosine" or "manhattan".
    effective_metric_params_ : dict
        Always empty; kept for scikit-learn compatibility.
    """

    def __init__(self, *, n_neighbors=5, metric="minkowski", p=2, backend="auto"):
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.p = p
        self.backend = backend

    def fit(self, X, y=None):
        """Store the training samples `X`; `y` is ignored."""
        self._fit(X)
        return self


class KNeighborsClassifier(ClassifierMixin, _NeighborsBase):
    """Classification by a vote of the k nearest neighbours, as scikit-learn's estimator.

    Parameters
    ----------
    n_neighbors : int
    weights : {"uniform", "distance"} or callable
        As in ``fastml.knn.predict``: "distance" weighs by 1 / distance, and a query at distance
        zero from training samples is decided by those samples alone.
    metric, p, backend
        As in ``NearestNeighbors``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The sorted class labels; a vote tie goes to the first (smallest) of them.
    n_samples_fit_, n_features_in_, effective_metric_, effective_metric_params_
        As in ``NearestNeighbors``.
    """

    def __init__(self, n_neighbors=5, *, weights="uniform", metric="minkowski", p=2, backend="auto"):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.p = p
        self.backend = backend

    def fit(self, X, y):
        """Store the training samples `X` and their class labels `y`."""
        _api._check_weights(self.weights)
        self._fit(X)
        y = _check_targets(y, self, self.n_samples_fit_)
        _reject_continuous(y, type(self).__name__)
        self.classes_, self._y = _api._encode_labels(y, self.n_samples_fit_)
        return self

    def predict(self, X):
        """Return the predicted class label of each row of `X`."""
        scores = self._class_scores(X)
        return self.classes_[np.argmax(scores, axis=1)]

    def predict_proba(self, X):
        """Return class probabilities, shape (n_queries, n_classes), columns as ``classes_``."""
        scores = self._class_scores(X)
        return scores / scores.sum(axis=1, keepdims=True)

    def score(self, X, y, sample_weight=None):
        """Return the (weighted) accuracy of ``predict(X)`` against `y`."""
        return float(np.average(self.predict(X) == np.asarray(y).ravel(), weights=sample_weight))

    def _class_scores(self, X):
        X = self._check_fitted_X(X)
        distances, indices = self._search(X, self.n_neighbors)
        module = _backend_module(self.backend)
        weights = _api._neighbor_weights(distances, self.weights)
        return module.class_scores(self._y[indices], weights, self.classes_.size)


class KNeighborsRegressor(RegressorMixin, _NeighborsBase):
    """Regression by the weighted mean of the k nearest neighbours' targets, as scikit-learn's.

    Parameters
    ----------
    n_neighbors, weights, metric, p, backend
        As in ``KNeighborsClassifier``.

    Attributes
    ----------
    n_samples_fit_, n_features_in_, effective_metric_, effective_metric_params_
        As in ``NearestNeighbors``.
    """

    def __init__(self, n_neighbors=5, *, weights="uniform", metric="minkowski", p=2, backend="auto"):
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.metric = metric
        self.p = p
        self.backend = backend

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        """Store the training samples `X` and their targets `y`, shape (n,) or (n, n_outputs)."""
        _api._check_weights(self.weights)
        self._fit(X)
        y = _check_targets(y, self, self.n_samples_fit_, allow_2d=True)
        self._y = _api._check_regression_targets(y, self.n_samples_fit_)
        self._y_ndim = np.ndim(y)
        return self

    def predict(self, X):
        """Return the predicted target of each row of `X` (float64)."""
        X = self._check_fitted_X(X)
        distances, indices = self._search(X, self.n_neighbors)
        module = _backend_module(self.backend)
        weights = _api._neighbor_weights(distances, self.weights)
        means = module.weighted_means(self._y[indices], weights)
        return means[:, 0] if self._y_ndim == 1 else means

    def score(self, X, y, sample_weight=None):
        """Return the coefficient of determination R^2 of ``predict(X)``, averaged over outputs."""
        return r2_score(y, self.predict(X), sample_weight=sample_weight)


def r2_score(y_true, y_pred, sample_weight=None):
    """R^2 = 1 - SS_res / SS_tot per output, averaged uniformly over outputs.

    An output with SS_tot = 0 scores 1.0 if predicted exactly, else 0.0, as scikit-learn does.
    """
    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_pred), -1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    weights = np.ones(len(y_pred)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    mean = np.average(y_true, axis=0, weights=weights)
    residual = (weights[:, None] * (y_true - y_pred) ** 2).sum(axis=0)
    total = (weights[:, None] * (y_true - mean) ** 2).sum(axis=0)
    scores = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1.0), (residual == 0) * 1.0)
    return float(scores.mean())


def _backend_module(backend):
    from fastml import backends

    return backends.load("knn", backend)


def _check_targets(y, estimator, n_samples, allow_2d=False):
    name = type(estimator).__name__
    if y is None:
        raise ValueError(f"{name} requires y to be passed, but the target y is None")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1 and not allow_2d:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected; it was converted to "
            "shape (n_samples,)",
            DataConversionWarning,
            stacklevel=3,
        )
        y = y.ravel()
    if y.dtype.kind in "fc" and not np.isfinite(y).all():
        raise ValueError("Input y contains NaN or infinity; remove or impute those targets")
    if y.shape[:1] != (n_samples,):
        raise ValueError(f"y has {len(y)} entries but X has {n_samples} samples; they must match")
    return y


def _reject_continuous(y, name):
    """Raise ``ValueError`` for float labels that are not whole numbers (a regression target)."""
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        raise ValueError(
            f"Unknown label type: continuous. {name} needs class labels; use "
            "KNeighborsRegressor for a continuous target"
        )

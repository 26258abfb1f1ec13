"""``KMeans``: the scikit-learn compatible estimator around ``fastml.kmeans.fit``."""

import numpy as np

from fastml._estimator_base import (
    BaseEstimator,
    ClusterMixin,
    TransformerMixin,
    check_features,
    check_is_fitted,
    record_features,
)
from fastml._validation import check_array, check_option
from fastml.kmeans._api import assign, fit


class KMeans(ClusterMixin, TransformerMixin, BaseEstimator):
    """k-means clustering with scikit-learn's parameters and attributes, on a fastml backend.

    Parameters
    ----------
    n_clusters, init, n_init, max_iter, tol, random_state
        As in ``fastml.kmeans.fit`` (and ``sklearn.cluster.KMeans``).
    copy_x : bool
        Accepted for compatibility with scikit-learn; fastml never modifies X, so it has no effect.
    algorithm : {"lloyd"}
        Only Lloyd's algorithm is implemented; "elkan" raises ``ValueError``.
    backend : {"auto", "naive", "numpy", "numba", "cython"}

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : ndarray of shape (n_samples,), int32
    inertia_ : float
        Weighted sum of squared distances of the samples to their centers.
    n_iter_ : int
    n_features_in_ : int
    """

    def __init__(
        self,
        n_clusters=8,
        *,
        init="k-means++",
        n_init="auto",
        max_iter=300,
        tol=1e-4,
        random_state=None,
        copy_x=True,
        algorithm="lloyd",
        backend="auto",
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.copy_x = copy_x
        self.algorithm = algorithm
        self.backend = backend

    def fit(self, X, y=None, sample_weight=None):
        """Compute the clustering of `X`; `y` is ignored."""
        check_option(self.algorithm, "algorithm", ("lloyd",))
        validated = check_array(X, "X")
        record_features(self, X, validated)
        result = fit(
            validated,
            self.n_clusters,
            init=self.init,
            n_init=self.n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            sample_weight=sample_weight,
            random_state=self.random_state,
            backend=self.backend,
        )
        self.cluster_centers_ = result.centers
        self.labels_ = result.labels
        self.inertia_ = result.inertia
        self.n_iter_ = result.n_iter
        return self

    def predict(self, X):
        """Return the index of the nearest center of each sample."""
        labels, _ = self._assign(X)
        return labels

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the labels of the training samples."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X):
        """Return the Euclidean distance of each sample to each center, shape (n_samples, k)."""
        X = self._check_X(X)
        centers = self.cluster_centers_.astype(np.float64)
        centers_sq = np.einsum("ij,ij->i", centers, centers)
        distances = np.empty((X.shape[0], centers.shape[0]), dtype=X.dtype)

        # ||x||^2 - 2 x.c + ||c||^2 in float64, tile by tile; clamped because rounding can make
        # it slightly negative when x is (nearly) a center.
        for start in range(0, X.shape[0], 4096):
            tile = X[start : start + 4096].astype(np.float64)
            squared = np.einsum("ij,ij->i", tile, tile)[:, None] - 2 * tile @ centers.T + centers_sq
            distances[start : start + 4096] = np.sqrt(np.maximum(squared, 0.0))
        return distances

    def fit_transform(self, X, y=None, sample_weight=None):
        """Fit, then return the distances of the training samples to the centers."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def score(self, X, y=None, sample_weight=None):
        """Return minus the inertia of `X` against the fitted centers (higher is better)."""
        _, inertia = self._assign(X, sample_weight)
        return -inertia

    def _assign(self, X, sample_weight=None):
        X = self._check_X(X)
        return assign(X, self.cluster_centers_, sample_weight=sample_weight, backend=self.backend)

    def _check_X(self, X):
        check_is_fitted(self, "cluster_centers_")
        X = check_array(X, "X", dtype=(self.cluster_centers_.dtype,))
        check_features(self, X)
        return X

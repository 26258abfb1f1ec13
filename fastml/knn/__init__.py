"""k-nearest neighbours by brute force in four backends: naive Python, NumPy, Numba, Cython.

``kneighbors`` returns the distances and indices of the k nearest training rows of every query;
``predict`` and ``predict_proba`` vote over them for classification and regression.
``NearestNeighbors``, ``KNeighborsClassifier`` and ``KNeighborsRegressor`` are the scikit-learn
compatible estimators. Every backend returns the same indices: the k smallest distances by the
reference formulas, equal distances in ascending training index; see docs/knn.md.
"""

from fastml.knn._api import METRICS, kneighbors, predict, predict_proba

_ESTIMATORS = ("KNeighborsClassifier", "KNeighborsRegressor", "NearestNeighbors")

__all__ = [
    "METRICS",
    "KNeighborsClassifier",
    "KNeighborsRegressor",
    "NearestNeighbors",
    "kneighbors",
    "predict",
    "predict_proba",
]


def __getattr__(name):
    # The estimators derive from scikit-learn's base classes when it is installed. Importing
    # scikit-learn takes a second and loads its OpenMP runtime, so it waits until first use.
    if name in _ESTIMATORS:
        from fastml.knn import _estimator

        return getattr(_estimator, name)
    raise AttributeError(f"module 'fastml.knn' has no attribute {name!r}")

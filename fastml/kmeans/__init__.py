"""k-means clustering: greedy k-means++ initialization and Lloyd iterations, four backends.

``fit`` returns ``(centers, labels, inertia, n_iter)``; ``predict`` and ``assign`` label new data;
``KMeans`` is the scikit-learn compatible estimator. All backends return the same labels for the
same data, seed and init, up to floating-point rounding in near-ties; see docs/kmeans.md.
"""

from fastml.kmeans._api import KMeansResult, assign, fit, kmeans_plusplus, predict

__all__ = ["KMeans", "KMeansResult", "assign", "fit", "kmeans_plusplus", "predict"]


def __getattr__(name):
    # The estimator derives from scikit-learn's base classes when scikit-learn is installed, and
    # importing scikit-learn takes a second and loads its OpenMP runtime: only on first use.
    if name == "KMeans":
        from fastml.kmeans._estimator import KMeans

        return KMeans
    raise AttributeError(f"module 'fastml.kmeans' has no attribute {name!r}")

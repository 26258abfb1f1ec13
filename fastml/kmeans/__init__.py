"""k-means clustering: greedy k-means++ initialization and Lloyd iterations, four backends.

``fit`` returns ``(centers, labels, inertia, n_iter)``; ``predict`` and ``assign`` label new data;
``KMeans`` is the scikit-learn compatible estimator. All backends return the same labels for the
same data, seed and init, up to floating-point rounding in near-ties; see docs/kmeans.md.
"""

from fastml.kmeans._api import KMeansResult, assign, fit, kmeans_plusplus, predict
from fastml.kmeans._estimator import KMeans

__all__ = ["KMeans", "KMeansResult", "assign", "fit", "kmeans_plusplus", "predict"]

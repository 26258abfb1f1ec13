"""k-means: validation, initialization and restarts, shared by every backend."""

import math
import warnings
from typing import NamedTuple

import numpy as np

from fastml import backends
from fastml._threads import get_num_threads
from fastml._validation import (
    check_array,
    check_float,
    check_int,
    check_option,
    check_random_state,
    check_sample_weight,
)
from fastml.exceptions import ConvergenceWarning
from fastml.kmeans._common import TIE_RTOL

INIT_METHODS = ("k-means++", "random")


class KMeansResult(NamedTuple):
    """The outcome of a k-means fit; the labels and inertia belong to the centers."""

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int


def fit(
    X,
    n_clusters,
    *,
    init="k-means++",
    n_init="auto",
    max_iter=300,
    tol=1e-4,
    sample_weight=None,
    random_state=None,
    backend="auto",
):
    """Cluster `X` into `n_clusters` groups with Lloyd's algorithm.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        float32 stays float32 and float64 stays float64; other numeric dtypes become float64.
    n_clusters : int
        Between 1 and n_samples.
    init : {"k-means++", "random"} or array-like of shape (n_clusters, n_features)
        "k-means++" is the greedy variant: 2 + floor(ln k) candidates per step, the one that
        lowers the potential most is kept. It never picks a sample at distance zero from the
        chosen centers unless every sample of positive weight is at distance zero.
        "random" picks n_clusters distinct samples of positive weight.
    n_init : int or "auto"
        Runs from different initializations; the one with the lowest inertia wins. Inertias
        within a relative 1e-9 count as equal, and the earliest of equal runs wins. "auto" is 1
        for "k-means++" and an array, 10 for "random".
    max_iter : int
        Maximum number of Lloyd iterations per run.
    tol : float
        Convergence threshold on the squared center shift summed over clusters, relative to
        the mean per-feature variance of X (as scikit-learn). 0 runs until the labels repeat.
    sample_weight : array-like of shape (n_samples,), optional
        Non-negative weights; None gives every sample weight 1.
    random_state : None, int or numpy.random.Generator
        Seeds the initialization. The same seed gives the same result on every backend.
    backend : {"auto", "naive", "numpy", "numba", "cython"}

    Returns
    -------
    KMeansResult
        ``(centers, labels, inertia, n_iter)`` of the best run.
    """
    X = check_array(X, "X")
    _check_magnitude(X, "X")
    n_samples = X.shape[0]
    n_clusters = check_int(n_clusters, "n_clusters", min_value=1)
    if n_clusters > n_samples:
        raise ValueError(f"n_samples={n_samples} should be >= n_clusters={n_clusters}")
    sample_weight = check_sample_weight(sample_weight, n_samples, X.dtype)
    init, n_init = _check_init(init, n_init, n_clusters, X)
    max_iter = check_int(max_iter, "max_iter", min_value=1)
    tol = check_float(tol, "tol", min_value=0.0)
    rng = check_random_state(random_state)
    module = backends.load("kmeans", backend)

    tol = _scaled_tolerance(X, tol)
    n_threads = get_num_threads()
    best = None
    for _ in range(n_init):
        centers = _initial_centers(module, X, sample_weight, n_clusters, init, rng)
        run = KMeansResult(*module.lloyd(X, sample_weight, centers, max_iter, tol, n_threads))
        # A later run must be lower by more than rounding, so that all backends keep the same run.
        if best is None or run.inertia * (1 + TIE_RTOL) < best.inertia:
            best = run

    _warn_if_degenerate(best.labels, n_clusters)
    return best


def predict(X, centers, *, sample_weight=None, backend="auto"):
    """Return the index of the nearest center for every sample (ties go to the lower index)."""
    labels, _ = assign(X, centers, sample_weight=sample_weight, backend=backend)
    return labels


def assign(X, centers, *, sample_weight=None, backend="auto"):
    """Return ``(labels, inertia)`` of `X` against fixed `centers`."""
    centers = check_array(centers, "centers")
    X = check_array(X, "X", dtype=(centers.dtype,))
    _check_magnitude(X, "X")
    _check_magnitude(centers, "centers")
    if X.shape[1] != centers.shape[1]:
        raise ValueError(
            f"X has {X.shape[1]} features but centers have {centers.shape[1]}; they must match"
        )
    sample_weight = check_sample_weight(sample_weight, X.shape[0], X.dtype)
    module = backends.load("kmeans", backend)
    return module.assign(X, sample_weight, centers, get_num_threads())


def kmeans_plusplus(X, n_clusters, *, sample_weight=None, random_state=None, backend="auto"):
    """Choose `n_clusters` initial centers by greedy k-means++; return ``(centers, indices)``."""
    X = check_array(X, "X")
    _check_magnitude(X, "X")
    n_clusters = check_int(n_clusters, "n_clusters", min_value=1, max_value=X.shape[0])
    sample_weight = check_sample_weight(sample_weight, X.shape[0], X.dtype)
    rng = check_random_state(random_state)
    module = backends.load("kmeans", backend)
    indices = _plusplus_indices(module, X, sample_weight, n_clusters, rng)
    return X[indices].copy(), indices


def n_local_trials(n_clusters):
    """Return the number of candidates per greedy k-means++ step: 2 + floor(ln k)."""
    return 2 + int(math.log(n_clusters))


def _plusplus_indices(module, X, sample_weight, n_clusters, rng):
    # All randomness is drawn here, in one place, so every backend consumes the same numbers.
    # Entry [0, 0] picks the first center and row c contains the candidate draws of step c.
    uniforms = rng.random((n_clusters, n_local_trials(n_clusters)))
    indices = module.kmeans_plusplus(X, sample_weight, n_clusters, uniforms, get_num_threads())
    return np.asarray(indices, dtype=np.intp)


def _initial_centers(module, X, sample_weight, n_clusters, init, rng):
    if isinstance(init, np.ndarray):
        return init.copy()
    if init == "random":
        candidates = np.flatnonzero(sample_weight > 0)
        if candidates.size < n_clusters:
            raise ValueError(
                f'init="random" needs n_clusters={n_clusters} samples of positive weight, '
                f"but sample_weight has {candidates.size}; use init=\"k-means++\""
            )
        return X[np.sort(rng.choice(candidates, size=n_clusters, replace=False))].copy()
    return X[_plusplus_indices(module, X, sample_weight, n_clusters, rng)].copy()


def _check_init(init, n_init, n_clusters, X):
    if isinstance(init, str):
        check_option(init, "init", INIT_METHODS)
    else:
        init = check_array(init, "init", dtype=(X.dtype,))
        _check_magnitude(init, "init")
        if init.shape != (n_clusters, X.shape[1]):
            raise ValueError(
                f"init has shape {init.shape}; expected (n_clusters, n_features) = "
                f"({n_clusters}, {X.shape[1]})"
            )

    if n_init == "auto":
        n_init = 10 if isinstance(init, str) and init == "random" else 1
    n_init = check_int(n_init, "n_init", min_value=1)
    if isinstance(init, np.ndarray) and n_init != 1:
        warnings.warn(
            f"an explicit init array is used for every run, so n_init={n_init} repeats "
            "the same fit; running once (pass n_init=1 to silence this warning)",
            RuntimeWarning,
            stacklevel=3,
        )
        n_init = 1
    return init, n_init


def _check_magnitude(X, name):
    """Reject values whose squared norms overflow the dtype, which would turn scores into NaN."""
    limit = np.sqrt(np.finfo(X.dtype).max / (4 * X.shape[1]))
    largest = float(np.abs(X).max())
    if largest > limit:
        raise ValueError(
            f"{name} contains values up to {largest:.3g}, too large for {X.dtype} distances "
            f"(limit {limit:.3g} for {X.shape[1]} features); rescale {name} or use float64"
        )


def _scaled_tolerance(X, tol):
    """Make `tol` absolute: multiply it by the mean per-feature variance of X (float64)."""
    if tol == 0:
        return 0.0
    return float(np.mean(np.var(X, axis=0, dtype=np.float64))) * tol


def _warn_if_degenerate(labels, n_clusters):
    n_distinct = np.unique(labels).size
    if n_distinct < n_clusters:
        warnings.warn(
            f"found {n_distinct} distinct clusters, fewer than n_clusters={n_clusters}. X may have "
            "fewer distinct points than clusters, or max_iter stopped the fit before an empty "
            "cluster was refilled",
            ConvergenceWarning,
            stacklevel=3,
        )

"""fastml against scikit-learn's Lloyd k-means, on synthetic and real data."""

import numpy as np
import pytest

from fastml.datasets import load_digits, load_glove, make_blobs
from fastml.kmeans import KMeans, fit

sklearn_cluster = pytest.importorskip("sklearn.cluster", reason="scikit-learn is the reference")


def sklearn_fit(X, init, **params):
    model = sklearn_cluster.KMeans(len(init), init=init, n_init=1, algorithm="lloyd", **params)
    return model.fit(X)


def assert_same_clustering(result, reference, rtol):
    np.testing.assert_array_equal(result.labels, reference.labels_)
    np.testing.assert_allclose(result.centers, reference.cluster_centers_, rtol=rtol, atol=rtol)
    assert result.inertia == pytest.approx(reference.inertia_, rel=rtol)
    assert result.n_iter == reference.n_iter_


@pytest.mark.parametrize("tol", [0.0, 1e-4, 1e-2])
def test_blobs_with_same_init(backend, tol):
    X, _ = make_blobs(400, 4, centers=6, cluster_std=2.0, random_state=3)
    init = X[::67][:6].copy()
    assert_same_clustering(fit(X, 6, init=init, tol=tol, backend=backend), sklearn_fit(X, init, tol=tol), 1e-10)


def test_weighted_blobs(backend):
    X, _ = make_blobs(300, 3, centers=4, random_state=5)
    weights = np.random.default_rng(5).uniform(0.1, 3.0, size=len(X))
    init = X[:4].copy()
    result = fit(X, 4, init=init, sample_weight=weights, backend=backend)
    reference = sklearn_cluster.KMeans(4, init=init, n_init=1).fit(X, sample_weight=weights)
    assert_same_clustering(result, reference, 1e-10)


def test_digits(backend):
    X, _ = load_digits()
    init = X[:10].copy()
    assert_same_clustering(fit(X, 10, init=init, backend=backend), sklearn_fit(X, init), 1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_glove_slice(fast_backend, dtype):
    try:
        X = load_glove(5000, dtype=dtype)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    init = X[::250].copy()
    result = fit(X, len(init), init=init, max_iter=20, tol=0, backend=fast_backend)
    reference = sklearn_fit(X, init, max_iter=20, tol=0)
    # In float32 both sides score with float32 GEMMs that round differently: compare to 1e-5.
    assert_same_clustering(result, reference, 1e-5 if dtype == np.float32 else 1e-10)


def test_glove_slice_naive():
    try:
        X = load_glove(600, dtype=np.float64)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    init = X[::60].copy()
    assert_same_clustering(
        fit(X, 10, init=init, max_iter=10, tol=0, backend="naive"),
        sklearn_fit(X, init, max_iter=10, tol=0),
        1e-10,
    )


def test_estimator_matches_sklearn_estimator(backend):
    X, _ = make_blobs(200, 2, centers=3, random_state=0)
    init = X[:3].copy()
    ours = KMeans(3, init=init, n_init=1, backend=backend).fit(X)
    theirs = sklearn_cluster.KMeans(3, init=init, n_init=1).fit(X)

    np.testing.assert_array_equal(ours.labels_, theirs.labels_)
    np.testing.assert_allclose(ours.transform(X), theirs.transform(X), rtol=1e-10)
    assert ours.score(X) == pytest.approx(theirs.score(X), rel=1e-10)
    np.testing.assert_array_equal(ours.predict(X[::7]), theirs.predict(X[::7]))
    np.testing.assert_array_equal(ours.fit_predict(X), theirs.fit_predict(X))

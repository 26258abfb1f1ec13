"""Dtypes, layouts and invalid input, for every backend."""

import numpy as np
import pytest

from fastml.datasets import make_blobs
from fastml.kmeans import KMeans, assign, fit, kmeans_plusplus, predict


@pytest.fixture
def X():
    return make_blobs(60, 3, centers=3, random_state=0)[0]


def test_float32_stays_float32(backend, X):
    result = fit(X.astype(np.float32), 3, random_state=0, backend=backend)
    assert result.centers.dtype == np.float32
    assert result.labels.dtype == np.int32
    assert isinstance(result.inertia, float)


def test_integers_converted_before_squaring(backend):
    # Squared in int64, 3e9^2 would overflow; converted to float64 first, it does not.
    X = np.array([[0], [1], [3_000_000_000], [3_000_000_001]], dtype=np.int64)
    result = fit(X, 2, init=np.array([[0.0], [3e9]]), backend=backend)
    assert result.centers.dtype == np.float64
    np.testing.assert_array_equal(result.labels, [0, 0, 1, 1])
    assert result.inertia == pytest.approx(1.0)


def test_layouts_give_same_result(backend, X):
    expected = fit(X, 3, random_state=1, backend=backend)
    read_only = X.copy()
    read_only.flags.writeable = False
    strided = np.repeat(X, 2, axis=1)[:, ::2]
    for variant in (np.asfortranarray(X), read_only, strided):
        result = fit(variant, 3, random_state=1, backend=backend)
        np.testing.assert_array_equal(result.labels, expected.labels)
        np.testing.assert_array_equal(result.centers, expected.centers)


def test_input_not_modified(backend, X):
    original = X.copy()
    weights = np.ones(len(X))
    fit(X, 3, sample_weight=weights, random_state=0, backend=backend)
    np.testing.assert_array_equal(X, original)
    np.testing.assert_array_equal(weights, 1.0)


BAD_INPUT = [
    (dict(X=[[0.0, np.nan]] * 4), ValueError, r"X contains NaN or infinity"),
    (dict(X=[[0.0, np.inf]] * 4), ValueError, r"X contains NaN or infinity"),
    (dict(X=np.zeros((0, 2))), ValueError, r"X has 0 sample\(s\)"),
    (dict(X=[1.0, 2.0, 3.0]), ValueError, r"X must be 2-D"),
    (dict(n_clusters=0), ValueError, r"n_clusters must be >= 1, got 0"),
    (dict(n_clusters=7), ValueError, r"n_samples=6 should be >= n_clusters=7"),
    (dict(n_clusters=2.5), TypeError, r"n_clusters must be an int, got 2.5"),
    (dict(init=np.zeros((3, 2))), ValueError, r"init has shape \(3, 2\); expected \(n_clusters, n_features\) = \(2, 2\)"),
    (dict(init=[[0.0, np.nan], [1.0, 1.0]]), ValueError, r"init contains NaN"),
    (dict(init="kmeans"), ValueError, r"invalid init='kmeans'; expected one of \['k-means\+\+', 'random'\]"),
    (dict(sample_weight=[1, 1, 1, -1, 1, 1]), ValueError, r"sample_weight must be non-negative, got -1.0 at index 3"),
    (dict(sample_weight=[1, 1]), ValueError, r"sample_weight has shape \(2,\); expected \(6,\)"),
    (dict(X=np.full((6, 2), 1e20, np.float32)), ValueError, r"X contains values up to 1e\+20, too large for float32 distances"),
    (dict(max_iter=0), ValueError, r"max_iter must be >= 1, got 0"),
    (dict(tol=-1e-3), ValueError, r"tol must be >= 0.0, got -0.001"),
    (dict(n_init=0), ValueError, r"n_init must be >= 1, got 0"),
    (dict(random_state="seed"), TypeError, r"random_state must be None, an int or a numpy.random.Generator"),
    (dict(backend="gpu"), ValueError, r"invalid backend='gpu' for kmeans; expected 'auto' or one of"),
    (dict(init="random", sample_weight=[1, 0, 0, 0, 0, 0]), ValueError, r'init="random" needs n_clusters=2 samples of positive weight'),
]


@pytest.mark.parametrize("change, error, message", BAD_INPUT)
def test_bad_input_rejected(backend, change, error, message):
    arguments = dict(X=np.arange(12, dtype=np.float64).reshape(6, 2), n_clusters=2, backend=backend)
    arguments.update(change)
    X = arguments.pop("X")
    n_clusters = arguments.pop("n_clusters")
    with pytest.raises(error, match=message):
        fit(X, n_clusters, **arguments)


def test_explicit_init_with_n_init_warns(backend, X):
    with pytest.warns(RuntimeWarning, match="running once"):
        result = fit(X, 3, init=X[:3], n_init=5, backend=backend)
    assert result.n_iter >= 1


def test_predict_checks_feature_count(backend, X):
    with pytest.raises(ValueError, match="X has 2 features but centers have 3"):
        predict(X[:, :2], X[:3], backend=backend)
    with pytest.raises(ValueError, match="centers contains NaN"):
        assign(X, np.full((2, 3), np.nan), backend=backend)


def test_plusplus_rejects_too_many_clusters(backend, X):
    with pytest.raises(ValueError, match="n_clusters must be <= 60, got 61"):
        kmeans_plusplus(X, 61, backend=backend)


def test_estimator_rejects_elkan():
    with pytest.raises(ValueError, match=r"invalid algorithm='elkan'; expected one of \['lloyd'\]"):
        KMeans(2, algorithm="elkan").fit(np.zeros((4, 2)))

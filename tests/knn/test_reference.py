"""fastml against scikit-learn's brute-force neighbours, on random and real data."""

import numpy as np
import pytest

from fastml.knn import KNeighborsClassifier, kneighbors, predict, predict_proba

from .conftest import FAST_BACKENDS, METRICS

neighbors = pytest.importorskip("sklearn.neighbors")


def sklearn_kneighbors(X_train, X_query, k, metric):
    model = neighbors.NearestNeighbors(n_neighbors=k, algorithm="brute", metric=metric).fit(X_train)
    return model.kneighbors(X_query)


def assert_matches_sklearn(X_train, X_query, k, metric, backend, rtol):
    """Equal indices in every row whose k + 1 nearest distances are distinct, close distances."""
    distances, indices = kneighbors(X_train, X_query, k + 1, metric=metric, backend=backend)
    expected_distances, expected_indices = sklearn_kneighbors(X_train, X_query, k, metric)

    # Rows with a near-tie among the first k + 1 may legitimately differ in order or membership.
    scale = np.abs(distances).max()
    distinct = (np.diff(distances, axis=1) > rtol * scale).all(axis=1)
    assert distinct.mean() > 0.9, "the data has too many near-ties to test anything"
    np.testing.assert_array_equal(indices[distinct, :k], expected_indices[distinct])
    np.testing.assert_allclose(distances[:, :k], expected_distances, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_data(backend, metric, dtype):
    n_train, n_query = (300, 20) if backend == "naive" else (3000, 300)
    rng = np.random.default_rng(10)
    X_train = (rng.normal(size=(n_train, 16)) + 3).astype(dtype)
    X_query = (rng.normal(size=(n_query, 16)) + 3).astype(dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-9
    assert_matches_sklearn(X_train, X_query, 10, metric, backend, rtol)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_glove_vectors(glove, backend, metric):
    X_train, X_query = glove[:20_000], glove[20_000:20_500]
    assert_matches_sklearn(X_train, X_query, 10, metric, backend, rtol=1e-5)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_fashion_mnist_neighbours(fashion_mnist, backend):
    X_train, _, X_test, _ = fashion_mnist
    assert_matches_sklearn(X_train, X_test, 5, "euclidean", backend, rtol=1e-6)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_fashion_mnist_accuracy(fashion_mnist, backend, weights):
    X_train, y_train, X_test, y_test = fashion_mnist
    expected = neighbors.KNeighborsClassifier(5, weights=weights, algorithm="brute").fit(X_train, y_train)
    model = KNeighborsClassifier(5, weights=weights, backend=backend).fit(X_train, y_train)
    accuracy = model.score(X_test, y_test)
    assert accuracy == expected.score(X_test, y_test)
    assert accuracy > 0.8


@pytest.mark.slow
def test_full_fashion_mnist_accuracy():
    from fastml.datasets import load_fashion_mnist

    try:
        X_train, y_train = load_fashion_mnist("train")
        X_test, y_test = load_fashion_mnist("test")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    expected = neighbors.KNeighborsClassifier(5, algorithm="brute").fit(X_train, y_train)
    model = KNeighborsClassifier(5).fit(X_train, y_train)
    assert model.score(X_test, y_test) == expected.score(X_test, y_test)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("metric", METRICS)
def test_classification_matches_sklearn(backend, weights, metric):
    rng = np.random.default_rng(11)
    X_train = rng.normal(size=(200, 5))
    labels = rng.integers(0, 3, size=200)
    X_query = rng.normal(size=(50, 5))
    reference = neighbors.KNeighborsClassifier(7, weights=weights, metric=metric, algorithm="brute")
    reference.fit(X_train, labels)

    result = predict(X_train, labels, X_query, 7, weights=weights, metric=metric, backend=backend)
    np.testing.assert_array_equal(result, reference.predict(X_query))
    proba = predict_proba(X_train, labels, X_query, 7, weights=weights, metric=metric, backend=backend)
    np.testing.assert_allclose(proba, reference.predict_proba(X_query), rtol=1e-12)


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("metric", METRICS)
def test_regression_matches_sklearn(backend, weights, metric):
    rng = np.random.default_rng(12)
    X_train = rng.normal(size=(200, 5))
    targets = rng.normal(size=(200, 2))
    X_query = rng.normal(size=(50, 5))
    reference = neighbors.KNeighborsRegressor(7, weights=weights, metric=metric, algorithm="brute")
    reference.fit(X_train, targets)

    result = predict(X_train, targets, X_query, 7, task="regression", weights=weights, metric=metric, backend=backend)
    np.testing.assert_allclose(result, reference.predict(X_query), rtol=1e-12)

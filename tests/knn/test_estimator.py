"""The estimators: scikit-learn's estimator checks and the behaviour scikit-learn users rely on."""

import numpy as np
import pytest

from fastml.knn import KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors

estimator_checks = pytest.importorskip("sklearn.utils.estimator_checks")
sklearn_neighbors = pytest.importorskip("sklearn.neighbors")

# Checks the estimators cannot pass, with the reason: none. (The array API checks skip themselves
# unless SCIPY_ARRAY_API=1 is set.)
EXPECTED_FAILED_CHECKS = {}

ESTIMATORS = [
    cls(backend=backend)
    for cls in (NearestNeighbors, KNeighborsClassifier, KNeighborsRegressor)
    for backend in ("numpy", "cython")
]


@estimator_checks.parametrize_with_checks(
    ESTIMATORS, expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_kneighbors_without_X_leaves_each_sample_out(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    model = NearestNeighbors(n_neighbors=4, backend=backend).fit(X)
    expected = sklearn_neighbors.NearestNeighbors(n_neighbors=4, algorithm="brute").fit(X)

    distances, indices = model.kneighbors()
    expected_distances, expected_indices = expected.kneighbors()
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-12)
    assert not (indices == np.arange(30)[:, None]).any()


def test_kneighbors_without_X_and_duplicates(backend):
    # Rows 0 to 3 are equal. Row 3 finds 0, 1 and 2 before itself, so its first (row 0) is
    # left out in its place.
    X = np.array([[0.0], [0.0], [0.0], [0.0], [5.0], [9.0]])
    _, indices = NearestNeighbors(n_neighbors=2, backend=backend).fit(X).kneighbors()
    np.testing.assert_array_equal(indices, [[1, 2], [0, 2], [0, 1], [1, 2], [5, 0], [4, 0]])


def test_kneighbors_graph_matches_sklearn(backend):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(25, 4))
    query = rng.normal(size=(6, 4))
    model = NearestNeighbors(n_neighbors=3, backend=backend).fit(X)
    expected = sklearn_neighbors.NearestNeighbors(n_neighbors=3, algorithm="brute").fit(X)
    for mode in ("connectivity", "distance"):
        graph = model.kneighbors_graph(query, mode=mode).toarray()
        np.testing.assert_allclose(graph, expected.kneighbors_graph(query, mode=mode).toarray(), rtol=1e-12)


@pytest.mark.parametrize(
    ("metric", "p", "expected"),
    [
        ("minkowski", 2, "euclidean"),
        ("minkowski", 1, "manhattan"),
        ("l2", 2, "euclidean"),
        ("cityblock", 2, "manhattan"),
        ("l1", 2, "manhattan"),
        ("cosine", 2, "cosine"),
        ("sqeuclidean", 2, "sqeuclidean"),
    ],
)
def test_effective_metric(metric, p, expected):
    model = NearestNeighbors(metric=metric, p=p).fit(np.zeros((6, 2)))
    assert model.effective_metric_ == expected
    assert model.effective_metric_params_ == {}


def test_unsupported_minkowski_power():
    with pytest.raises(ValueError, match=r"invalid p=3 for metric='minkowski'; only p=1 and p=2 are supported"):
        NearestNeighbors(p=3).fit(np.zeros((6, 2)))


def test_unknown_metric_name():
    with pytest.raises(ValueError, match=r"invalid metric='hamming'; expected one of \['minkowski', 'euclidean'"):
        KNeighborsClassifier(metric="hamming").fit(np.zeros((6, 2)), np.zeros(6))


def test_too_many_neighbours():
    model = NearestNeighbors(n_neighbors=3).fit(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"Expected n_neighbors <= n_samples_fit, but n_neighbors = 5, n_samples_fit = 4"):
        model.kneighbors(np.zeros((1, 2)), n_neighbors=5)
    with pytest.raises(ValueError, match=r"Expected n_neighbors < n_samples_fit when X is None.*n_neighbors = 4, n_samples_fit = 4"):
        model.kneighbors(n_neighbors=4)


def test_invalid_n_neighbors():
    with pytest.raises(ValueError, match=r"n_neighbors must be >= 1, got 0"):
        NearestNeighbors(n_neighbors=0).fit(np.zeros((4, 2)))


def test_continuous_labels_rejected():
    with pytest.raises(ValueError, match=r"Unknown label type: continuous\. KNeighborsClassifier needs class labels"):
        KNeighborsClassifier().fit(np.zeros((6, 2)), np.linspace(0, 1, 6))


def test_fitted_attributes():
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    model = KNeighborsClassifier(n_neighbors=2).fit(X, ["b", "a", "c", "a", "b", "c"])
    np.testing.assert_array_equal(model.classes_, ["a", "b", "c"])
    assert model.n_samples_fit_ == 6
    assert model.n_features_in_ == 2
    assert model.effective_metric_ == "euclidean"
    assert model.kneighbors(X[:1])[0].dtype == np.float32


def test_regressor_with_two_outputs(backend):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 3))
    y = rng.normal(size=(40, 2))
    query = rng.normal(size=(5, 3))
    model = KNeighborsRegressor(4, weights="distance", backend=backend).fit(X, y)
    expected = sklearn_neighbors.KNeighborsRegressor(4, weights="distance", algorithm="brute").fit(X, y)
    np.testing.assert_allclose(model.predict(query), expected.predict(query), rtol=1e-12)
    assert model.score(query, expected.predict(query)) == pytest.approx(1.0)


def test_regressor_score_matches_sklearn():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 3))
    y = X @ [1.0, -2.0, 0.5] + rng.normal(scale=0.1, size=60)
    model = KNeighborsRegressor(5).fit(X[:40], y[:40])
    expected = sklearn_neighbors.KNeighborsRegressor(5, algorithm="brute").fit(X[:40], y[:40])
    assert model.score(X[40:], y[40:]) == pytest.approx(expected.score(X[40:], y[40:]), rel=1e-12)


def test_float64_query_on_float32_fit(backend):
    rng = np.random.default_rng(4)
    X = rng.normal(size=(50, 3)).astype(np.float32)
    query = rng.normal(size=(4, 3))
    model = NearestNeighbors(n_neighbors=3, backend=backend).fit(X)
    distances, indices = model.kneighbors(query)
    expected_distances, expected_indices = NearestNeighbors(n_neighbors=3, backend=backend).fit(
        X.astype(np.float64)
    ).kneighbors(query)
    assert distances.dtype == np.float64
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(distances, expected_distances)


def test_overflowing_values_rejected_at_fit():
    X = np.zeros((5, 2))
    X[1, 1] = 1e200
    with pytest.raises(ValueError, match=r"X has a value of magnitude 1e\+200, above 4.74e\+153"):
        NearestNeighbors().fit(X)

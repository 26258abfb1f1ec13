"""KMeans against scikit-learn's estimator checks."""

import numpy as np
import pytest

from fastml.kmeans import KMeans

estimator_checks = pytest.importorskip("sklearn.utils.estimator_checks")

# Checks KMeans cannot pass, with the reason; every other check must pass.
EXPECTED_FAILED_CHECKS = {
    # Repeating a sample changes n, so k-means++ consumes its random draws differently and may
    # start from other centers than the weighted fit: the two fits need not agree. scikit-learn
    # marks its own KMeans the same way.
    "check_sample_weight_equivalence_on_dense_data": "k-means++ draws depend on n_samples",
}


@estimator_checks.parametrize_with_checks(
    [KMeans(n_clusters=3, backend="numpy"), KMeans(n_clusters=3, backend="cython")],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_unfitted_estimator_raises():
    with pytest.raises(ValueError, match="this KMeans instance is not fitted yet"):
        KMeans().predict(np.zeros((2, 2)))


def test_feature_count_checked_after_fit():
    model = KMeans(2, random_state=0).fit(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(ValueError, match="X has 2 features, but KMeans is expecting 3 features as input"):
        model.predict(np.zeros((4, 2)))


def test_get_set_params_round_trip():
    model = KMeans(4, backend="naive")
    assert model.get_params()["backend"] == "naive"
    assert model.set_params(n_clusters=5).n_clusters == 5

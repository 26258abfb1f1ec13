"""Tiny inputs whose clustering is computed by hand."""

import numpy as np
import pytest

from fastml import ConvergenceWarning
from fastml.kmeans import assign, fit, kmeans_plusplus, predict


def test_two_pairs(backend):
    X = np.array([[0.0], [1.0], [10.0], [11.0]])
    result = fit(X, 2, init=np.array([[0.0], [10.0]]), tol=0, backend=backend)

    np.testing.assert_array_equal(result.labels, [0, 0, 1, 1])
    np.testing.assert_array_equal(result.centers, [[0.5], [10.5]])
    assert result.inertia == 1.0
    # Iteration 1 moves the centers. Iteration 2 computes the same labels, so the fit stops.
    assert result.n_iter == 2


def test_equidistant_sample_goes_to_lower_index(backend):
    centers = np.array([[10.0, 0.0], [0.0, 0.0], [-10.0, 0.0]])
    X = np.array([[5.0, 0.0], [-5.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(predict(X, centers, backend=backend), [0, 1, 1])


def test_identical_centers_tie_to_first(backend):
    centers = np.array([[1.0, 1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(predict(np.array([[0.0, 3.0]]), centers, backend=backend), [0])


def test_empty_cluster_moves_to_farthest_sample(backend):
    X = np.array([[0.0], [1.0], [2.0], [100.0]])
    # No sample is nearest to 1000, so cluster 2 starts empty. The sample farthest from its own
    # center is 100 (distance 100 to center 0), and cluster 2 restarts there.
    init = np.array([[0.0], [0.5], [1000.0]])
    result = fit(X, 3, init=init, tol=0, backend=backend)

    np.testing.assert_array_equal(result.centers, [[0.0], [1.5], [100.0]])
    np.testing.assert_array_equal(result.labels, [0, 1, 1, 2])
    assert result.inertia == 0.5
    # Iteration 2 assigns 100 to cluster 2 and leaves every center where it was: shift 0 <= tol.
    assert result.n_iter == 2


def test_labels_belong_to_centers_after_relocation_stop(backend):
    # max_iter=1 stops right after a relocation: labels and inertia must be recomputed.
    X = np.array([[0.0], [1.0], [2.0], [100.0]])
    result = fit(X, 3, init=np.array([[0.0], [0.5], [1000.0]]), max_iter=1, backend=backend)

    labels, inertia = assign(X, result.centers, backend="naive")
    np.testing.assert_array_equal(result.labels, labels)
    assert result.inertia == pytest.approx(inertia)
    assert result.n_iter == 1


def test_weights_pull_centers(backend):
    X = np.array([[0.0], [4.0]])
    result = fit(X, 1, init=np.array([[1.0]]), sample_weight=[3.0, 1.0], backend=backend)
    np.testing.assert_array_equal(result.centers, [[1.0]])
    assert result.inertia == 3 * 1.0 + 1 * 9.0


def test_zero_weight_samples_ignored_by_centers(backend):
    X = np.array([[0.0], [2.0], [50.0]])
    result = fit(X, 1, init=np.array([[0.0]]), sample_weight=[1.0, 1.0, 0.0], backend=backend)
    np.testing.assert_array_equal(result.centers, [[1.0]])


def test_more_clusters_than_distinct_points_warns(backend):
    X = np.array([[0.0, 0.0]] * 5 + [[1.0, 1.0]] * 3)
    with pytest.warns(ConvergenceWarning, match="found 2 distinct clusters, fewer than n_clusters=3"):
        result = fit(X, 3, random_state=0, backend=backend)
    assert np.isfinite(result.centers).all()
    assert result.inertia == 0.0


def test_plusplus_never_picks_zero_distance_point(backend):
    # 50 copies of one point and a single other point: whichever comes first, the second center
    # must be the other kind, because the copies are at distance zero from the first center.
    X = np.array([[0.0, 0.0]] * 50 + [[3.0, 4.0]])
    for seed in range(20):
        centers, indices = kmeans_plusplus(X, 2, random_state=seed, backend=backend)
        assert len(set(map(tuple, centers))) == 2, (seed, indices)


def test_plusplus_skips_zero_weight_samples(backend):
    X = np.arange(10, dtype=np.float64).reshape(5, 2)
    weights = [0.0, 1.0, 0.0, 1.0, 0.0]
    for seed in range(10):
        _, indices = kmeans_plusplus(X, 2, sample_weight=weights, random_state=seed, backend=backend)
        assert sorted(indices) == [1, 3]


def test_single_cluster_is_the_weighted_mean(backend):
    X = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]])
    result = fit(X, 1, random_state=0, backend=backend)
    np.testing.assert_allclose(result.centers, [[3.0, 3.0]])

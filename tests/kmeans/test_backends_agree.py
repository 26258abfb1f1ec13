"""Every optimized backend against the naive one, on random inputs."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fastml
from fastml.datasets import load_glove, make_blobs
from fastml.kmeans import assign, fit, kmeans_plusplus

from .conftest import FAST_BACKENDS


@st.composite
def integer_points_and_centers(draw):
    """Small integers: every distance is exact in any summation order, and ties are common."""
    n_features = draw(st.integers(1, 4))
    elements = st.integers(-4, 4).map(float)
    X = draw(arrays(np.float64, (draw(st.integers(1, 40)), n_features), elements=elements))
    centers = draw(arrays(np.float64, (draw(st.integers(1, 6)), n_features), elements=elements))
    return X, centers


@st.composite
def continuous_problems(draw):
    """Gaussian data from a seed: distances have no exact ties."""
    seed = draw(st.integers(0, 2**32 - 1))
    n_samples = draw(st.integers(1, 80))
    n_features = draw(st.integers(1, 5))
    n_clusters = draw(st.integers(1, min(n_samples, 8)))
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, n_features)) * rng.uniform(0.1, 100)
    weights = rng.uniform(0, 2, size=n_samples) if draw(st.booleans()) else None
    return X, n_clusters, weights, seed


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@given(problem=integer_points_and_centers())
def test_assignment_matches_naive_including_ties(backend, problem):
    X, centers = problem
    expected_labels, expected_inertia = assign(X, centers, backend="naive")
    labels, inertia = assign(X, centers, backend=backend)
    np.testing.assert_array_equal(labels, expected_labels)
    assert inertia == expected_inertia


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@given(problem=continuous_problems(), init=st.sampled_from(["k-means++", "random"]))
def test_fit_matches_naive(backend, problem, init):
    X, n_clusters, weights, seed = problem
    arguments = dict(init=init, n_init=2, sample_weight=weights, random_state=seed, max_iter=50)
    expected = fit(X, n_clusters, backend="naive", **arguments)
    result = fit(X, n_clusters, backend=backend, **arguments)

    np.testing.assert_array_equal(result.labels, expected.labels)
    np.testing.assert_allclose(result.centers, expected.centers, rtol=1e-9, atol=1e-9)
    assert result.inertia == pytest.approx(expected.inertia, rel=1e-9, abs=1e-9)
    assert result.n_iter == expected.n_iter


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@given(problem=continuous_problems())
def test_plusplus_matches_naive(backend, problem):
    X, n_clusters, weights, seed = problem
    _, expected = kmeans_plusplus(X, n_clusters, sample_weight=weights, random_state=seed, backend="naive")
    _, indices = kmeans_plusplus(X, n_clusters, sample_weight=weights, random_state=seed, backend=backend)
    np.testing.assert_array_equal(indices, expected)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("seed", range(5))
def test_float32_fit_matches_naive(backend, seed):
    # Well-separated blobs: float32 rounding cannot move a sample to another cluster.
    X, _ = make_blobs(500, 6, centers=5, cluster_std=0.5, dtype=np.float32, random_state=seed)
    expected = fit(X, 5, random_state=seed, backend="naive")
    result = fit(X, 5, random_state=seed, backend=backend)

    np.testing.assert_array_equal(result.labels, expected.labels)
    np.testing.assert_allclose(result.centers, expected.centers, rtol=1e-5, atol=1e-5)
    assert result.inertia == pytest.approx(expected.inertia, rel=1e-5)


@pytest.mark.parametrize("backend", ["numba", "cython"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_result_with_one_and_two_threads(backend, dtype):
    # Large enough for several parallel row blocks; the blocks do not depend on the thread count,
    # so the result is bitwise identical.
    try:
        X = load_glove(20_000, dtype=dtype)
    except FileNotFoundError:
        X, _ = make_blobs(20_000, 50, centers=30, dtype=dtype, random_state=0)
    results = []
    for n_threads in (1, 2):
        with fastml.num_threads(n_threads):
            results.append(fit(X, 30, random_state=0, max_iter=30, backend=backend))
    np.testing.assert_array_equal(results[0].labels, results[1].labels)
    np.testing.assert_array_equal(results[0].centers, results[1].centers)
    assert results[0].inertia == results[1].inertia

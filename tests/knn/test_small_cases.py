"""Hand-computed cases, on every backend: distances, tie order and the documented semantics."""

import math

import numpy as np
import pytest

from fastml.knn import kneighbors

from .conftest import FAST_BACKENDS, METRICS, module_of, random_problem

LINE = np.array([[0.0], [1.0], [3.0], [6.0]])


@pytest.mark.parametrize(
    ("metric", "expected_distances"),
    [("euclidean", [1.0, 1.0, 2.0]), ("sqeuclidean", [1.0, 1.0, 4.0]), ("manhattan", [1.0, 1.0, 2.0])],
)
def test_points_on_a_line(backend, metric, expected_distances):
    # From 2, rows 1 and 2 are both at distance 1: the lower index comes first.
    distances, indices = kneighbors(LINE, [[2.0]], 3, metric=metric, backend=backend)
    np.testing.assert_array_equal(indices, [[1, 2, 0]])
    np.testing.assert_array_equal(distances, [expected_distances])


@pytest.mark.parametrize(
    ("metric", "expected_indices", "expected_distances"),
    [
        ("euclidean", [0, 2, 3, 1], [0.0, 1.0, 2.0, 5.0]),
        ("sqeuclidean", [0, 2, 3, 1], [0.0, 1.0, 4.0, 25.0]),
        ("manhattan", [0, 2, 3, 1], [0.0, 1.0, 2.0, 7.0]),
    ],
)
def test_points_in_a_plane(backend, metric, expected_indices, expected_distances):
    X_train = [[0, 0], [3, 4], [1, 0], [0, 2]]
    distances, indices = kneighbors(X_train, [[0, 0]], 4, metric=metric, backend=backend)
    np.testing.assert_array_equal(indices, [expected_indices])
    np.testing.assert_array_equal(distances, [expected_distances])


def test_cosine_distances(backend):
    X_train = [[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    distances, indices = kneighbors(X_train, [[2.0, 0.0]], 5, metric="cosine", backend=backend)

    # Row 1 (orthogonal) and row 4 (all zero) are both at exactly 1.0: ascending index.
    np.testing.assert_array_equal(indices, [[0, 3, 1, 4, 2]])
    np.testing.assert_allclose(distances, [[0.0, 1.0 - 1.0 / math.sqrt(2.0), 1.0, 1.0, 2.0]], rtol=1e-15)


def test_cosine_from_zero_query_is_one(backend):
    X_train = np.random.default_rng(0).normal(size=(30, 4))
    distances, indices = kneighbors(X_train, np.zeros((2, 4)), 5, metric="cosine", backend=backend)
    np.testing.assert_array_equal(distances, np.ones((2, 5)))
    np.testing.assert_array_equal(indices, [[0, 1, 2, 3, 4]] * 2)


@pytest.mark.parametrize("metric", METRICS)
def test_duplicates_in_index_order(backend, metric):
    rng = np.random.default_rng(1)
    X_train = rng.normal(size=(20, 3))
    X_train[[4, 9, 13, 17]] = X_train[2]
    distances, indices = kneighbors(X_train, X_train[[2]] + 0.01, 5, metric=metric, backend=backend)
    np.testing.assert_array_equal(indices[0, :5], [2, 4, 9, 13, 17])
    assert np.unique(distances[0, :5]).size == 1


def test_k_equal_to_n_train_returns_everything_sorted(backend):
    X_train, X_query = random_problem(25, 3, 4)
    distances, indices = kneighbors(X_train, X_query, 25, backend=backend)
    for row in range(3):
        np.testing.assert_array_equal(np.sort(indices[row]), np.arange(25))
        assert (np.diff(distances[row]) >= 0).all()


def test_empty_query_gives_empty_arrays(backend):
    X_train, _ = random_problem(10, 1, 3, dtype=np.float32)
    distances, indices = kneighbors(X_train, np.empty((0, 3), np.float32), 4, backend=backend)
    assert distances.shape == (0, 4)
    assert indices.shape == (0, 4)
    assert distances.dtype == np.float32
    assert indices.dtype == np.intp


@pytest.mark.parametrize(
    ("train_dtype", "query_dtype", "expected"),
    [
        (np.float32, np.float32, np.float32),
        (np.float64, np.float64, np.float64),
        (np.float32, np.float64, np.float64),
        (np.int64, np.int64, np.float64),
        (np.int32, np.float32, np.float64),
    ],
)
def test_distance_dtype(backend, train_dtype, query_dtype, expected):
    X_train = np.arange(12).reshape(6, 2).astype(train_dtype)
    X_query = np.array([[1, 2]], dtype=query_dtype)
    distances, indices = kneighbors(X_train, X_query, 2, metric="sqeuclidean", backend=backend)
    assert distances.dtype == expected
    np.testing.assert_array_equal(distances, [[2.0, 2.0]])
    np.testing.assert_array_equal(indices, [[0, 1]])


def test_integer_input_equals_float64_input(backend):
    rng = np.random.default_rng(2)
    X_train = rng.integers(-50, 50, size=(40, 5))
    X_query = rng.integers(-50, 50, size=(6, 5))
    expected = kneighbors(X_train.astype(np.float64), X_query.astype(np.float64), 7, backend=backend)
    result = kneighbors(X_train, X_query, 7, backend=backend)
    np.testing.assert_array_equal(result[0], expected[0])
    np.testing.assert_array_equal(result[1], expected[1])


@pytest.mark.parametrize("layout", ["strided", "fortran", "read-only"])
def test_any_memory_layout_gives_same_result(backend, layout):
    X_train, X_query = random_problem(60, 8, 6, dtype=np.float32, seed=3)
    expected = kneighbors(X_train, X_query, 5, backend=backend)

    if layout == "strided":
        wide_train = np.zeros((60, 12), np.float32)
        wide_train[:, ::2] = X_train
        wide_query = np.zeros((8, 12), np.float32)
        wide_query[:, ::2] = X_query
        X_train, X_query = wide_train[:, ::2], wide_query[:, ::2]
    elif layout == "fortran":
        X_train, X_query = np.asfortranarray(X_train), np.asfortranarray(X_query)
    else:
        X_train.flags.writeable = False
        X_query.flags.writeable = False
    result = kneighbors(X_train, X_query, 5, backend=backend)
    np.testing.assert_array_equal(result[0], expected[0])
    np.testing.assert_array_equal(result[1], expected[1])


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
def test_float32_cancellation_loses_no_neighbour(backend, metric):
    # Points near (10^4, ..., 10^4): ||x||^2 is about 1.6e9, where float32 steps by 128, while
    # the squared distances are below 1. The product form ranks them almost at random.
    rng = np.random.default_rng(4)
    offset = np.float32(1e4)
    X_train = (offset + rng.normal(scale=0.05, size=(200, 16))).astype(np.float32)
    X_query = (offset + rng.normal(scale=0.05, size=(5, 16))).astype(np.float32)
    distances, indices = kneighbors(X_train, X_query, 4, metric=metric, backend=backend)

    # An independent float64 brute force.
    diff = X_query[:, None, :].astype(np.float64) - X_train[None, :, :].astype(np.float64)
    exact = (diff**2).sum(axis=2)
    np.testing.assert_array_equal(indices, np.argsort(exact, axis=1, kind="stable")[:, :4])
    expected = np.sort(exact, axis=1)[:, :4]
    np.testing.assert_allclose(distances, np.sqrt(expected) if metric == "euclidean" else expected, rtol=1e-6)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_cancellation_is_caught_by_the_certificate(backend):
    rng = np.random.default_rng(4)
    X_train = (np.float32(1e4) + rng.normal(scale=0.05, size=(200, 16))).astype(np.float32)
    X_query = (np.float32(1e4) + rng.normal(scale=0.05, size=(5, 16))).astype(np.float32)
    _, _, n_full_scans = module_of(backend).search(X_train, X_query, 4, "euclidean", 2)
    assert n_full_scans == 5


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean", "cosine"])
def test_well_conditioned_data_needs_no_full_scan(backend, metric):
    X_train, X_query = random_problem(3000, 200, 16, dtype=np.float32, seed=5)
    _, _, n_full_scans = module_of(backend).search(X_train, X_query, 10, metric, 2)
    assert n_full_scans == 0


def test_large_float32_values_stay_exact(backend):
    # Squared norms near 1e38 overflow float32 scores; the fast backends score in float64.
    rng = np.random.default_rng(6)
    X_train = (rng.normal(size=(50, 4)) * 4e18).astype(np.float32)
    X_query = (rng.normal(size=(3, 4)) * 4e18).astype(np.float32)
    distances, indices = kneighbors(X_train, X_query, 3, metric="sqeuclidean", backend=backend)
    expected_distances, expected_indices = kneighbors(X_train, X_query, 3, metric="sqeuclidean", backend="naive")
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(distances, expected_distances)
    assert np.isfinite(distances).all()

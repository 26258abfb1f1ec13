"""Distributed kNN against the single-machine search, scikit-learn, and a killed worker."""

import pytest

pytest.importorskip("dask.array", reason="needs the distributed extra: pip install 'fastml[distributed]'")
pytest.importorskip("distributed", reason="needs the distributed extra: pip install 'fastml[distributed]'")

import dask.array as da
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fastml import knn
from fastml.backends import available_backends
from fastml.distributed import kneighbors, read_npy

SEARCH_BACKENDS = tuple(b for b in available_backends("knn") if b != "naive")
METRICS = ("euclidean", "sqeuclidean", "cosine", "manhattan")


def gaussian(n_rows, n_features=6, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal((n_rows, n_features)).astype(dtype)


def chunked(X, rows):
    return da.from_array(X, chunks=(rows, -1))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equals_single_machine(client, metric, dtype):
    train, queries = gaussian(2000, dtype=dtype), gaussian(150, dtype=dtype, seed=1)
    expected = knn.kneighbors(train, queries, 7, metric=metric)
    distances, indices = kneighbors(chunked(train, 333), queries, 7, metric=metric, client=client)

    np.testing.assert_array_equal(indices, expected[1])
    np.testing.assert_array_equal(distances, expected[0])
    assert distances.dtype == dtype


@pytest.mark.parametrize("backend", SEARCH_BACKENDS)
def test_ties_go_to_lower_global_index(client, backend):
    # Rows repeat every 10 rows, so each query has many training rows at one distance, spread
    # over all chunks. The neighbours must be the lowest global indices among them.
    base = np.random.default_rng(2).integers(-3, 4, size=(10, 3)).astype(np.float64)
    train = np.tile(base, (60, 1))
    queries = base[:4] + 0.25
    expected = knn.kneighbors(train, queries, 12, backend=backend)
    distances, indices = kneighbors(chunked(train, 70), queries, 12, backend=backend, client=client)

    np.testing.assert_array_equal(indices, expected[1])
    np.testing.assert_array_equal(distances, expected[0])
    for row in range(queries.shape[0]):
        same = distances[row] == distances[row, 0]
        assert (np.diff(indices[row][same]) > 0).all()


def test_k_larger_than_a_chunk(client):
    train, queries = gaussian(100), gaussian(20, seed=3)
    expected = knn.kneighbors(train, queries, 30)
    distances, indices = kneighbors(chunked(train, 8), queries, 30, client=client)

    np.testing.assert_array_equal(indices, expected[1])


def test_mixed_dtypes_compute_in_float64(client):
    train, queries = gaussian(500, dtype=np.float32), gaussian(30, seed=4)
    expected = knn.kneighbors(train, queries, 5)
    distances, indices = kneighbors(chunked(train, 128), queries, 5, client=client)

    assert distances.dtype == np.float64
    np.testing.assert_array_equal(indices, expected[1])


def test_distances_match_sklearn(client):
    neighbors = pytest.importorskip("sklearn.neighbors", reason="scikit-learn is the reference")
    train, queries = gaussian(1500, seed=5), gaussian(100, seed=6)
    reference = neighbors.NearestNeighbors(n_neighbors=5, algorithm="brute").fit(train)
    expected_distances, expected_indices = reference.kneighbors(queries)
    distances, indices = kneighbors(chunked(train, 400), queries, 5, client=client)

    # Gaussian data has no ties, so the order is unique.
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(distances, expected_distances, rtol=1e-10)


def test_empty_queries(client):
    distances, indices = kneighbors(chunked(gaussian(50), 10), np.empty((0, 6)), 3, client=client)
    assert distances.shape == (0, 3)
    assert indices.shape == (0, 3)


def test_memory_mapped_npy(client, tmp_path):
    train, queries = gaussian(3000, dtype=np.float32, seed=7), gaussian(40, dtype=np.float32, seed=8)
    np.save(tmp_path / "train.npy", train)
    expected = knn.kneighbors(train, queries, 4)
    distances, indices = kneighbors(read_npy(tmp_path / "train.npy", 512), queries, 4, client=client)

    np.testing.assert_array_equal(indices, expected[1])


@st.composite
def integer_problems(draw):
    """Draw ``(train, queries, k, rows per chunk)`` of small integers, where ties are common."""
    n_train = draw(st.integers(1, 40))
    n_features = draw(st.integers(1, 3))
    size = (n_train + 5) * n_features
    values = draw(st.lists(st.integers(-3, 3), min_size=size, max_size=size))
    points = np.array(values, dtype=np.float64).reshape(n_train + 5, n_features)
    k = draw(st.integers(1, n_train))
    rows = draw(st.integers(1, n_train))
    return points[:n_train], points[n_train:], k, rows


# Hypothesis warns when the `random` module changes state during a draw. The LocalCluster's
# scheduler and client run in this process on their own thread and use it (worker choice,
# connection back-off) while the examples are drawn.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module:hypothesis.errors.HypothesisDeprecationWarning")
@settings(max_examples=10)
@given(problem=integer_problems(), metric=st.sampled_from(METRICS))
def test_small_integer_data_equals_naive(client, problem, metric):
    train, queries, k, rows = problem
    expected = knn.kneighbors(train, queries, k, metric=metric, backend="naive")
    distances, indices = kneighbors(chunked(train, rows), queries, k, metric=metric, client=client)
    np.testing.assert_array_equal(indices, expected[1])
    np.testing.assert_array_equal(distances, expected[0])


def test_worker_killed_mid_query(client, run_killing_a_worker):
    train, queries = gaussian(40_000, n_features=16, seed=9), gaussian(400, n_features=16, seed=10)
    expected = knn.kneighbors(train, queries, 10)

    result, killed = run_killing_a_worker(
        client, lambda: kneighbors(chunked(train, 2500), queries, 10, client=client), "_search_chunk"
    )
    assert killed
    np.testing.assert_array_equal(result[1], expected[1])
    np.testing.assert_array_equal(result[0], expected[0])

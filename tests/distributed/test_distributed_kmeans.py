"""Distributed k-means against the single-machine fit, scikit-learn, and a killed worker."""

import pytest

pytest.importorskip("dask.array", reason="needs the distributed extra: pip install 'fastml[distributed]'")
pytest.importorskip("distributed", reason="needs the distributed extra: pip install 'fastml[distributed]'")

import warnings

import dask.array as da
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fastml import kmeans
from fastml.backends import available_backends
from fastml.datasets import make_blobs
from fastml.distributed import fit_kmeans, read_npy
from fastml.exceptions import ConvergenceWarning

CHUNK_BACKENDS = tuple(b for b in available_backends("kmeans") if b != "naive")


def blobs(n_samples=3000, n_features=5, centers=6, dtype=np.float64, seed=0):
    X, _ = make_blobs(n_samples, n_features, centers=centers, dtype=dtype, random_state=seed)
    return X


def chunked(X, rows):
    return da.from_array(X, chunks=(rows, -1))


def first_rows(X, n_clusters):
    return X[:n_clusters].copy()


@pytest.mark.parametrize("backend", CHUNK_BACKENDS)
@pytest.mark.parametrize("rows", [700, 257])
def test_labels_equal_single_machine(client, backend, rows):
    X = blobs()
    init = first_rows(X, 6)
    expected = kmeans.fit(X, 6, init=init, backend=backend)
    result = fit_kmeans(chunked(X, rows), 6, init=init, backend=backend, client=client)

    np.testing.assert_array_equal(result.labels, expected.labels)
    assert result.n_iter == expected.n_iter
    np.testing.assert_allclose(result.centers, expected.centers, rtol=1e-12, atol=1e-12)
    assert result.inertia == pytest.approx(expected.inertia, rel=1e-12)


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_seeded_init_equals_single_machine(client, init):
    # With n_samples <= init_sample_size, the k-means++ sample is the whole data set.
    X = blobs(seed=1)
    expected = kmeans.fit(X, 6, init=init, n_init=3, random_state=7)
    result = fit_kmeans(chunked(X, 500), 6, init=init, n_init=3, random_state=7, client=client)

    np.testing.assert_array_equal(result.labels, expected.labels)
    np.testing.assert_allclose(result.centers, expected.centers, rtol=1e-12)


def test_sample_init_is_plusplus_on_seeded_sample(client):
    X = blobs(n_samples=4000, seed=2)
    result = fit_kmeans(chunked(X, 1000), 6, init_sample_size=500, random_state=3, client=client)

    # The documented draw: 500 distinct rows in ascending order, then k-means++ on them, one rng.
    rng = np.random.default_rng(3)
    rows = np.sort(rng.choice(X.shape[0], size=500, replace=False))
    init, _ = kmeans.kmeans_plusplus(X[rows], 6, random_state=rng)
    expected = kmeans.fit(X, 6, init=init)
    np.testing.assert_array_equal(result.labels, expected.labels)


def test_weighted_sample_init_draws_positive_rows(client):
    X = blobs(n_samples=3000, seed=10)
    weights = np.random.default_rng(1).integers(0, 3, size=X.shape[0]).astype(np.float64)
    result = fit_kmeans(
        chunked(X, 700), 6, sample_weight=weights, init_sample_size=400, random_state=4,
        client=client,
    )

    rng = np.random.default_rng(4)
    rows = np.sort(rng.choice(np.flatnonzero(weights > 0), size=400, replace=False))
    init, _ = kmeans.kmeans_plusplus(X[rows], 6, sample_weight=weights[rows], random_state=rng)
    expected = kmeans.fit(X, 6, init=init, sample_weight=weights)
    np.testing.assert_array_equal(result.labels, expected.labels)


def test_random_init_needs_positive_weights(client):
    weights = np.zeros(100)
    weights[:2] = 1.0
    with pytest.raises(ValueError, match=r'init="random" needs n_clusters=3 samples of positive weight, but sample_weight has 2'):
        fit_kmeans(chunked(blobs(n_samples=100), 30), 3, init="random", sample_weight=weights, client=client)


def test_labels_equal_sklearn_from_same_init(client):
    sklearn_cluster = pytest.importorskip("sklearn.cluster", reason="scikit-learn is the reference")
    X = blobs(n_samples=2000, centers=4, seed=3)
    init = X[[0, 500, 1000, 1500]].copy()
    result = fit_kmeans(chunked(X, 300), 4, init=init, tol=0, client=client)
    reference = sklearn_cluster.KMeans(4, init=init, n_init=1, tol=0, algorithm="lloyd").fit(X)

    np.testing.assert_array_equal(result.labels, reference.labels_)
    np.testing.assert_allclose(result.centers, reference.cluster_centers_, rtol=1e-10)
    assert result.inertia == pytest.approx(reference.inertia_, rel=1e-10)


def test_empty_cluster_is_relocated_as_single_machine(client):
    X = blobs(n_samples=1200, centers=3, seed=4)
    # The fourth center is far from every sample, so it gets none in the first iteration.
    init = np.vstack([X[:3], np.full((1, X.shape[1]), 1e3)])
    expected = kmeans.fit(X, 4, init=init)
    result = fit_kmeans(chunked(X, 250), 4, init=init, client=client)

    np.testing.assert_array_equal(result.labels, expected.labels)
    assert np.unique(result.labels).size == 4


def test_sample_weight_equals_single_machine(client):
    X = blobs(n_samples=1500, seed=5)
    weights = np.random.default_rng(0).integers(0, 4, size=X.shape[0]).astype(np.float64)
    init = X[weights > 0][:6].copy()
    expected = kmeans.fit(X, 6, init=init, sample_weight=weights)
    result = fit_kmeans(
        chunked(X, 400), 6, init=init, sample_weight=da.from_array(weights, chunks=300), client=client
    )

    np.testing.assert_array_equal(result.labels, expected.labels)
    assert result.inertia == pytest.approx(expected.inertia, rel=1e-12)


def test_float32_stays_float32(client):
    X = blobs(dtype=np.float32, seed=6)
    result = fit_kmeans(chunked(X, 1000), 6, init=first_rows(X, 6), client=client)
    expected = kmeans.fit(X, 6, init=first_rows(X, 6))

    assert result.centers.dtype == np.float32
    np.testing.assert_array_equal(result.labels, expected.labels)


def test_numpy_input_is_split_in_chunks(client):
    X = blobs(seed=7)
    init = first_rows(X, 6)
    result = fit_kmeans(X, 6, init=init, chunk_rows=512, client=client)
    np.testing.assert_array_equal(result.labels, kmeans.fit(X, 6, init=init).labels)


def test_memory_mapped_npy_equals_in_memory(client, tmp_path):
    X = blobs(n_samples=5000, seed=8)
    path = tmp_path / "X.npy"
    np.save(path, X)
    data = read_npy(path, chunk_rows=600)

    assert data.chunks[0][0] == 600
    init = first_rows(X, 6)
    result = fit_kmeans(data, 6, init=init, client=client)
    np.testing.assert_array_equal(result.labels, kmeans.fit(X, 6, init=init).labels)


# Small integers keep every sum exact, so the chunk order of the additions cannot change a bit:
# centers, labels and inertia must equal the oracle's exactly, duplicates and ties included.
@st.composite
def integer_problems(draw):
    """Draw ``(X, rows per chunk, init)``: small-integer float64 data and rows of it as centers."""
    n_samples = draw(st.integers(8, 60))
    n_features = draw(st.integers(1, 4))
    n_clusters = draw(st.integers(1, 6))
    size = n_samples * n_features
    values = draw(st.lists(st.integers(-8, 8), min_size=size, max_size=size))
    X = np.array(values, dtype=np.float64).reshape(n_samples, n_features)
    rows = draw(st.integers(1, n_samples))
    init_rows = draw(st.lists(st.integers(0, n_samples - 1), min_size=n_clusters, max_size=n_clusters))
    return X, rows, X[init_rows].copy()


# Hypothesis warns when the `random` module changes state during a draw. The LocalCluster's
# scheduler and client run in this process on their own thread and use it (worker choice,
# connection back-off) while the examples are drawn.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module:hypothesis.errors.HypothesisDeprecationWarning")
@settings(max_examples=10)
@given(problem=integer_problems())
def test_integer_data_equals_naive(client, problem):
    X, rows, init = problem
    n_clusters = init.shape[0]

    # Duplicated rows can leave fewer distinct clusters than n_clusters, which both fits warn about.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        expected = kmeans.fit(X, n_clusters, init=init, tol=0, max_iter=20, backend="naive")
        result = fit_kmeans(chunked(X, rows), n_clusters, init=init, tol=0, max_iter=20, client=client)

    np.testing.assert_array_equal(result.labels, expected.labels)
    np.testing.assert_array_equal(result.centers, expected.centers)
    assert result.n_iter == expected.n_iter
    assert result.inertia == pytest.approx(expected.inertia, rel=1e-12)


def test_worker_killed_mid_iteration(client, run_killing_a_worker):
    rng = np.random.default_rng(9)
    X = rng.random((60_000, 8))
    init = X[:24].copy()
    # NumPy input is persisted in the workers, so the kill also loses chunks that must be rebuilt.
    options = dict(init=init, tol=0, max_iter=15, chunk_rows=5000, client=client)
    expected = fit_kmeans(X, 24, **options)

    result, killed = run_killing_a_worker(
        client, lambda: fit_kmeans(X, 24, **options), "_accumulate_chunk"
    )
    assert killed
    np.testing.assert_array_equal(result.labels, expected.labels)
    np.testing.assert_array_equal(result.centers, expected.centers)
    assert result.n_iter == expected.n_iter

"""Every optimized backend against the naive one: the same indices and the same distance bits."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fastml
from fastml.knn import kneighbors, predict, predict_proba

from .conftest import FAST_BACKENDS, METRICS, module_of, random_problem


@st.composite
def grid_problems(draw):
    """Coordinates on a grid of halves, many repeated rows: exact ties are everywhere."""
    n_features = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    pool = draw(arrays(dtype, (draw(st.integers(1, 6)), n_features), elements=st.integers(-4, 4).map(lambda v: v / 2)))
    rows = st.integers(0, pool.shape[0] - 1)
    X_train = pool[draw(st.lists(rows, min_size=1, max_size=40))]
    X_query = pool[draw(st.lists(rows, min_size=0, max_size=6))].reshape(-1, n_features)
    k = draw(st.integers(1, X_train.shape[0]))
    return X_train, X_query, k


@st.composite
def continuous_problems(draw):
    """Gaussian data of any scale and offset from a seed, plus some repeated rows."""
    seed = draw(st.integers(0, 2**32 - 1))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n_train = draw(st.integers(1, 120))
    n_features = draw(st.integers(1, 12))
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-3, 3)
    offset = 10.0 ** rng.uniform(-3, 3) * draw(st.sampled_from([0.0, 1.0]))
    X_train = offset + scale * rng.normal(size=(n_train, n_features))
    X_train[rng.integers(n_train, size=n_train // 5)] = X_train[0]
    X_query = offset + scale * rng.normal(size=(draw(st.integers(0, 10)), n_features))
    k = draw(st.integers(1, n_train))
    return X_train.astype(dtype), X_query.astype(dtype), k


def assert_same_as_naive(X_train, X_query, k, metric, backend):
    expected_distances, expected_indices = kneighbors(X_train, X_query, k, metric=metric, backend="naive")
    distances, indices = kneighbors(X_train, X_query, k, metric=metric, backend=backend)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(distances, expected_distances)
    assert distances.dtype == expected_distances.dtype


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@given(problem=grid_problems(), metric=st.sampled_from(METRICS))
def test_ties_match_naive(backend, problem, metric):
    assert_same_as_naive(*problem, metric, backend)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@given(problem=continuous_problems(), metric=st.sampled_from(METRICS))
def test_continuous_data_matches_naive(backend, problem, metric):
    assert_same_as_naive(*problem, metric, backend)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_several_blocks_and_tiles_match_naive(backend, metric, dtype):
    # More queries than one block and more training rows than one tile, with a ragged end.
    X_train, X_query = random_problem(2500, 150, 9, dtype=dtype, seed=7)
    X_train[1000:1010] = X_train[3]
    assert_same_as_naive(X_train, X_query, 12, metric, backend)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_many_ties_beyond_the_candidates(backend):
    # 40 copies of one row at the same distance: more than k + 8 candidates tie, so the
    # certificate cannot hold and the full scan must restore the index order.
    X_train, X_query = random_problem(300, 4, 5, dtype=np.float32, seed=8)
    copies = np.arange(7, 300, 7)[:40]
    X_train[copies] = X_query[0] + 0.5
    _, _, n_full_scans = module_of(backend).search(X_train, X_query, 10, "euclidean", 2)
    assert n_full_scans >= 1
    assert_same_as_naive(X_train, X_query, 10, "euclidean", backend)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("metric", METRICS)
def test_one_and_two_threads_agree(backend, metric):
    X_train, X_query = random_problem(4000, 500, 20, dtype=np.float32, seed=9)
    with fastml.num_threads(1):
        one = kneighbors(X_train, X_query, 10, metric=metric, backend=backend)
    with fastml.num_threads(2):
        two = kneighbors(X_train, X_query, 10, metric=metric, backend=backend)
    np.testing.assert_array_equal(one[1], two[1])
    np.testing.assert_array_equal(one[0], two[0])


@st.composite
def vote_problems(draw):
    """Few distinct rows and few classes, so distance ties, zero distances and vote ties occur."""
    X_train, X_query, k = draw(grid_problems())
    labels = draw(arrays(np.int64, X_train.shape[0], elements=st.integers(0, 3)))
    targets = draw(arrays(np.float64, (X_train.shape[0], 2), elements=st.floats(-10, 10)))
    return X_train, X_query, k, labels, targets


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@given(problem=vote_problems(), weights=st.sampled_from(["uniform", "distance"]), metric=st.sampled_from(METRICS))
def test_votes_match_naive(backend, problem, weights, metric):
    X_train, X_query, k, labels, targets = problem
    options = dict(weights=weights, metric=metric)

    expected = predict(X_train, labels, X_query, k, backend="naive", **options)
    np.testing.assert_array_equal(predict(X_train, labels, X_query, k, backend=backend, **options), expected)

    expected = predict_proba(X_train, labels, X_query, k, backend="naive", **options)
    np.testing.assert_array_equal(predict_proba(X_train, labels, X_query, k, backend=backend, **options), expected)

    expected = predict(X_train, targets, X_query, k, task="regression", backend="naive", **options)
    result = predict(X_train, targets, X_query, k, task="regression", backend=backend, **options)
    np.testing.assert_array_equal(result, expected)

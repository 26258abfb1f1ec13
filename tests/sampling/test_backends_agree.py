"""Every optimized backend against the naive one: the same kept tokens and the same draws."""

import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fastml
from fastml.sampling import _numpy, _weights, filter_logits, greedy, sample
from fastml.sampling._synthetic import zipf_logits

from .conftest import FAST_BACKENDS

NEG = -np.inf

# Small integers tie often, and -inf forbids tokens. Huge values push weights to 0 and test the
# subtraction of the maximum. The fractions make boundaries fall between tokens.
ELEMENTS = st.one_of(
    st.integers(-3, 3).map(float),
    st.sampled_from([NEG, NEG, 1e30, -1e30, 3e38, -3e38, 0.5, -0.5, 1 / 3]),
    st.floats(-40, 40, allow_nan=False, allow_infinity=False, width=32),
)


@st.composite
def logits_with_ties(draw, max_vocab=40):
    n_rows = draw(st.integers(1, 3))
    n_tokens = draw(st.integers(1, max_vocab))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    logits = draw(arrays(np.float64, (n_rows, n_tokens), elements=ELEMENTS)).astype(dtype)
    # Every row needs a finite logit somewhere.
    column = draw(st.integers(0, n_tokens - 1))
    finite = draw(st.integers(-3, 3).map(float))
    empty = ~np.isfinite(logits).any(axis=1)
    logits[empty, column] = finite
    return logits


SETTINGS = st.fixed_dictionaries(
    {
        "temperature": st.sampled_from([0.0, 0.3, 1.0, 1.0, 2.5]),
        "top_k": st.one_of(st.none(), st.integers(0, 45)),
        "top_p": st.one_of(st.none(), st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]), st.floats(0, 1)),
        "min_p": st.one_of(st.none(), st.sampled_from([0.0, 0.05, 0.5, 1.0]), st.floats(0, 1)),
        "min_tokens_to_keep": st.integers(1, 4),
    }
)


def _same_outcome(call, backend):
    """Run `call` with naive and with `backend`: both raise the same error, or return equal arrays."""
    try:
        expected = call("naive")
    except ValueError as error:
        with pytest.raises(ValueError, match=re.escape(str(error))):
            call(backend)
        return
    np.testing.assert_array_equal(call(backend), expected)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@given(logits=logits_with_ties(), settings=SETTINGS)
def test_filtered_logits_match_naive(backend, logits, settings):
    _same_outcome(lambda name: filter_logits(logits, backend=name, **settings), backend)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@given(logits=logits_with_ties(), settings=SETTINGS, seed=st.integers(0, 2**32 - 1))
def test_same_seed_same_tokens(backend, logits, settings, seed):
    _same_outcome(lambda name: sample(logits, rng=seed, backend=name, **settings), backend)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@given(logits=logits_with_ties())
def test_greedy_matches_naive(backend, logits):
    np.testing.assert_array_equal(greedy(logits, backend=backend), greedy(logits, backend="naive"))


# Settings for rows large enough for the histogram passes of the fast backends.
LARGE_CASES = [
    dict(top_k=100),
    dict(top_k=3000, min_tokens_to_keep=5),
    dict(top_p=0.9),
    dict(top_p=0.999, temperature=0.7),
    dict(top_k=4000, top_p=0.95, min_p=0.001),
    dict(min_p=0.02),
    dict(min_p=0.3, min_tokens_to_keep=50),
    dict(top_p=0.0, min_tokens_to_keep=3000),
    dict(temperature=1.7),
]


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("settings", LARGE_CASES, ids=repr)
def test_large_vocabulary_matches_naive(backend, settings):
    logits = zipf_logits(2, 6000, seed=3)
    # Coarse values put many tokens into each histogram bucket, so ties cross bucket edges.
    coarse = np.round(zipf_logits(1, 6000, seed=4, exponent=2.0) * 2) / 2
    logits = np.vstack([logits, coarse.astype(np.float32)])
    logits[0, ::7] = NEG
    expected = filter_logits(logits, backend="naive", **settings)
    np.testing.assert_array_equal(filter_logits(logits, backend=backend, **settings), expected)
    expected_tokens = sample(logits, rng=11, backend="naive", **settings)
    np.testing.assert_array_equal(sample(logits, rng=11, backend=backend, **settings), expected_tokens)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize(
    "settings, n_kept",
    [(dict(top_k=1234), 1234), (dict(top_p=0.3), 1500), (dict(top_k=4000, top_p=0.5), 2000)],
)
def test_all_equal_logits_large(backend, settings, n_kept):
    # One histogram bucket contains every token, so the introselect alone resolves the boundary,
    # and every tie goes to the lower index.
    result = filter_logits(np.zeros(5000), backend=backend, **settings)
    assert np.flatnonzero(np.isfinite(result)).tolist() == list(range(n_kept))


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_adversarial_order_for_pivots(backend):
    # Sorted and organ-pipe rows are the classic bad inputs for median-of-3 pivots.
    n = 3000
    ascending = np.arange(n, dtype=np.float64)
    organ_pipe = np.concatenate([np.arange(n // 2), np.arange(n // 2)[::-1]]).astype(np.float64)
    logits = np.vstack([ascending, ascending[::-1], organ_pipe]) / 500
    for settings in (dict(top_k=1500), dict(top_p=0.5)):
        expected = filter_logits(logits, backend="naive", **settings)
        np.testing.assert_array_equal(filter_logits(logits, backend=backend, **settings), expected)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_rows_independent_of_batch(backend):
    logits = zipf_logits(5, 3000, seed=8)
    tokens = sample(logits, top_p=0.9, rng=np.random.default_rng(2), backend=backend)
    uniforms = np.random.default_rng(2).random(5)
    for row in range(5):

        class OneDraw(np.random.Generator):
            def random(self, size=None):
                return uniforms[row : row + 1]

        alone = sample(logits[row], top_p=0.9, rng=OneDraw(np.random.PCG64()), backend=backend)
        assert alone == tokens[row]


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_thread_count_does_not_change_result(backend):
    logits = zipf_logits(7, 4000, seed=5)
    settings = dict(top_k=2000, top_p=0.9, min_p=0.01, rng=3, backend=backend)
    with fastml.num_threads(1):
        one = sample(logits, **settings)
    with fastml.num_threads(2):
        two = sample(logits, **settings)
    np.testing.assert_array_equal(one, two)


def _weight_inputs():
    rng = np.random.default_rng(0)
    return np.concatenate(
        [
            -rng.random(20000) * 40,
            -rng.random(5000) * 720,
            -rng.random(1000) * 1e-6,
            [0.0, -0.0, -708.0, -708.0000001, -745.2, NEG, -math.log(2) / 2, -math.log(2) * 1021],
        ]
    )


def test_exp_weight_within_one_ulp_of_libm():
    for x in _weight_inputs():
        exact = math.exp(x)
        weight = _weights.exp_weight(float(x))
        if x < _weights.EXP_CUTOFF:
            assert weight == 0.0
        else:
            assert abs(weight - exact) <= math.ulp(exact), x


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_exp_weight_bitwise_equal_across_backends(backend):
    x = _weight_inputs()
    expected = np.array([_weights.exp_weight(float(v)) for v in x])
    if backend == "numpy":
        result = _numpy.exp_weights(x)
    elif backend == "numba":
        from fastml.sampling import _numba

        result = _numba.exp_weights(x)
    else:
        from fastml.sampling import _cython

        result = _cython.exp_weights(x)
    np.testing.assert_array_equal(result, expected)

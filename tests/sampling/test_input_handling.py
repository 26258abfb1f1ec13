"""Invalid logits and parameters: each rejected with a message naming the argument and the value."""

import numpy as np
import pytest

from fastml.sampling import (
    apply_temperature,
    filter_logits,
    greedy,
    min_p_filter,
    sample,
    top_k_filter,
    top_p_filter,
)

NEG = -np.inf

BAD_LOGITS = [
    (np.array([0.0, np.nan, 1.0]), ValueError, r"logits contains NaN at index 1; .* -inf"),
    (np.array([[0.0, 1.0, 2.0], [0.0, 1.0, np.inf]]), ValueError, r"\+inf at index \(1, 2\)"),
    (np.array([[0.0, 1.0], [NEG, NEG]]), ValueError, r"every entry of row 1 of logits is -inf"),
    (np.array([NEG, NEG]), ValueError, r"every entry of logits is -inf; at least one token"),
    (np.zeros(0), ValueError, r"logits has an empty vocabulary \(shape \(0,\)\)"),
    (np.zeros((2, 0)), ValueError, r"empty vocabulary \(shape \(2, 0\)\)"),
    (np.zeros((1, 2, 3)), ValueError, r"logits must be 1-D .* or 2-D .*, got shape \(1, 2, 3\)"),
    (np.float64(1.0), ValueError, r"got shape \(\)"),
    # The shared validation owns the next two messages: check that they name logits and the cause.
    (np.array(["a", "b"]), (TypeError, ValueError), r"logits .*numbers"),
    (np.array([1 + 2j, 0]), (TypeError, ValueError), r"(?i)complex.*logits|logits.*complex"),
]


@pytest.mark.parametrize("logits, error, message", BAD_LOGITS)
def test_bad_logits_rejected_everywhere(logits, error, message):
    with pytest.raises(error, match=message):
        sample(logits, rng=0)
    with pytest.raises(error, match=message):
        greedy(logits)
    with pytest.raises(error, match=message):
        filter_logits(logits, top_p=0.5)
    with pytest.raises(error, match=message):
        top_k_filter(logits, 2)


BAD_SETTINGS = [
    (dict(temperature=-1.0), ValueError, r"temperature must be >= 0.0, got -1.0"),
    (dict(temperature=float("nan")), ValueError, r"temperature must be finite, got nan"),
    (dict(temperature="hot"), TypeError, r"temperature must be a real number, got 'hot'"),
    (dict(top_k=-1), ValueError, r"top_k must be >= 0, got -1"),
    (dict(top_k=2.5), TypeError, r"top_k must be an int, got 2.5"),
    (dict(top_k=True), TypeError, r"top_k must be an int, got True"),
    (dict(top_p=1.5), ValueError, r"top_p must be <= 1.0, got 1.5"),
    (dict(top_p=-0.1), ValueError, r"top_p must be >= 0.0, got -0.1"),
    (dict(min_p=2.0), ValueError, r"min_p must be <= 1.0, got 2.0"),
    (dict(min_p=-1e-9), ValueError, r"min_p must be >= 0.0, got -1e-09"),
    (dict(min_tokens_to_keep=0), ValueError, r"min_tokens_to_keep must be >= 1, got 0"),
    (dict(backend="fortran"), ValueError, r"invalid backend='fortran' for sampling"),
]


@pytest.mark.parametrize("settings, error, message", BAD_SETTINGS)
def test_bad_settings_rejected(settings, error, message):
    logits = np.zeros((2, 4))
    with pytest.raises(error, match=message):
        sample(logits, rng=0, **settings)
    with pytest.raises(error, match=message):
        filter_logits(logits, **settings)


def test_single_filters_validate_their_parameter():
    logits = np.zeros(4)
    with pytest.raises(ValueError, match=r"top_k must be >= 0, got -3"):
        top_k_filter(logits, -3)
    with pytest.raises(ValueError, match=r"top_p must be <= 1.0, got 1.01"):
        top_p_filter(logits, 1.01)
    with pytest.raises(ValueError, match=r"min_p must be >= 0.0, got -0.5"):
        min_p_filter(logits, -0.5)
    with pytest.raises(ValueError, match=r"min_tokens_to_keep must be >= 1, got 0"):
        top_p_filter(logits, 0.5, min_tokens_to_keep=0)


@pytest.mark.parametrize(
    "rng, error, message",
    [
        (-1, ValueError, r"rng must be a non-negative int seed, got -1"),
        ("seed", TypeError, r"rng must be None, an int seed or a numpy.random.Generator, got str"),
        (1.5, TypeError, r"got float"),
    ],
)
def test_bad_rng_rejected(rng, error, message):
    with pytest.raises(error, match=message):
        sample(np.zeros(3), rng=rng)


def test_temperature_that_overflows_rejected():
    logits = np.array([1e308, 0.0, NEG])
    with pytest.raises(ValueError, match=r"temperature=0.5 is too small .* overflows float64; use temperature=0"):
        sample(logits, temperature=0.5, rng=0)
    # float32 output overflows long before float64 does.
    small = np.array([3e38, 0.0], dtype=np.float32)
    with pytest.raises(ValueError, match=r"overflows float32"):
        apply_temperature(small, 0.5)
    with pytest.raises(ValueError, match=r"overflows float32"):
        filter_logits(small, temperature=0.5)
    assert sample(small, temperature=0.5, rng=0) == 0


def test_apply_temperature_zero_rejected():
    with pytest.raises(ValueError, match=r"temperature=0 means greedy decoding.*call greedy"):
        apply_temperature(np.zeros(3), 0.0)
    with pytest.raises(ValueError, match=r"temperature must be >= 0.0, got -2.0"):
        apply_temperature(np.zeros(3), -2.0)


def test_layouts_give_same_result(backend):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 50))
    expected = sample(logits, top_p=0.8, rng=1, backend=backend)
    read_only = logits.copy()
    read_only.flags.writeable = False
    strided = np.repeat(logits, 2, axis=1)[:, ::2]
    for variant in (np.asfortranarray(logits), read_only, strided):
        np.testing.assert_array_equal(sample(variant, top_p=0.8, rng=1, backend=backend), expected)


def test_float16_converted_to_float64(backend):
    logits = np.array([0.5, 2.0, 1.0], dtype=np.float16)
    result = top_k_filter(logits, 1, backend=backend)
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, [NEG, 2.0, NEG])

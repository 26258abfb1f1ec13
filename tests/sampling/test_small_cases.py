"""Hand-computed cases of every filter and of the draw, for every backend."""

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


def kept(filtered):
    return np.flatnonzero(np.isfinite(filtered)).tolist()


def test_greedy_lowest_index_on_tie(backend):
    logits = np.array([[1.0, 3.0, 3.0, 2.0], [NEG, -5.0, -7.0, -5.0]])
    np.testing.assert_array_equal(greedy(logits, backend=backend), [1, 1])
    assert greedy(logits[0], backend=backend) == 1


def test_temperature_zero_is_greedy_and_ignores_filters(backend):
    logits = np.array([[0.0, 2.0, 2.0, 1.0], [5.0, NEG, 1.0, 5.0]])
    for seed in range(5):
        tokens = sample(logits, temperature=0, top_k=1, top_p=0.1, rng=seed, backend=backend)
        np.testing.assert_array_equal(tokens, [1, 0])
    filtered = filter_logits(logits[0], temperature=0, backend=backend)
    np.testing.assert_array_equal(filtered, [NEG, 2.0, NEG, NEG])


def test_top_k_ties_go_to_lower_index(backend):
    logits = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    assert kept(top_k_filter(logits, 2, backend=backend)) == [1, 2]
    assert kept(top_k_filter(logits, 1, backend=backend)) == [1]


def test_top_k_keeps_exactly_k(backend):
    logits = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    # 3, 3, 3 at indices 1, 2, 4, then 2 at index 3: the top 4 drop only index 0.
    assert kept(top_k_filter(logits, 4, backend=backend)) == [1, 2, 3, 4]
    assert kept(top_k_filter(logits, 3, backend=backend)) == [1, 2, 4]


def test_top_k_zero_or_above_vocabulary_keeps_all(backend):
    logits = np.array([1.0, NEG, 3.0])
    for k in (0, 3, 10, None):
        np.testing.assert_array_equal(top_k_filter(logits, k, backend=backend), logits)


def test_top_k_min_tokens_to_keep(backend):
    logits = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    result = top_k_filter(logits, 1, min_tokens_to_keep=3, backend=backend)
    assert kept(result) == [1, 2, 4]


def test_top_k_values_unchanged(backend):
    logits = np.array([0.5, -1.25, 7.0], dtype=np.float32)
    result = top_k_filter(logits, 2, backend=backend)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, np.array([0.5, NEG, 7.0], dtype=np.float32))


def test_top_p_smallest_set_reaching_p(backend):
    # Probabilities 0.5, 0.3, 0.2.
    logits = np.log([0.3, 0.5, 0.2])
    assert kept(top_p_filter(logits, 0.6, backend=backend)) == [0, 1]
    assert kept(top_p_filter(logits, 0.4, backend=backend)) == [1]
    assert kept(top_p_filter(logits, 0.81, backend=backend)) == [0, 1, 2]


def test_top_p_zero_keeps_most_likely(backend):
    logits = np.array([0.0, 2.0, 2.0, 1.0])
    assert kept(top_p_filter(logits, 0.0, backend=backend)) == [1]


def test_top_p_one_keeps_every_finite_token(backend):
    # exp(-1000) underflows to 0 in float64, yet the token has a finite logit and stays.
    logits = np.array([0.0, -1000.0, NEG, -5.0])
    assert kept(top_p_filter(logits, 1.0, backend=backend)) == [0, 1, 3]
    assert kept(top_p_filter(logits, 0.999, backend=backend)) == [0, 3]


def test_top_p_ties_at_boundary_go_to_lower_index(backend):
    # Four equal probabilities: 0.5 needs exactly two tokens, 0.6 needs three.
    logits = np.zeros(4)
    assert kept(top_p_filter(logits, 0.5, backend=backend)) == [0, 1]
    assert kept(top_p_filter(logits, 0.6, backend=backend)) == [0, 1, 2]
    logits = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    assert kept(top_p_filter(logits, 0.5, backend=backend)) == [0, 2]


def test_top_p_min_tokens_to_keep(backend):
    logits = np.log([0.9, 0.05, 0.03, 0.02])
    assert kept(top_p_filter(logits, 0.5, min_tokens_to_keep=3, backend=backend)) == [0, 1, 2]


def test_min_p_relative_to_top_probability(backend):
    logits = np.log([0.5, 0.3, 0.15, 0.05])
    # min_p * p_max = 0.25 keeps 0.5 and 0.3; 0.1 also keeps 0.15.
    assert kept(min_p_filter(logits, 0.5, backend=backend)) == [0, 1]
    assert kept(min_p_filter(logits, 0.2, backend=backend)) == [0, 1, 2]
    assert kept(min_p_filter(logits, 1.0, backend=backend)) == [0]
    assert kept(min_p_filter(logits, 0.0, backend=backend)) == [0, 1, 2, 3]
    assert kept(min_p_filter(logits, 0.9, min_tokens_to_keep=3, backend=backend)) == [0, 1, 2]


def test_temperature_applies_before_top_p(backend):
    logits = np.array([2.0, 1.0, 0.0])
    # At T=1 the top token has probability 0.665; at T=10 it has 0.367, so two are needed.
    assert kept(filter_logits(logits, top_p=0.6, backend=backend)) == [0]
    assert kept(filter_logits(logits, temperature=10.0, top_p=0.6, backend=backend)) == [0, 1]


def test_top_p_renormalizes_after_top_k(backend):
    logits = np.log([0.4, 0.35, 0.25])
    # Alone, 0.4 < 0.5; after top-k=2 the top token has 0.4 / 0.75 = 0.533 >= 0.5.
    assert kept(filter_logits(logits, top_p=0.5, backend=backend)) == [0, 1]
    assert kept(filter_logits(logits, top_k=2, top_p=0.5, backend=backend)) == [0]


def test_filter_logits_scales_by_temperature(backend):
    logits = np.array([[2.0, 1.0, NEG]], dtype=np.float32)
    result = filter_logits(logits, temperature=0.5, backend=backend)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, [[4.0, 2.0, NEG]])


def test_apply_temperature_divides():
    logits = np.array([3.0, NEG, -1.5])
    np.testing.assert_array_equal(apply_temperature(logits, 1.5), [2.0, NEG, -1.0])
    assert apply_temperature(logits.astype(np.float32), 2.0).dtype == np.float32


def test_neg_inf_never_sampled(backend):
    logits = np.array([[NEG, 0.0, NEG, NEG], [NEG, NEG, NEG, -1e30]])
    for seed in range(20):
        tokens = sample(logits, temperature=3.0, rng=seed, backend=backend)
        np.testing.assert_array_equal(tokens, [1, 3])


def test_single_finite_logit_always_chosen_with_filters(backend):
    logits = np.array([NEG, NEG, 7.0, NEG, NEG])
    for seed in range(10):
        token = sample(logits, top_k=3, top_p=0.9, min_p=0.5, rng=seed, backend=backend)
        assert token == 2


def test_sample_shapes_and_dtypes(backend):
    logits = np.zeros((3, 5), dtype=np.float32)
    tokens = sample(logits, rng=0, backend=backend)
    assert tokens.shape == (3,)
    assert tokens.dtype == np.int64
    token = sample(logits[0], rng=0, backend=backend)
    assert isinstance(token, np.int64)
    assert 0 <= token < 5


def test_empty_batch(backend):
    logits = np.zeros((0, 5))
    assert sample(logits, rng=0, backend=backend).shape == (0,)
    assert greedy(logits, backend=backend).shape == (0,)
    assert top_p_filter(logits, 0.5, backend=backend).shape == (0, 5)


def test_draw_is_inverse_cdf_in_index_order(backend):
    # Probabilities 0.25, 0.5, 0.25 in index order: u below 0.25 gives 0, up to 0.75 gives 1.
    logits = np.log([0.25, 0.5, 0.25])

    class FixedGenerator(np.random.Generator):
        def __init__(self, values):
            super().__init__(np.random.PCG64(0))
            self.values = np.asarray(values)

        def random(self, size=None):
            return self.values[:size].copy()

    draws = [0.0, 0.2, 0.26, 0.7, 0.76, 0.999999]
    batch = np.tile(logits, (len(draws), 1))
    tokens = sample(batch, rng=FixedGenerator(draws), backend=backend)
    np.testing.assert_array_equal(tokens, [0, 0, 1, 1, 2, 2])


def test_generator_advances_one_number_per_row(backend):
    generator = np.random.default_rng(5)
    sample(np.zeros((4, 3)), rng=generator, backend=backend)
    sample(np.zeros((2, 3)), temperature=0, rng=generator, backend=backend)
    reference = np.random.default_rng(5)
    reference.random(6)
    assert generator.random() == reference.random()


def test_input_not_modified(backend):
    logits = np.array([[1.0, NEG, 3.0, 2.0]])
    original = logits.copy()
    filter_logits(logits, temperature=0.7, top_k=2, top_p=0.5, backend=backend)
    sample(logits, temperature=0.7, top_k=2, top_p=0.5, min_p=0.1, rng=0, backend=backend)
    np.testing.assert_array_equal(logits, original)


def test_integer_and_list_logits_accepted(backend):
    assert sample([[0, 5, 1]], temperature=0.01, rng=0, backend=backend)[0] == 1
    result = top_k_filter(np.array([3, 1, 2]), 1, backend=backend)
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, [3.0, NEG, NEG])


def test_huge_logits(backend):
    logits = np.array([1e300, -1e300, 1e300, 5.0])
    assert kept(top_p_filter(logits, 0.9, backend=backend)) == [0, 2]
    assert kept(top_p_filter(logits, 0.5, backend=backend)) == [0]
    assert kept(top_k_filter(logits, 3, backend=backend)) == [0, 2, 3]
    for seed in range(10):
        assert sample(logits, rng=seed, backend=backend) in (0, 2)

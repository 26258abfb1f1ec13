"""Sampled frequencies against the filtered softmax distribution (chi-square goodness of fit).

Each case draws N_DRAWS tokens from one row repeated N_DRAWS times, with a fixed seed, and runs
Pearson's chi-square test against softmax(filtered logits) computed independently in float64.
The seed makes each test deterministic. A correct sampler fails one of these tests for a
fraction ALPHA of seeds (the false-alarm rate), 1 in 1,000 per test. With 5 cases times
4 backends, the chance that the chosen seed flags a correct implementation is at most 2%.
The tests can fail: the same draws are checked to reject a distribution off by 3 percentage
points on one token.
"""

import numpy as np
import pytest
from scipy import stats

from fastml.sampling import filter_logits, sample

from .conftest import softmax

ALPHA = 1e-3
N_DRAWS = 20_000
NEG = -np.inf


def _zipf_row(n_tokens, seed):
    rng = np.random.default_rng(seed)
    return -1.1 * np.log(rng.permutation(n_tokens) + 1.0) + 0.3 * rng.standard_normal(n_tokens)


def _with_forbidden(row, every):
    row = row.copy()
    row[1::every] = NEG
    return row


CASES = {
    "temperature only": (_zipf_row(30, 0), dict(temperature=1.0)),
    "top-k at low temperature": (_zipf_row(30, 1), dict(temperature=0.7, top_k=5)),
    "top-p then min-p": (_zipf_row(40, 2), dict(top_p=0.8, min_p=0.05)),
    "all equal": (np.zeros(10), dict(top_p=0.95)),
    "forbidden tokens": (_with_forbidden(_zipf_row(25, 3), 4), dict(temperature=1.5, top_k=12)),
}


def _merge_small_bins(observed, expected, minimum=5.0):
    """Merge the least likely tokens into one bin until every expected count is at least 5."""
    order = np.argsort(expected)
    observed, expected = observed[order], expected[order]
    start = 0
    while start < expected.size - 1 and expected[: start + 1].sum() < minimum:
        start += 1
    merged_observed = np.concatenate([[observed[: start + 1].sum()], observed[start + 1 :]])
    merged_expected = np.concatenate([[expected[: start + 1].sum()], expected[start + 1 :]])
    return merged_observed, merged_expected


def _draw_counts(row, settings, backend):
    batch = np.tile(row, (N_DRAWS, 1))
    tokens = sample(batch, rng=12345, backend=backend, **settings)
    return np.bincount(tokens, minlength=row.size)


def _filtered_probabilities(row, settings):
    filtered = filter_logits(row, backend="naive", **settings)
    kept = np.isfinite(filtered)
    probabilities = np.zeros(row.size)
    probabilities[kept] = softmax(filtered[kept])
    return probabilities


def _p_value(counts, probabilities):
    kept = probabilities > 0
    observed, expected = _merge_small_bins(counts[kept], probabilities[kept] * counts.sum())
    if observed.size < 2:
        return 1.0
    return stats.chisquare(observed, expected).pvalue


@pytest.mark.parametrize("case", list(CASES))
def test_frequencies_match_filtered_softmax(backend, case):
    row, settings = CASES[case]
    counts = _draw_counts(row, settings, backend)
    probabilities = _filtered_probabilities(row, settings)

    assert counts[probabilities == 0].sum() == 0, "a removed token was drawn"
    assert _p_value(counts, probabilities) > ALPHA


@pytest.mark.parametrize("case", ["temperature only", "top-p then min-p"])
def test_chi_square_rejects_a_wrong_distribution(case):
    row, settings = CASES[case]
    counts = _draw_counts(row, settings, "numpy")
    probabilities = _filtered_probabilities(row, settings)

    # Move 3 percentage points from the most likely token to the second.
    wrong = probabilities.copy()
    first, second = np.argsort(probabilities)[::-1][:2]
    wrong[first] -= 0.03
    wrong[second] += 0.03
    assert _p_value(counts, wrong) < ALPHA

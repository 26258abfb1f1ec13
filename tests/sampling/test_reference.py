"""Kept sets against independent references: torch.topk, a sort-based top-p in torch, and the
Hugging Face warpers chained as in generation.

The logits are float64 without ties, so the references' own tie rules do not matter. A top-p
boundary is compared only where the cumulative probability stays at least MARGIN away from p:
closer than that, float64 rounding in the reference's cumsum could move the boundary by a token.
Real model logits are not covered here; the Zipf-like rows stand in for them.
"""

import numpy as np
import pytest

from fastml.sampling import filter_logits, top_k_filter, top_p_filter
from fastml.sampling._synthetic import zipf_logits

from .conftest import FAST_BACKENDS, softmax

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")

MARGIN = 1e-9


def _rows():
    """Four rows of 50,257 distinct float64 logits: two Zipf-like, two Gaussian."""
    zipf = zipf_logits(2, 50257, seed=21, dtype=np.float64)
    gaussian = np.random.default_rng(22).normal(scale=2.0, size=(2, 50257))
    rows = np.vstack([zipf, gaussian])
    for row in rows:
        assert np.unique(row).size == row.size
    return rows


def _kept_sets(filtered):
    return [set(np.flatnonzero(np.isfinite(row)).tolist()) for row in filtered]


def _clear_of_boundary(probabilities, top_p):
    """Whether no cumulative probability, in descending order, lies within MARGIN of top_p."""
    cumulative = np.cumsum(np.sort(probabilities)[::-1])
    return np.abs(cumulative - top_p).min() > MARGIN


# The naive backend takes about half a second per call on these rows, so one k is enough for it.
TOP_K_CASES = [("naive", 10)] + [
    (backend, k) for backend in FAST_BACKENDS for k in (1, 10, 777, 50256)
]


@pytest.mark.parametrize("backend, k", TOP_K_CASES)
def test_top_k_matches_torch_topk(backend, k):
    rows = _rows()
    expected = torch.topk(torch.from_numpy(rows), k, dim=1).indices.numpy()
    result = _kept_sets(top_k_filter(rows, k, backend=backend))
    assert result == [set(indices.tolist()) for indices in expected]


def _torch_top_p(rows, top_p):
    """Sort-based top-p: keep a token while the mass before it, in descending order, is below p."""
    logits = torch.from_numpy(rows)
    probabilities, order = torch.sort(torch.softmax(logits, dim=1), dim=1, descending=True)
    mass_before = torch.cumsum(probabilities, dim=1) - probabilities
    keep_sorted = mass_before < top_p
    keep_sorted[:, 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
    return [set(torch.nonzero(row).flatten().tolist()) for row in keep]


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_matches_torch_sort(fast_backend, top_p):
    rows = _rows()
    expected = _torch_top_p(rows, top_p)
    result = _kept_sets(top_p_filter(rows, top_p, backend=fast_backend))
    compared = 0
    for row, kept, reference in zip(rows, result, expected):
        if _clear_of_boundary(softmax(row), top_p):
            assert kept == reference
            compared += 1
    assert compared >= 3


def _hugging_face_kept(rows, temperature, top_k, top_p, min_p):
    generation = pytest.importorskip(
        "transformers.generation.logits_process",
        reason="transformers is not installed (pip install transformers)",
    )
    warpers = [
        generation.TemperatureLogitsWarper(temperature),
        generation.TopKLogitsWarper(top_k),
        generation.TopPLogitsWarper(top_p),
        generation.MinPLogitsWarper(min_p),
    ]
    scores = torch.from_numpy(rows.copy())
    for warper in warpers:
        scores = warper(None, scores)
    return [set(torch.nonzero(torch.isfinite(row)).flatten().tolist()) for row in scores]


@pytest.mark.parametrize(
    "temperature, top_k, top_p, min_p",
    [(1.0, 1000, 0.9, 0.01), (0.7, 50, 0.5, 0.001), (1.3, 30000, 0.95, 0.05), (2.0, 20, 0.99, 0.2)],
)
def test_matches_hugging_face_warpers(fast_backend, temperature, top_k, top_p, min_p):
    rows = _rows()
    expected = _hugging_face_kept(rows, temperature, top_k, top_p, min_p)
    settings = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    result = _kept_sets(filter_logits(rows, backend=fast_backend, **settings))

    compared = 0
    for row, kept, reference in zip(rows, result, expected):
        # The top-p boundary is taken on the top-k survivors, renormalized.
        scaled = row / temperature
        survivors = np.sort(scaled)[::-1][:top_k]
        if _clear_of_boundary(softmax(survivors), top_p):
            assert kept == reference
            compared += 1
    assert compared >= 3

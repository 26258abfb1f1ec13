"""Agreement with torch.nn.functional.scaled_dot_product_attention (torch 2.13)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastml.attention import scaled_dot_product_attention

from .conftest import BACKENDS, FAST_BACKENDS

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")

TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=3e-5, atol=3e-5)}


def torch_sdpa(q, k, v, **options):
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in (q, k, v)]
    if options.get("attn_mask") is not None:
        options["attn_mask"] = torch.from_numpy(np.ascontiguousarray(options["attn_mask"]))
    with torch.no_grad():
        return torch.nn.functional.scaled_dot_product_attention(*tensors, **options).numpy()


def bottom_right_causal_mask(n_queries, n_keys):
    """torch's is_causal aligns top-left; this is fastml's bottom-right alignment as a mask."""
    return np.tril(np.ones((n_queries, n_keys), dtype=bool), k=n_keys - n_queries)


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    n_kv_heads, group = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n_queries = draw(st.integers(1, 10))
    n_keys = draw(st.integers(n_queries, 12))
    head_dim, value_dim = draw(st.integers(1, 8)), draw(st.integers(1, 6))
    q = rng.normal(size=batch + (n_kv_heads * group, n_queries, head_dim)).astype(dtype)
    k = rng.normal(size=batch + (n_kv_heads, n_keys, head_dim)).astype(dtype)
    v = rng.normal(size=batch + (n_kv_heads, n_keys, value_dim)).astype(dtype)
    # Every row keeps one allowed key: torch 2.13 returns zeros for a fully masked row on this
    # CPU path, but earlier versions returned NaN, so those rows are tested elsewhere.
    allowed = rng.random((n_queries, n_keys)) < 0.6
    allowed[np.arange(n_queries), rng.integers(0, n_keys, n_queries)] = True
    kind = draw(st.sampled_from(["none", "causal", "bool", "float"]))
    mask = {"none": None, "causal": None, "bool": allowed,
            "float": np.where(allowed, rng.normal(size=allowed.shape), -np.inf).astype(dtype)}[kind]
    return q, k, v, kind == "causal", mask, group > 1


@pytest.mark.parametrize("backend", BACKENDS)
@given(problem=problems())
def test_matches_torch_sdpa(backend, problem):
    q, k, v, is_causal, mask, enable_gqa = problem
    result = scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=enable_gqa, backend=backend
    )
    # torch aligns is_causal top-left, so the bottom-right rule goes in as an explicit mask;
    # when L == S both alignments are the same and torch's is_causal itself is compared.
    n_queries, n_keys = q.shape[-2], k.shape[-2]
    if is_causal and n_queries != n_keys:
        expected = torch_sdpa(q, k, v, attn_mask=bottom_right_causal_mask(n_queries, n_keys),
                              enable_gqa=enable_gqa)
    else:
        expected = torch_sdpa(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=enable_gqa)
    np.testing.assert_allclose(result, expected, **TOLERANCE[q.dtype.type])


def test_torch_is_causal_differs_when_queries_are_fewer():
    # The documented difference: with L < S torch's top-left mask hides the newest keys.
    rng = np.random.default_rng(0)
    q = rng.normal(size=(1, 1, 2, 4))
    k, v = rng.normal(size=(2, 1, 1, 5, 4))
    ours = scaled_dot_product_attention(q, k, v, is_causal=True, backend="numpy")
    top_left = torch_sdpa(q, k, v, is_causal=True)
    bottom_right = torch_sdpa(q, k, v, attn_mask=bottom_right_causal_mask(2, 5))
    np.testing.assert_allclose(ours, bottom_right, rtol=1e-12)
    assert not np.allclose(ours, top_left)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_long_causal_gqa_float32(backend):
    rng = np.random.default_rng(1)
    q = rng.normal(size=(1, 8, 700, 64)).astype(np.float32)
    k = rng.normal(size=(1, 2, 700, 64)).astype(np.float32)
    v = rng.normal(size=(1, 2, 700, 64)).astype(np.float32)
    result = scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, backend=backend)
    expected = torch_sdpa(q, k, v, is_causal=True, enable_gqa=True)
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=2e-5)

"""Every optimized backend against the naive one and against a float64 reference."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastml
from fastml.attention import scaled_dot_product_attention
from fastml.attention._tiling import plan

from .conftest import FAST_BACKENDS, FUSED_BACKENDS, reference_attention, tiny_tiles

TOLERANCE = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-5)}


@st.composite
def problems(draw):
    """A random attention problem: shapes, GQA grouping, a mask or causal, valid lengths."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    n_batch = draw(st.integers(1, 3))
    n_kv_heads = draw(st.integers(1, 3))
    group = draw(st.integers(1, 3))
    n_queries = draw(st.integers(1, 9))
    n_keys = draw(st.integers(1, 11))
    head_dim, value_dim = draw(st.integers(1, 6)), draw(st.integers(1, 5))

    q = rng.normal(size=(n_batch, n_kv_heads * group, n_queries, head_dim)).astype(dtype)
    k = rng.normal(size=(n_batch, n_kv_heads, n_keys, head_dim)).astype(dtype)
    v = rng.normal(size=(n_batch, n_kv_heads, n_keys, value_dim)).astype(dtype)
    options = dict(enable_gqa=group > 1)

    kind = draw(st.sampled_from(["none", "causal", "bool", "float"]))
    if kind == "causal":
        options["is_causal"] = True
    elif kind != "none":
        # Any of batch, head and query axes may broadcast.
        shape = [n_batch, n_kv_heads * group, n_queries, n_keys]
        for axis in range(3):
            if draw(st.booleans()):
                shape[axis] = 1
        allowed = rng.random(shape) < draw(st.sampled_from([0.3, 0.7, 1.0]))
        if kind == "bool":
            options["attn_mask"] = allowed
        else:
            options["attn_mask"] = np.where(allowed, rng.normal(size=shape), -np.inf)
    if draw(st.booleans()):
        options["kv_lengths"] = rng.integers(0, n_keys + 1, size=n_batch)
    return q, k, v, options


def _reference(q, k, v, options):
    return reference_attention(
        q, k, v, mask=options.get("attn_mask"), is_causal=options.get("is_causal", False),
        kv_lengths=options.get("kv_lengths"),
    )


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@given(problem=problems())
def test_backend_matches_naive(backend, problem):
    q, k, v, options = problem
    expected = scaled_dot_product_attention(q, k, v, backend="naive", **options)
    # Tiny tiles, so that a few keys and rows already cross block, band and row-tile edges.
    with tiny_tiles(backend):
        result = scaled_dot_product_attention(q, k, v, backend=backend, **options)

    assert result.dtype == q.dtype
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, **TOLERANCE[q.dtype.type])


@pytest.mark.parametrize("backend", ("naive",) + FAST_BACKENDS)
@given(problem=problems())
def test_backend_matches_float64_reference(backend, problem):
    q, k, v, options = problem
    with tiny_tiles(backend, block_rows=4, block_keys=5, band_rows=3):
        result = scaled_dot_product_attention(q, k, v, backend=backend, **options)
    np.testing.assert_allclose(result, _reference(q, k, v, options), **TOLERANCE[q.dtype.type])


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@pytest.mark.parametrize("n_queries, n_keys", [(300, 300), (77, 600), (1, 1000), (520, 130)])
@pytest.mark.parametrize("group", [1, 4])
def test_default_tiles_match_reference(backend, n_queries, n_keys, group):
    # Sizes past the default tiles (256 rows, 512 keys, bands of 32), causal and with lengths.
    rng = np.random.default_rng(n_queries + n_keys + group)
    q = rng.normal(size=(2, 2 * group, n_queries, 16)).astype(np.float32)
    k = rng.normal(size=(2, 2, n_keys, 16)).astype(np.float32)
    v = rng.normal(size=(2, 2, n_keys, 8)).astype(np.float32)
    lengths = np.array([n_keys, max(1, n_keys // 3)])
    options = dict(is_causal=True, kv_lengths=lengths, enable_gqa=group > 1)

    result = scaled_dot_product_attention(q, k, v, backend=backend, **options)
    expected = reference_attention(q, k, v, is_causal=True, kv_lengths=lengths)
    np.testing.assert_allclose(result, expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_thread_count_does_not_change_output(backend):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(3, 4, 200, 16)).astype(np.float32)
    k = rng.normal(size=(3, 2, 300, 16)).astype(np.float32)
    v = rng.normal(size=(3, 2, 300, 16)).astype(np.float32)
    # Enough work for three workers, so the runs below really differ in their split.
    assert plan(q.shape, k.shape, 16, 3, block_rows=16)[1] == 3
    outputs = []
    for n_threads in (1, 2, 3):
        with fastml.num_threads(n_threads), tiny_tiles(backend, 16, 32, 8):
            outputs.append(
                scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, backend=backend)
            )
    np.testing.assert_array_equal(outputs[0], outputs[1])
    np.testing.assert_array_equal(outputs[0], outputs[2])


@pytest.mark.parametrize("backend", FAST_BACKENDS)
def test_exp_accuracy_over_wide_scores(backend):
    # Scores spread over the whole exp range, where the polynomial exp of the fused
    # backends must keep float32 (float64) accuracy: one large and many small weights.
    rng = np.random.default_rng(1)
    for dtype, rtol in ((np.float32, 2e-6), (np.float64, 1e-13)):
        k = np.linspace(-40, 0, 500)[None, None, :, None].astype(dtype)
        q = np.ones((1, 1, 1, 1), dtype=dtype)
        v = rng.normal(size=(1, 1, 500, 3)).astype(dtype)
        result = scaled_dot_product_attention(q, k, v, scale=1.0, backend=backend)
        np.testing.assert_allclose(result, reference_attention(q, k, v, scale=1.0), rtol=rtol)

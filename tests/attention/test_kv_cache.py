"""KVCache and cached_attention: incremental decoding equals full causal attention."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastml.attention import KVCache, cached_attention, scaled_dot_product_attention

from .conftest import BACKENDS, FUSED_BACKENDS, reference_attention, tiny_tiles

TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-5)}
HEADS = {"multi-head 4/4": (4, 4), "grouped 6/2": (6, 2), "multi-query 3/1": (3, 1)}


def _sequences(rng, n_batch, n_heads, n_kv_heads, n_tokens, dtype, head_dim=8, value_dim=5):
    """Random q (B, Hq, T, E), k (B, Hkv, T, E), v (B, Hkv, T, Ev) of whole sequences."""
    q = rng.normal(size=(n_batch, n_heads, n_tokens, head_dim)).astype(dtype)
    k = rng.normal(size=(n_batch, n_kv_heads, n_tokens, head_dim)).astype(dtype)
    v = rng.normal(size=(n_batch, n_kv_heads, n_tokens, value_dim)).astype(dtype)
    return q, k, v


def _decode(q, k, v, steps, backend, max_len=None):
    """Feed whole sequences to a cache in steps; return the (B, Hq, T, Ev) outputs.

    ``steps`` is a list of per-sequence token counts: step s appends steps[s][b] tokens of
    sequence b, padded to a common chunk length (a ragged chunk when the counts differ).
    """
    n_batch, n_heads, n_tokens, _ = q.shape
    cache = KVCache(
        n_batch, k.shape[1], max_len or n_tokens, k.shape[3], value_dim=v.shape[3], dtype=q.dtype
    )
    out = np.full((n_batch, n_heads, n_tokens, v.shape[3]), np.nan, dtype=q.dtype)
    position = np.zeros(n_batch, dtype=int)
    for counts in steps:
        chunk = max(counts)
        chunks = [np.zeros(a.shape[:2] + (chunk, a.shape[3]), dtype=a.dtype) for a in (q, k, v)]
        for b, n in enumerate(counts):
            for padded, full in zip(chunks, (q, k, v)):
                padded[b, :, :n] = full[b, :, position[b] : position[b] + n]
        result = cached_attention(*chunks, cache, n_new=np.array(counts), backend=backend)
        for b, n in enumerate(counts):
            out[b, :, position[b] : position[b] + n] = result[b, :, :n]
            # The padding rows of a ragged chunk are zeros.
            assert not result[b, :, n:].any()
        position += counts
    np.testing.assert_array_equal(cache.lengths[0], position)
    return out


def _expected(q, k, v, lengths):
    """Full causal attention over each sequence's own tokens, float64, sequence by sequence."""
    out = np.zeros(q.shape[:3] + (v.shape[3],))
    for b, n in enumerate(lengths):
        out[b : b + 1, :, :n] = reference_attention(
            q[b : b + 1, :, :n], k[b : b + 1, :, :n], v[b : b + 1, :, :n], is_causal=True
        )
    return out


def _compare(out, expected, lengths, dtype):
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(out[b, :, :n], expected[b, :, :n], **TOLERANCE[dtype])


def _prefill_then_decode(prompts, totals):
    """Steps that prefill each prompt in one ragged chunk, then decode one token at a time."""
    steps = [list(prompts)]
    position = np.array(prompts)
    while (position < totals).any():
        counts = [int(t > p) for p, t in zip(position, totals)]
        steps.append(counts)
        position += counts
    return steps


def _random_chunks(rng, totals, max_chunk):
    """Steps of random chunk sizes 0 .. max_chunk per sequence until each reaches its total."""
    steps, position = [], np.zeros(len(totals), dtype=int)
    while (position < totals).any():
        counts = [int(min(rng.integers(0, max_chunk + 1), t - p)) for p, t in zip(position, totals)]
        if sum(counts):
            steps.append(counts)
            position += counts
    return steps


# ----------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("heads", list(HEADS))
def test_prefill_then_decode_equals_full(backend, dtype, heads):
    rng = np.random.default_rng(list(HEADS).index(heads))
    n_heads, n_kv_heads = HEADS[heads]
    q, k, v = _sequences(rng, 1, n_heads, n_kv_heads, 13, dtype)
    with tiny_tiles(backend):
        out = _decode(q, k, v, _prefill_then_decode([5], [13]), backend)
    _compare(out, _expected(q, k, v, [13]), [13], dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("heads", list(HEADS))
def test_ragged_batch_equals_full(backend, dtype, heads):
    # Three sequences with different prompt and total lengths decoded in one batch.
    rng = np.random.default_rng(10 + list(HEADS).index(heads))
    n_heads, n_kv_heads = HEADS[heads]
    totals = [11, 6, 14]
    q, k, v = _sequences(rng, 3, n_heads, n_kv_heads, max(totals), dtype)
    with tiny_tiles(backend):
        out = _decode(q, k, v, _prefill_then_decode([4, 1, 7], totals), backend, max_len=16)
    _compare(out, _expected(q, k, v, totals), totals, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_chunks_of_varying_size_equal_full(backend, dtype):
    rng = np.random.default_rng(20)
    totals = [17, 9]
    q, k, v = _sequences(rng, 2, 6, 2, max(totals), dtype)
    steps = _random_chunks(rng, totals, max_chunk=5)
    with tiny_tiles(backend):
        out = _decode(q, k, v, steps, backend)
    _compare(out, _expected(q, k, v, totals), totals, dtype)


@st.composite
def schedules(draw):
    """A random batch of sequences, head layout and chunk schedule."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    n_kv_heads, group = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    totals = draw(st.lists(st.integers(1, 12), min_size=1, max_size=3))
    head_dim, value_dim = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    q, k, v = _sequences(
        rng, len(totals), n_kv_heads * group, n_kv_heads, max(totals), dtype, head_dim, value_dim
    )
    steps = _random_chunks(rng, np.array(totals), max_chunk=draw(st.integers(1, 6)))
    return q, k, v, totals, steps


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25, deadline=None)
@given(case=schedules())
def test_random_schedules_equal_full(backend, case):
    q, k, v, totals, steps = case
    with tiny_tiles(backend):
        out = _decode(q, k, v, steps, backend)
    _compare(out, _expected(q, k, v, totals), totals, q.dtype.type)


def test_backends_agree_with_default_tiles(fast_backend):
    # Past the default tiles (256 rows, 512 keys): a 700-token cache, 16/4 heads, float32.
    rng = np.random.default_rng(30)
    q, k, v = _sequences(rng, 2, 16, 4, 700, np.float32, head_dim=64, value_dim=64)
    steps = [[600, 650]] + [[1, 1]] * 50
    out = _decode(q, k, v, steps, fast_backend)
    totals = [650, 700]
    _compare(out, _expected(q, k, v, totals), totals, np.float32)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torch_sdpa_is_causal(backend, dtype):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
    rng = np.random.default_rng(40)
    totals = [12, 7]
    q, k, v = _sequences(rng, 2, 6, 2, max(totals), dtype)
    out = _decode(q, k, v, _prefill_then_decode([5, 2], totals), backend)
    for b, n in enumerate(totals):
        tensors = [torch.from_numpy(np.ascontiguousarray(a[b : b + 1, :, :n])) for a in (q, k, v)]
        with torch.no_grad():
            expected = torch.nn.functional.scaled_dot_product_attention(
                *tensors, is_causal=True, enable_gqa=True
            ).numpy()
        np.testing.assert_allclose(out[b : b + 1, :, :n], expected, **TOLERANCE[dtype])


# ----------------------------------------------------------------------------- cache contents


def test_new_cache_is_empty_and_zero_filled():
    cache = KVCache(2, 3, 10, 4, value_dim=5, n_layers=2, dtype=np.float64)
    assert cache.keys.shape == (2, 2, 3, 10, 4)
    assert cache.values.shape == (2, 2, 3, 10, 5)
    assert cache.keys.dtype == cache.values.dtype == np.float64
    assert not cache.keys.any()
    assert not cache.values.any()
    np.testing.assert_array_equal(cache.lengths, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="read-only"):
        cache.lengths[0, 0] = 3


def test_append_stores_tokens_after_each_sequence():
    rng = np.random.default_rng(50)
    cache = KVCache(2, 1, 6, 2, n_layers=2, dtype=np.float64)
    first, second = rng.normal(size=(2, 2, 1, 3, 2))
    cache.append(first, first, n_new=[3, 1])
    cache.append(second, second, n_new=[2, 3])

    np.testing.assert_array_equal(cache.lengths, [[5, 4], [0, 0]])
    np.testing.assert_array_equal(cache.keys[0, 0, 0, :5], np.vstack([first[0, 0], second[0, 0, :2]]))
    np.testing.assert_array_equal(cache.keys[0, 1, 0, :4], np.vstack([first[1, 0, :1], second[1, 0]]))
    # The other layer is untouched.
    assert not cache.keys[1].any()


def test_layers_are_independent(backend):
    rng = np.random.default_rng(60)
    q, k, v = _sequences(rng, 1, 2, 1, 6, np.float64)
    cache = KVCache(1, 1, 6, 8, value_dim=5, n_layers=2, dtype=np.float64)
    cached_attention(q[:, :, :4], k[:, :, :4], v[:, :, :4], cache, layer=1, backend=backend)
    out = cached_attention(q[:, :, :2], k[:, :, :2], v[:, :, :2], cache, layer=0, backend=backend)
    np.testing.assert_array_equal(cache.lengths, [[2], [4]])
    np.testing.assert_allclose(out, reference_attention(q[:, :, :2], k[:, :, :2], v[:, :, :2], is_causal=True),
                               **TOLERANCE[np.float64])


def test_reset_forgets_old_tokens(backend):
    rng = np.random.default_rng(70)
    q, k, v = _sequences(rng, 2, 4, 2, 8, np.float64)
    cache = KVCache(2, 2, 8, 8, value_dim=5, dtype=np.float64)
    # Large old values: if a reset cache still read them, the outputs would change visibly.
    cached_attention(q * 3, k * 100, v * 100, cache, backend=backend)
    cache.reset()
    np.testing.assert_array_equal(cache.lengths, [[0, 0]])
    out = cached_attention(q[:, :, :5], k[:, :, :5], v[:, :, :5], cache, backend=backend)
    expected = reference_attention(q[:, :, :5], k[:, :, :5], v[:, :, :5], is_causal=True)
    np.testing.assert_allclose(out, expected, **TOLERANCE[np.float64])


def test_truncate_rolls_back_tokens(backend):
    rng = np.random.default_rng(75)
    q, k, v = _sequences(rng, 2, 2, 2, 7, np.float64)
    cache = KVCache(2, 2, 7, 8, value_dim=5, dtype=np.float64)
    cached_attention(q[:, :, :3], k[:, :, :3], v[:, :, :3], cache, backend=backend)
    # Two draft tokens with wrong keys and values, then rolled back.
    cached_attention(q[:, :, 3:5], k[:, :, 3:5] * 50, v[:, :, 3:5] * 50, cache, backend=backend)
    cache.truncate(3)
    np.testing.assert_array_equal(cache.lengths, [[3, 3]])

    out = cached_attention(q[:, :, 3:], k[:, :, 3:], v[:, :, 3:], cache, backend=backend)
    expected = reference_attention(q, k, v, is_causal=True)[:, :, 3:]
    np.testing.assert_allclose(out, expected, **TOLERANCE[np.float64])


def test_truncate_keeps_shorter_sequences():
    cache = KVCache(2, 1, 6, 2, dtype=np.float64)
    cache.append(np.ones((2, 1, 5, 2)), np.ones((2, 1, 5, 2)), n_new=[5, 2])
    cache.truncate(3)
    np.testing.assert_array_equal(cache.lengths, [[3, 2]])
    with pytest.raises(ValueError, match="length must be >= 0, got -1"):
        cache.truncate(-1)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_fused_backends_skip_rows_past_length(backend):
    # The fused kernels receive the whole buffer; NaN past the valid lengths must stay unread.
    rng = np.random.default_rng(80)
    q, k, v = _sequences(rng, 2, 4, 2, 9, np.float64)
    cache = KVCache(2, 2, 20, 8, value_dim=5, dtype=np.float64)
    cache.keys[0, :, :, 9:] = np.nan
    cache.values[0, :, :, 9:] = np.nan
    steps = _prefill_then_decode([3, 6], [9, 7])
    position = np.zeros(2, dtype=int)
    for counts in steps:
        chunk = max(counts)
        padded = [np.zeros(a.shape[:2] + (chunk, a.shape[3])) for a in (q, k, v)]
        for b, n in enumerate(counts):
            for target, full in zip(padded, (q, k, v)):
                target[b, :, :n] = full[b, :, position[b] : position[b] + n]
        out = cached_attention(*padded, cache, n_new=counts, backend=backend)
        assert np.isfinite(out).all()
        position += counts


# ----------------------------------------------------------------------------- errors

B, HKV, MAX_LEN, E, EV = 2, 2, 4, 3, 5


def _cache():
    return KVCache(B, HKV, MAX_LEN, E, value_dim=EV, dtype=np.float64)


def _step(n_tokens=1, n_heads=4, head_dim=E):
    q = np.zeros((B, n_heads, n_tokens, head_dim))
    k = np.zeros((B, HKV, n_tokens, head_dim))
    v = np.zeros((B, HKV, n_tokens, EV))
    return q, k, v


def test_overflow_raises_and_keeps_cache():
    cache = _cache()
    cached_attention(*_step(3), cache)
    message = "KV cache overflow: sequence 0 of layer 0 contains 3 tokens and cannot take 2 more with max_len=4"
    with pytest.raises(ValueError, match=message):
        cached_attention(*_step(2), cache)
    np.testing.assert_array_equal(cache.lengths, [[3, 3]])
    # A ragged step that fits still goes through.
    cached_attention(*_step(2), cache, n_new=[1, 0])
    np.testing.assert_array_equal(cache.lengths, [[4, 3]])


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(k=np.zeros((B, 3, 1, E))), ValueError, r"k has 3 key/value heads \(axis 1\) but the cache has n_kv_heads=2"),
        (dict(v=np.zeros((B, 1, 1, EV))), ValueError, r"v has 1 key/value heads \(axis 1\) but the cache has n_kv_heads=2"),
        (dict(k=np.zeros((B, HKV, 1, 4))), ValueError, r"k has 4 features per head \(axis 3\) but the cache expects 3; expected shape \(batch_size=2, n_kv_heads=2, L, 3\)"),
        (dict(v=np.zeros((B, HKV, 1, 6))), ValueError, r"v has 6 features per head \(axis 3\) but the cache expects 5"),
        (dict(k=np.zeros((3, HKV, 1, E))), ValueError, r"k has 3 sequences \(axis 0\) but the cache has batch_size=2"),
        (dict(k=np.zeros((HKV, 1, E))), ValueError, r"k must be 4-D .* got shape \(2, 1, 3\)"),
        (dict(k=np.zeros(E)), ValueError, r"k must be 4-D \(batch_size=2, n_kv_heads=2, L, 3\), got shape \(3,\)"),
        (dict(k="keys"), TypeError, "k must be an array of floats, got str"),
        (dict(v=np.zeros((B, HKV, 2, EV))), ValueError, r"k and v must have the same number of tokens \(axis 2\)"),
        (dict(k=np.zeros((B, HKV, 2, E)), v=np.zeros((B, HKV, 2, EV))), ValueError, r"q and k must have the same number of tokens"),
        (dict(q=np.zeros((B, 3, 1, E))), ValueError, r"q has 3 heads \(axis 1\), which is not a multiple of the cache's n_kv_heads=2"),
        (dict(q=np.zeros((B, 4, 1, 4))), ValueError, r"q has head dim 4 \(axis 3\) but the cache has head_dim=3"),
        (dict(q=np.zeros((1, 4, 1, E))), ValueError, r"q has 1 sequences \(axis 0\) but the cache has batch_size=2"),
        (dict(q=np.zeros((4, 1, E))), ValueError, r"q must be 4-D \(batch_size, Hq, L, E\), got shape \(4, 1, 3\)"),
        (dict(q=np.zeros((B, 4, 1, E), np.float32)), TypeError, r"q has dtype float32 but the cache stores float64; convert with q.astype\(np.float64\)"),
        (dict(k=np.zeros((B, HKV, 1, E), np.float32)), TypeError, "k has dtype float32 but the cache stores float64"),
        (dict(k=np.zeros((B, HKV, 1, E), np.int64)), TypeError, "k has dtype int64 but the cache stores float64; convert with k.astype\\(np.float64\\)"),
        (dict(n_new=[1, 2]), ValueError, "n_new must be between 0 and the chunk length L=1, got 2 for sequence 1"),
        (dict(n_new=[1]), ValueError, r"n_new must have shape \(batch_size,\) = \(2,\), got \(1,\)"),
        (dict(n_new=[1.0, 1.0]), TypeError, "n_new must contain integers, got dtype float64"),
        (dict(layer=1), ValueError, "layer must be <= 0, got 1"),
        (dict(cache="cache"), TypeError, "cache must be a KVCache, got str"),
        (dict(backend="fortran"), ValueError, "invalid backend='fortran' for attention"),
    ],
)
def test_invalid_step_message(change, error, message):
    cache = _cache()
    q, k, v = _step()
    arguments = dict(q=q, k=k, v=v, cache=cache)
    arguments.update(change)
    with pytest.raises(error, match=message):
        cached_attention(**arguments)
    # A rejected step appends nothing.
    np.testing.assert_array_equal(cache.lengths, [[0, 0]])


@pytest.mark.parametrize("name", ["q", "k", "v"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_step_rejected(name, bad):
    cache = _cache()
    tensors = dict(zip("qkv", _step(2)))
    tensors[name][1, 0, 1, 2] = bad
    with pytest.raises(ValueError, match=re.escape(f"{name} contains NaN or infinity (first at index (1, 0, 1, 2)")):
        cached_attention(tensors["q"], tensors["k"], tensors["v"], cache)
    np.testing.assert_array_equal(cache.lengths, [[0, 0]])


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        (dict(batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
        (dict(max_len=0), ValueError, "max_len must be >= 1, got 0"),
        (dict(n_kv_heads=2.0), TypeError, "n_kv_heads must be an int, got 2.0"),
        (dict(dtype=np.float16), TypeError, "dtype must be float32 or float64, got float16"),
        (dict(n_layers=0), ValueError, "n_layers must be >= 1, got 0"),
    ],
)
def test_invalid_cache_message(arguments, error, message):
    options = dict(batch_size=1, n_kv_heads=1, max_len=4, head_dim=2)
    options.update(arguments)
    with pytest.raises(error, match=message):
        KVCache(**options)


def test_empty_chunk_returns_empty_output():
    cache = _cache()
    out = cached_attention(*_step(0), cache)
    assert out.shape == (B, 4, 0, EV)
    np.testing.assert_array_equal(cache.lengths, [[0, 0]])


def test_decoding_query_sees_every_cached_key():
    # One query against a prefilled cache equals non-causal attention over the cached keys.
    rng = np.random.default_rng(90)
    q, k, v = _sequences(rng, 1, 4, 2, 6, np.float64)
    cache = KVCache(1, 2, 8, 8, value_dim=5, dtype=np.float64)
    cached_attention(q[:, :, :5], k[:, :, :5], v[:, :, :5], cache)
    out = cached_attention(q[:, :, 5:], k[:, :, 5:], v[:, :, 5:], cache, backend="numpy")
    expected = scaled_dot_product_attention(q[:, :, 5:], k, v, enable_gqa=True, backend="naive")
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)

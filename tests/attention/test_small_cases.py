"""Hand-computed cases: mask polarity, causal alignment, grouped heads, fully masked rows."""

import math

import numpy as np
import pytest

from fastml.attention import scaled_dot_product_attention
from fastml.backends import load

from .conftest import FUSED_BACKENDS, reference_attention


def test_two_keys_by_hand(backend):
    # Scores 1 * 0 and 1 * ln 3 (scale 1): weights 1/4 and 3/4.
    q = np.array([[[[1.0]]]])
    k = np.array([[[[0.0], [math.log(3.0)]]]])
    v = np.array([[[[4.0, 0.0], [0.0, 8.0]]]])
    out = scaled_dot_product_attention(q, k, v, scale=1.0, backend=backend)
    np.testing.assert_allclose(out, [[[[1.0, 6.0]]]], rtol=1e-14)


def test_default_scale_is_inverse_sqrt_head_dim(backend):
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(1, 1, 3, 4)) for _ in range(3))
    default = scaled_dot_product_attention(q, k, v, backend=backend)
    explicit = scaled_dot_product_attention(q, k, v, scale=0.5, backend=backend)
    np.testing.assert_allclose(default, explicit, rtol=1e-14)


def test_bool_mask_true_means_attend(backend):
    q = np.zeros((1, 1, 1, 2))
    k = np.zeros((1, 1, 3, 2))
    v = np.array([[[[1.0], [10.0], [100.0]]]])
    mask = np.array([True, False, True])[None, :]
    out = scaled_dot_product_attention(q, k, v, attn_mask=mask, backend=backend)
    # Equal scores over the two allowed keys: their plain mean.
    np.testing.assert_allclose(out, [[[[50.5]]]], rtol=1e-14)


def test_float_mask_is_added_to_scores(backend):
    q = np.zeros((1, 1, 1, 2))
    k = np.zeros((1, 1, 2, 2))
    v = np.array([[[[0.0], [1.0]]]])
    mask = np.array([[0.0, math.log(4.0)]])
    out = scaled_dot_product_attention(q, k, v, attn_mask=mask, backend=backend)
    np.testing.assert_allclose(out, [[[[0.8]]]], rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fully_masked_row_is_zero(backend, dtype):
    rng = np.random.default_rng(1)
    q, k, v = (rng.normal(size=(2, 2, 3, 4)).astype(dtype) for _ in range(3))
    mask = np.ones((3, 3), dtype=bool)
    mask[1] = False
    float_mask = np.where(mask, 0.0, -np.inf)
    for m in (mask, float_mask):
        out = scaled_dot_product_attention(q, k, v, attn_mask=m, backend=backend)
        assert np.all(np.isfinite(out))
        np.testing.assert_array_equal(out[:, :, 1], 0.0)
        np.testing.assert_allclose(out, reference_attention(q, k, v, mask=m), rtol=1e-5, atol=1e-6)


def test_masked_keys_do_not_matter_however_large(backend):
    rng = np.random.default_rng(2)
    q = rng.normal(size=(1, 2, 4, 3)).astype(np.float32)
    k = rng.normal(size=(1, 2, 6, 3)).astype(np.float32)
    v = rng.normal(size=(1, 2, 6, 3)).astype(np.float32)
    mask = np.array([True, True, False, True, False, True])[None, :]
    expected = scaled_dot_product_attention(q, k, v, attn_mask=mask, backend=backend)

    # Keys so large that q.k overflows to +-inf in float32, values near the float32 maximum.
    k[:, :, [2, 4]] = 3e38
    v[:, :, [2, 4]] = -3e38
    result = scaled_dot_product_attention(q, k, v, attn_mask=mask, backend=backend)
    np.testing.assert_array_equal(result, expected)


def test_large_scores_stay_finite_in_float32(backend):
    rng = np.random.default_rng(3)
    q = (rng.normal(size=(1, 1, 5, 8)) * 300).astype(np.float32)
    k = (rng.normal(size=(1, 1, 7, 8)) * 300).astype(np.float32)
    v = rng.normal(size=(1, 1, 7, 2)).astype(np.float32)
    # Scores of order 1e5: exp without the max subtracted would overflow at 89.
    out = scaled_dot_product_attention(q, k, v, backend=backend)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, reference_attention(q, k, v), rtol=1e-4, atol=1e-4)


def test_causal_aligns_bottom_right(backend):
    # Values are the key positions, and equal scores average the visible ones.
    q = np.zeros((1, 1, 2, 1))
    k = np.zeros((1, 1, 4, 1))
    v = np.arange(4.0).reshape(1, 1, 4, 1)
    out = scaled_dot_product_attention(q, k, v, is_causal=True, backend=backend)
    # Query 0 attends to keys 0..2 (S - L + 0 = 2), query 1 attends to keys 0..3.
    np.testing.assert_allclose(out[0, 0, :, 0], [1.0, 1.5], rtol=1e-14)


def test_single_decoding_query_sees_every_key(backend):
    rng = np.random.default_rng(4)
    q = rng.normal(size=(1, 2, 1, 4))
    k, v = rng.normal(size=(2, 1, 2, 9, 4))
    causal = scaled_dot_product_attention(q, k, v, is_causal=True, backend=backend)
    full = scaled_dot_product_attention(q, k, v, backend=backend)
    np.testing.assert_allclose(causal, full, rtol=1e-13)


def test_causal_with_more_queries_than_keys(backend):
    # L = 4 > S = 2: queries 0 and 1 come before the first key and see nothing.
    q = np.zeros((1, 1, 4, 1))
    k = np.zeros((1, 1, 2, 1))
    v = np.array([[[[2.0], [4.0]]]])
    out = scaled_dot_product_attention(q, k, v, is_causal=True, backend=backend)
    np.testing.assert_allclose(out[0, 0, :, 0], [0.0, 0.0, 2.0, 3.0], rtol=1e-14)


def test_kv_lengths_ignore_padding(backend):
    rng = np.random.default_rng(5)
    q = rng.normal(size=(2, 2, 3, 4))
    k = rng.normal(size=(2, 2, 6, 4))
    v = rng.normal(size=(2, 2, 6, 4))
    out = scaled_dot_product_attention(q, k, v, kv_lengths=[6, 4], is_causal=True, backend=backend)
    # Batch 1 equals attention over its first 4 keys, whatever the padding holds.
    trimmed = scaled_dot_product_attention(q[1:], k[1:, :, :4], v[1:, :, :4], is_causal=True,
                                           backend=backend)
    np.testing.assert_allclose(out[1:], trimmed, rtol=1e-13)
    np.testing.assert_allclose(
        out, reference_attention(q, k, v, is_causal=True, kv_lengths=[6, 4]), rtol=1e-12
    )


def test_zero_kv_length_gives_zeros(backend):
    q, k, v = np.ones((1, 1, 2, 3)), np.ones((1, 1, 4, 3)), np.ones((1, 1, 4, 3))
    out = scaled_dot_product_attention(q, k, v, kv_lengths=0, backend=backend)
    np.testing.assert_array_equal(out, 0.0)


def test_gqa_head_mapping(backend):
    # Each key/value head has constant values equal to its index, so the output of query
    # head h is the index of the key/value head it reads: h // (Hq / Hkv).
    q = np.random.default_rng(6).normal(size=(1, 6, 2, 3))
    k = np.zeros((1, 3, 4, 3))
    v = np.broadcast_to(np.arange(3.0)[None, :, None, None], (1, 3, 4, 1)).copy()
    out = scaled_dot_product_attention(q, k, v, enable_gqa=True, backend=backend)
    np.testing.assert_allclose(out[0, :, 0, 0], [0, 0, 1, 1, 2, 2], atol=1e-15)


def test_single_kv_head_broadcasts_without_gqa(backend):
    rng = np.random.default_rng(7)
    q = rng.normal(size=(2, 4, 3, 5))
    k, v = rng.normal(size=(2, 2, 1, 6, 5))
    broadcast = scaled_dot_product_attention(q, k, v, backend=backend)
    grouped = scaled_dot_product_attention(q, k, v, enable_gqa=True, backend=backend)
    np.testing.assert_allclose(broadcast, grouped, rtol=1e-14)


def test_batch_dimensions_broadcast(backend):
    rng = np.random.default_rng(8)
    q = rng.normal(size=(2, 3, 2, 4, 5))
    k, v = rng.normal(size=(2, 1, 3, 2, 6, 5))
    out = scaled_dot_product_attention(q, k, v, backend=backend)
    assert out.shape == (2, 3, 2, 4, 5)
    for b in range(2):
        expected = reference_attention(q[b], k[0], v[0])
        np.testing.assert_allclose(out[b], expected, rtol=1e-12)


def test_two_dimensional_inputs(backend):
    rng = np.random.default_rng(9)
    q, k, v = rng.normal(size=(4, 3)), rng.normal(size=(6, 3)), rng.normal(size=(6, 2))
    out = scaled_dot_product_attention(q, k, v, backend=backend)
    assert out.shape == (4, 2)
    np.testing.assert_allclose(out, reference_attention(q[None, None], k[None, None],
                                                        v[None, None])[0, 0], rtol=1e-12)


def test_empty_inputs(backend):
    out = scaled_dot_product_attention(np.ones((1, 2, 0, 3)), np.ones((1, 2, 5, 3)),
                                       np.ones((1, 2, 5, 4)), backend=backend)
    assert out.shape == (1, 2, 0, 4)
    # No key at all: every query attends to nothing, so zeros.
    out = scaled_dot_product_attention(np.ones((1, 2, 3, 3)), np.ones((1, 2, 0, 3)),
                                       np.ones((1, 2, 0, 4)), backend=backend)
    np.testing.assert_array_equal(out, np.zeros((1, 2, 3, 4)))


def test_float16_is_computed_in_float32(backend):
    rng = np.random.default_rng(10)
    q, k, v = (rng.normal(size=(1, 2, 5, 8)).astype(np.float16) for _ in range(3))
    out = scaled_dot_product_attention(q, k, v, is_causal=True, backend=backend)
    assert out.dtype == np.float16
    expected = reference_attention(q, k, v, is_causal=True).astype(np.float16)
    np.testing.assert_allclose(out.astype(np.float64), expected, rtol=2e-3, atol=2e-3)


def test_output_is_contiguous_and_new(backend):
    q = np.asfortranarray(np.random.default_rng(11).normal(size=(2, 3, 4)))
    out = scaled_dot_product_attention(q, q, q, backend=backend)
    assert out.flags.c_contiguous
    assert not np.shares_memory(out, q)


def test_finite_mask_everywhere_is_not_masking(backend):
    rng = np.random.default_rng(12)
    q, k, v = (rng.normal(size=(1, 1, 3, 4)) for _ in range(3))
    # A constant shift of every score leaves the softmax unchanged...
    shifted = scaled_dot_product_attention(q, k, v, attn_mask=np.full((3, 3), -1000.0),
                                           backend=backend)
    np.testing.assert_allclose(shifted, scaled_dot_product_attention(q, k, v, backend=backend),
                               rtol=1e-10)
    # ...and -1e30 absorbs the scores in rounding: equal scores, the plain mean, not zeros.
    absorbed = scaled_dot_product_attention(q, k, v, attn_mask=np.full((3, 3), -1e30),
                                            backend=backend)
    np.testing.assert_allclose(absorbed, np.broadcast_to(v.mean(axis=2, keepdims=True), v.shape),
                               rtol=1e-12)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_fused_backends_never_read_padding(backend):
    # Called past the public checks, with NaN in the padded keys and values: a backend that
    # read them would return NaN.
    rng = np.random.default_rng(13)
    q = rng.normal(size=(2, 4, 3, 8))
    k = rng.normal(size=(2, 2, 10, 8))
    v = rng.normal(size=(2, 2, 10, 8))
    lengths = np.array([10, 6], dtype=np.intp)
    k[1, :, 6:] = np.nan
    v[1, :, 6:] = np.nan
    module = load("attention", backend)
    out = module.attend(q, k, v, np.arange(2), None, lengths, True, 0.25, 2)
    assert np.all(np.isfinite(out))
    expected = reference_attention(q, np.nan_to_num(k), np.nan_to_num(v), is_causal=True,
                                   scale=0.25, kv_lengths=lengths)
    np.testing.assert_allclose(out, expected, rtol=1e-12)

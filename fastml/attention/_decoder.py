"""A minimal decoder attention layer: projections, optional RoPE and causal attention, with a cache.

It is the attention half of a transformer decoder block (no normalization, no feed-forward),
enough to run a prefill followed by token-by-token decoding. Without a cache, ``forward`` is
causal self-attention over the whole input, computed by ``multi_head_attention``. With a
``KVCache``, the input holds only the new tokens: their keys and values are appended to the
cache and their queries attend over everything cached, so decoding token n costs O(n).
"""

import numpy as np

from fastml._threads import blas_threads, get_num_threads
from fastml._validation import check_float, check_int
from fastml.attention._kv_cache import KVCache, cached_attention
from fastml.attention._multi_head import (
    _check_biases,
    _check_input,
    _check_weights,
    _merge_heads,
    _project,
    _split_heads,
    multi_head_attention,
    rotary_embedding,
)


class DecoderLayer:
    """Causal self-attention with q/k/v/o projections, optional RoPE and an optional KV cache.

    Parameters
    ----------
    w_q, w_k, w_v, w_o : array-like
        Projection weights, input features first (``x @ w``): w_q (D, Hq * E), w_k (D, Hkv * E),
        w_v (D, Hkv * Ev), w_o (Hq * Ev, D_out). float32 or float64, all of one dtype.
    n_heads : int
        Query heads Hq.
    n_kv_heads : int, optional
        Key/value heads Hkv, a divisor of n_heads; n_heads by default.
    b_q, b_k, b_v, b_o : array-like, optional
        Biases of the four projections.
    rope_theta : float, optional
        Base of the rotary position embeddings (half-split layout); None applies none.
    scale : float, optional
        Multiplies the scores; 1 / sqrt(E) by default.
    backend : {"auto", "naive", "numpy", "numba", "cython"}
    """

    def __init__(
        self, w_q, w_k, w_v, w_o, n_heads, n_kv_heads=None, *, b_q=None, b_k=None, b_v=None,
        b_o=None, rope_theta=None, scale=None, backend="auto",
    ):
        w_q = _check_input(w_q, "w_q")
        if w_q.dtype not in (np.float32, np.float64):
            raise TypeError(f"w_q has dtype {w_q.dtype}; expected float32 or float64")
        self.n_heads = check_int(n_heads, "n_heads", min_value=1)
        self.n_kv_heads = (
            self.n_heads if n_kv_heads is None else check_int(n_kv_heads, "n_kv_heads", min_value=1)
        )
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}: "
                "each key/value head serves the same number of query heads"
            )
        # A stand-in input of one token carries the feature count and dtype the checks need.
        probe = np.zeros((1, w_q.shape[0]), dtype=w_q.dtype)
        self.weights = _check_weights(probe, w_q, w_k, w_v, w_o, self.n_heads, self.n_kv_heads)
        self.biases = _check_biases(probe, self.weights, b_q, b_k, b_v, b_o)
        self.head_dim = self.weights[0].shape[1] // self.n_heads
        self.value_dim = self.weights[2].shape[1] // self.n_kv_heads
        if rope_theta is not None:
            rope_theta = check_float(rope_theta, "rope_theta", min_value=0.0, include_min=False)
            if self.head_dim % 2:
                raise ValueError(
                    f"rotary embeddings pair features, so the head dim must be even, got {self.head_dim}"
                )
        self.rope_theta = rope_theta
        self.scale = scale
        self.backend = backend

    @property
    def dtype(self):
        return self.weights[0].dtype

    def new_cache(self, batch_size, max_len, *, n_layers=1):
        """Return an empty KVCache shaped for this layer (heads, head dims and dtype)."""
        return KVCache(
            batch_size, self.n_kv_heads, max_len, self.head_dim, value_dim=self.value_dim,
            n_layers=n_layers, dtype=self.dtype,
        )

    def forward(self, x, cache=None, *, layer=0, n_new=None):
        """Return the attention output (B, L, D_out) of the tokens `x` (B, L, D).

        Without `cache`, `x` is the whole sequence and the attention is causal over it. With
        `cache`, `x` contains new tokens only: they take positions lengths[b] .. of their sequence,
        their keys and values are appended to `layer` of the cache, and their queries see every
        cached token up to their own. `n_new` marks a ragged chunk as in ``cached_attention``;
        the output rows of its padding tokens are the output projection's bias (zeros without
        one).
        """
        x = self._check_x(x, cache)
        if cache is None:
            if n_new is not None:
                raise ValueError("n_new marks a ragged chunk of a cache; pass it with cache=...")
            return self._forward_full(x)
        return self._forward_cached(x, cache, layer, n_new)

    __call__ = forward

    # ------------------------------------------------------------------------- steps

    def _forward_full(self, x):
        w_q, w_k, w_v, w_o = self.weights
        b_q, b_k, b_v, b_o = self.biases
        return multi_head_attention(
            x, w_q, w_k, w_v, w_o, self.n_heads, self.n_kv_heads, b_q=b_q, b_k=b_k, b_v=b_v,
            b_o=b_o, is_causal=True, scale=self.scale, rope_theta=self.rope_theta,
            backend=self.backend,
        )

    def _forward_cached(self, x, cache, layer, n_new):
        w_q, w_k, w_v, w_o = self.weights
        b_q, b_k, b_v, b_o = self.biases
        with blas_threads(get_num_threads()):
            # (B, L, D) @ (D, H * E) -> (B, L, H * E) -> (B, H, L, E)
            q = _split_heads(_project(x, w_q, b_q), self.n_heads)
            k = _split_heads(_project(x, w_k, b_k), self.n_kv_heads)
            v = _split_heads(_project(x, w_v, b_v), self.n_kv_heads)
        if self.rope_theta is not None:
            # The new tokens continue each sequence: (B, 1, L) positions, one row per sequence.
            layer_index = cache._check_layer(layer)
            positions = cache.lengths[layer_index][:, None] + np.arange(x.shape[1])
            q = rotary_embedding(q, positions[:, None, :], theta=self.rope_theta)
            k = rotary_embedding(k, positions[:, None, :], theta=self.rope_theta)

        attended = cached_attention(
            np.ascontiguousarray(q), k, v, cache, layer=layer, n_new=n_new, scale=self.scale,
            backend=self.backend,
        )
        with blas_threads(get_num_threads()):
            # (B, Hq, L, Ev) -> (B, L, Hq * Ev) @ (Hq * Ev, D_out) -> (B, L, D_out)
            return _project(_merge_heads(attended), w_o, b_o)

    def _check_x(self, x, cache):
        x = _check_input(x, "x")
        n_features = self.weights[0].shape[0]
        if x.ndim != 3 or x.shape[2] != n_features:
            raise ValueError(f"x must have shape (B, L, D={n_features}), got {x.shape}")
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the weights have {self.dtype}; they must match")
        if cache is None:
            return x
        if not isinstance(cache, KVCache):
            raise TypeError(f"cache must be a KVCache or None, got {type(cache).__name__}")
        if x.shape[0] != cache.batch_size:
            raise ValueError(
                f"x has {x.shape[0]} sequences (axis 0) but the cache has "
                f"batch_size={cache.batch_size}"
            )
        return x

"""The key/value cache of autoregressive decoding, and attention of new queries against it.

Without a cache, generating token n recomputes the keys and values of all n tokens before it and
attends over them, O(n^2) work per token once the projections are counted. ``KVCache`` keeps the
keys and values of the tokens seen so far in preallocated buffers, so a decoding step projects
only the new token and attends once over the n cached keys: O(n) per token.

``cached_attention`` is the step: it appends the new keys and values to one layer of the cache
and returns the causal attention of the new queries over everything cached for their sequence.
Only the new tokens are validated (shape, dtype, finiteness), so the cache contents are known to
be finite, and the backend kernel is called directly on the cache buffers with the valid length
of every sequence. A step therefore costs O(cached length), with no scan of the whole buffer.
"""

import math

import numpy as np

from fastml import backends
from fastml._threads import get_num_threads
from fastml._validation import check_finite, check_float, check_int
from fastml.attention._api import _check_tensor

# Backends whose kernels take the whole contiguous buffer and never read past each sequence's
# valid length. The others receive a view cut at the longest valid length, so that their cost
# follows the cached length and not max_len.
_LENGTH_AWARE_BACKENDS = ("numba", "cython")


class KVCache:
    """Preallocated keys and values of every layer, with the cached length of every sequence.

    Parameters
    ----------
    batch_size : int
        Sequences decoded together (B).
    n_kv_heads : int
        Key/value heads (Hkv). The queries may have any multiple of it (grouped-query attention).
    max_len : int
        Tokens each sequence can hold. Appending past it raises ``ValueError``: the buffers never
        grow, so that a step never copies the cache.
    head_dim : int
        Features per key head (E).
    value_dim : int, optional
        Features per value head (Ev); `head_dim` by default.
    n_layers : int
        Layers of the model; each has its own buffers and lengths.
    dtype : {numpy.float32, numpy.float64}
        The dtype of the buffers; the keys, values and queries of every step must have it.

    Attributes
    ----------
    keys : ndarray of shape (n_layers, B, Hkv, max_len, E)
    values : ndarray of shape (n_layers, B, Hkv, max_len, Ev)
        The buffers, zero-filled at creation. Row t of sequence b in a layer is valid for
        t < lengths[layer, b]; rows beyond are left over from before a reset, or zero.
    """

    def __init__(
        self, batch_size, n_kv_heads, max_len, head_dim, *, value_dim=None, n_layers=1,
        dtype=np.float32,
    ):
        batch_size = check_int(batch_size, "batch_size", min_value=1)
        n_kv_heads = check_int(n_kv_heads, "n_kv_heads", min_value=1)
        max_len = check_int(max_len, "max_len", min_value=1)
        head_dim = check_int(head_dim, "head_dim", min_value=1)
        value_dim = head_dim if value_dim is None else check_int(value_dim, "value_dim", min_value=1)
        n_layers = check_int(n_layers, "n_layers", min_value=1)
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")

        # Zero-filled, not np.empty: every row ever handed to a backend must be finite, because a
        # NaN in a row that a query does not see would still poison a 0 * NaN product in NumPy.
        self.keys = np.zeros((n_layers, batch_size, n_kv_heads, max_len, head_dim), dtype)
        self.values = np.zeros((n_layers, batch_size, n_kv_heads, max_len, value_dim), dtype)
        self._lengths = np.zeros((n_layers, batch_size), dtype=np.intp)

    def __repr__(self):
        n_layers, batch_size, n_kv_heads, max_len, head_dim = self.keys.shape
        return (
            f"KVCache(batch_size={batch_size}, n_kv_heads={n_kv_heads}, max_len={max_len}, "
            f"head_dim={head_dim}, value_dim={self.value_dim}, n_layers={n_layers}, "
            f"dtype={self.dtype.name})"
        )

    # ------------------------------------------------------------------------- shape

    @property
    def n_layers(self):
        return self.keys.shape[0]

    @property
    def batch_size(self):
        return self.keys.shape[1]

    @property
    def n_kv_heads(self):
        return self.keys.shape[2]

    @property
    def max_len(self):
        return self.keys.shape[3]

    @property
    def head_dim(self):
        return self.keys.shape[4]

    @property
    def value_dim(self):
        return self.values.shape[4]

    @property
    def dtype(self):
        return self.keys.dtype

    @property
    def lengths(self):
        """Cached tokens per layer and sequence, shape (n_layers, B); a read-only view."""
        view = self._lengths.view()
        view.setflags(write=False)
        return view

    # ------------------------------------------------------------------------- updates

    def reset(self):
        """Forget every cached token of every layer and sequence (the buffers are kept)."""
        self._lengths[:] = 0

    def truncate(self, length):
        """Keep at most the first `length` tokens of every sequence in every layer.

        It rolls back tokens that were appended but not kept, such as rejected draft tokens.
        The benchmarks use it to repeat one decoding step at a fixed cache length.
        """
        length = check_int(length, "length", min_value=0)
        np.minimum(self._lengths, length, out=self._lengths)

    def append(self, k, v, *, layer=0, n_new=None):
        """Store the keys and values of new tokens after the cached ones of each sequence.

        Parameters
        ----------
        k : ndarray of shape (B, Hkv, L, E)
        v : ndarray of shape (B, Hkv, L, Ev)
            One token (L = 1) or a chunk, in the cache's dtype and finite.
        layer : int
        n_new : array-like of int of shape (B,), optional
            For a ragged chunk: sequence b appends only its first n_new[b] tokens (0 .. L); the
            rest of its rows are padding and ignored. L for every sequence by default.

        Returns
        -------
        ndarray of shape (B,)
            The number of tokens each sequence appended (`n_new`).
        """
        layer = self._check_layer(layer)
        k, v, n_new = self._check_step(k, v, n_new, layer)
        self._store(k, v, n_new, layer)
        return n_new

    def _store(self, k, v, n_new, layer):
        lengths = self._lengths[layer]
        for b in range(self.batch_size):
            start, stop = lengths[b], lengths[b] + n_new[b]
            self.keys[layer, b, :, start:stop] = k[b, :, : n_new[b]]
            self.values[layer, b, :, start:stop] = v[b, :, : n_new[b]]
        lengths += n_new

    # ------------------------------------------------------------------------- checks

    def _check_layer(self, layer):
        return check_int(layer, "layer", min_value=0, max_value=self.n_layers - 1)

    def _check_step(self, k, v, n_new, layer):
        """Validate the keys, values and counts of one append; return them normalized."""
        k = self._check_new(k, "k", self.head_dim)
        v = self._check_new(v, "v", self.value_dim)
        if v.shape[2] != k.shape[2]:
            raise ValueError(
                f"k and v must have the same number of tokens (axis 2), got k.shape={k.shape} "
                f"and v.shape={v.shape}"
            )
        n_new = self._check_n_new(n_new, k.shape[2])
        self._check_room(layer, n_new)
        return k, v, n_new

    def _check_new(self, array, name, n_features):
        """Validate the keys or values of new tokens: (B, Hkv, L, n_features), cache dtype, finite."""
        # The cache's own checks, not attention's: its shape and dtype are the ones to name.
        if not (hasattr(array, "__array__") or isinstance(array, (list, tuple))):
            raise TypeError(f"{name} must be an array of floats, got {type(array).__name__}")
        array = np.asarray(array)
        shape = array.shape
        if len(shape) != 4 or shape[:2] != self.keys.shape[1:3] or shape[3] != n_features:
            self._reject_shape(shape, name, n_features)
        if array.dtype != self.dtype:
            raise TypeError(
                f"{name} has dtype {array.dtype} but the cache stores {self.dtype}; convert with "
                f"{name}.astype(np.{self.dtype.name})"
            )
        check_finite(array, name)
        return array

    def _reject_shape(self, shape, name, n_features):
        # Kept apart from _check_new, whose passing path runs on every decoding step.
        expected = f"(batch_size={self.batch_size}, n_kv_heads={self.n_kv_heads}, L, {n_features})"
        if len(shape) != 4:
            raise ValueError(f"{name} must be 4-D {expected}, got shape {shape}")
        if shape[0] != self.batch_size:
            raise ValueError(
                f"{name} has {shape[0]} sequences (axis 0) but the cache has "
                f"batch_size={self.batch_size}; expected shape {expected}"
            )
        if shape[1] != self.n_kv_heads:
            raise ValueError(
                f"{name} has {shape[1]} key/value heads (axis 1) but the cache has "
                f"n_kv_heads={self.n_kv_heads}; expected shape {expected}"
            )
        raise ValueError(
            f"{name} has {shape[3]} features per head (axis 3) but the cache expects {n_features}; "
            f"expected shape {expected}"
        )

    def _check_n_new(self, n_new, n_tokens):
        if n_new is None:
            return np.full(self.batch_size, n_tokens, dtype=np.intp)
        n_new = np.asarray(n_new)
        if n_new.dtype.kind not in "iu":
            raise TypeError(f"n_new must contain integers, got dtype {n_new.dtype}")
        if n_new.shape != (self.batch_size,):
            raise ValueError(
                f"n_new must have shape (batch_size,) = ({self.batch_size},), got {n_new.shape}"
            )
        bad = (n_new < 0) | (n_new > n_tokens)
        if bad.any():
            b = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"n_new must be between 0 and the chunk length L={n_tokens}, got {int(n_new[b])} "
                f"for sequence {b}"
            )
        return n_new.astype(np.intp)

    def _check_room(self, layer, n_new):
        lengths = self._lengths[layer]
        over = lengths + n_new > self.max_len
        if over.any():
            b = int(np.flatnonzero(over)[0])
            raise ValueError(
                f"KV cache overflow: sequence {b} of layer {layer} contains {int(lengths[b])} tokens "
                f"and cannot take {int(n_new[b])} more with max_len={self.max_len}; create the "
                "cache with a larger max_len, or reset() it"
            )


def cached_attention(q, k, v, cache, *, layer=0, n_new=None, scale=None, backend="auto"):
    """Append new keys and values to `cache`, then attend with the new queries over the cache.

    Query i of sequence b is the token at position p = lengths[b] + i (lengths before the step)
    and attends to the cached keys 0 .. p: the causal mask aligned to the bottom-right corner, so one
    decoding query attends to every cached key. Query head h reads key/value head h // (Hq // Hkv).

    Parameters
    ----------
    q : ndarray of shape (B, Hq, L, E)
        Queries of the new tokens; Hq is a multiple of the cache's n_kv_heads.
    k : ndarray of shape (B, Hkv, L, E)
    v : ndarray of shape (B, Hkv, L, Ev)
        Keys and values of the same new tokens, appended to `layer` of the cache.
    cache : KVCache
    layer : int
    n_new : array-like of int of shape (B,), optional
        Ragged chunk: sequence b has n_new[b] new tokens, the first ones of the chunk; its other
        rows are padding. L for every sequence by default.
    scale : float, optional
        Multiplies the scores; 1 / sqrt(E) by default.
    backend : {"auto", "naive", "numpy", "numba", "cython"}

    Returns
    -------
    ndarray of shape (B, Hq, L, Ev)
        In the cache's dtype. The padding rows of a ragged chunk are zeros.
    """
    if not isinstance(cache, KVCache):
        raise TypeError(f"cache must be a KVCache, got {type(cache).__name__}")
    layer = cache._check_layer(layer)
    q = _check_queries(q, cache)
    module = backends.load("attention", backend)
    name = backends.resolve("attention", backend)
    scale = 1.0 / math.sqrt(cache.head_dim) if scale is None else check_float(scale, "scale")
    k, v, n_new = cache._check_step(k, v, n_new, layer)
    if k.shape[2] != q.shape[2]:
        raise ValueError(
            f"q and k must have the same number of tokens (axis 2), got q.shape={q.shape} "
            f"and k.shape={k.shape}"
        )
    cache._store(k, v, n_new, layer)

    n_batch, _, n_queries, _ = q.shape
    out_shape = (n_batch, q.shape[1], n_queries, cache.value_dim)
    lengths = cache._lengths[layer].copy()
    n_keys = int(lengths.max())
    if n_queries == 0 or n_keys == 0:
        return np.zeros(out_shape, dtype=cache.dtype)

    if name in _LENGTH_AWARE_BACKENDS:
        keys, values = cache.keys[layer], cache.values[layer]
    else:
        keys, values = cache.keys[layer, :, :, :n_keys], cache.values[layer, :, :, :n_keys]
    ragged = bool((n_new < n_queries).any())
    if ragged:
        q = _right_align(q, n_new)

    kv_batch = np.arange(n_batch, dtype=np.intp)
    out = module.attend(q, keys, values, kv_batch, None, lengths, True, scale, get_num_threads())
    if ragged:
        out = _left_align(out, n_new)
    return out


def _check_queries(q, cache):
    q = _check_tensor(q, "q")
    if q.ndim != 4:
        raise ValueError(f"q must be 4-D (batch_size, Hq, L, E), got shape {q.shape}")
    n_batch, n_heads, _, head_dim = q.shape
    if n_batch != cache.batch_size:
        raise ValueError(
            f"q has {n_batch} sequences (axis 0) but the cache has batch_size={cache.batch_size}"
        )
    if n_heads == 0 or n_heads % cache.n_kv_heads:
        raise ValueError(
            f"q has {n_heads} heads (axis 1), which is not a multiple of the cache's "
            f"n_kv_heads={cache.n_kv_heads}; each key/value head serves Hq / Hkv query heads"
        )
    if head_dim != cache.head_dim:
        raise ValueError(
            f"q has head dim {head_dim} (axis 3) but the cache has head_dim={cache.head_dim}"
        )
    if q.dtype != cache.dtype:
        raise TypeError(
            f"q has dtype {q.dtype} but the cache stores {cache.dtype}; convert with "
            f"q.astype(np.{cache.dtype.name})"
        )
    check_finite(q, "q")
    return np.ascontiguousarray(q)


def _right_align(q, n_new):
    """Move the n_new[b] real queries of each sequence to the end of the chunk.

    The kernels align the causal mask so that the last query attends to the last valid key. A ragged
    chunk has its real queries first, so they are shifted to the end, where query L - n + j is
    the j-th new token and attends to keys up to lengths[b] - n + j, its own position.
    """
    n_queries = q.shape[2]
    shifted = np.zeros_like(q)
    for b, n in enumerate(n_new):
        shifted[b, :, n_queries - n :] = q[b, :, :n]
    return shifted


def _left_align(out, n_new):
    """Undo `_right_align` on the output; padding rows become zeros."""
    n_queries = out.shape[2]
    aligned = np.zeros_like(out)
    for b, n in enumerate(n_new):
        aligned[b, :, :n] = out[b, :, n_queries - n :]
    return aligned

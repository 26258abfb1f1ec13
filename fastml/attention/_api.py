"""Scaled dot-product attention: validation, mask broadcasting and dispatch to a backend.

Every backend receives the same normalized problem and never re-checks it:

- ``q`` of shape (B, Hq, L, E), ``k`` of shape (Bk, Hkv, S, E) and ``v`` of shape (Bk, Hkv, S, Ev),
  C-contiguous, finite, all float32 or all float64. The leading dimensions of the caller's
  arrays are flattened into B; ``kv_batch[b]`` is the index into k and v of output batch b, so
  key/value batches that broadcast against the queries are never copied.
- ``mask``: ``None`` or an additive mask of shape (Bm, Hm, Lm, S) in the dtype of q, where each
  of Bm, Hm, Lm is either 1 (broadcast) or B, Hq, L. A boolean mask arrives as 0 / -inf.
- ``kv_lengths`` of shape (B,): the number of valid keys of each batch element, S by default.
- ``is_causal``: query i of batch b attends to keys j <= kv_lengths[b] - L + i (bottom-right aligned).
- Query head h reads key/value head h // (Hq // Hkv).
"""

import math
from typing import NamedTuple

import numpy as np

from fastml import backends
from fastml._threads import get_num_threads
from fastml._validation import check_finite, check_float

FLOAT_DTYPES = (np.float16, np.float32, np.float64)


class Layout(NamedTuple):
    """The shapes of one attention problem after broadcasting."""

    batch_shape: tuple
    n_heads: int
    n_kv_heads: int
    n_queries: int
    n_keys: int
    head_dim: int
    value_dim: int
    out_ndim: int

    @property
    def n_batch(self):
        return math.prod(self.batch_shape)

    @property
    def out_shape(self):
        full = self.batch_shape + (self.n_heads, self.n_queries, self.value_dim)
        return full[len(full) - self.out_ndim :]


def scaled_dot_product_attention(
    q,
    k,
    v,
    *,
    attn_mask=None,
    is_causal=False,
    scale=None,
    enable_gqa=False,
    kv_lengths=None,
    backend="auto",
):
    """Compute softmax(q k^T * scale + mask) v, with the semantics of PyTorch's SDPA.

    Parameters
    ----------
    q : array-like of shape (..., Hq, L, E)
        Queries. float16, float32 or float64; k and v must have the same dtype.
    k : array-like of shape (..., Hkv, S, E)
        Keys. The leading dimensions broadcast against those of q, as in torch.
    v : array-like of shape (..., Hkv, S, Ev)
        Values, with the same leading dimensions and S as k.
    attn_mask : array-like of bool or float, broadcastable to (..., Hq, L, S), optional
        A boolean mask allows attention where True (PyTorch's polarity). A float mask is added
        to the scaled scores, and -inf there excludes a key whatever its score.
    is_causal : bool
        Query i attends to keys 0 .. S - L + i, the causal mask aligned to the bottom-right corner, so
        one new query (L = 1) attends to every key. PyTorch's ``is_causal`` aligns to the top-left
        corner instead; the two agree when L == S. Cannot be combined with `attn_mask`.
    scale : float, optional
        Multiplies the scores; 1 / sqrt(E) by default.
    enable_gqa : bool
        Grouped-query attention: query head h reads key/value head h // (Hq // Hkv).
        Without it, Hkv must equal Hq or be 1 (one key/value head broadcast to every query head).
    kv_lengths : array-like of int, broadcastable to the leading dimensions of q, optional
        A fastml extension for padded key/value buffers (a KV cache): batch element b has
        ``kv_lengths[b]`` valid keys, the first ones; the others are ignored. With
        `is_causal`, query i attends to keys up to kv_lengths[b] - L + i.
    backend : {"auto", "naive", "numpy", "numba", "cython"}

    Returns
    -------
    ndarray of shape (..., Hq, L, Ev)
        In the dtype of q. A query that attends to no key (every key masked, or none visible) gets a
        row of zeros, never NaN.
    """
    q, k, v, compute_dtype = _check_qkv(q, k, v)
    is_causal = _check_bool(is_causal, "is_causal")
    enable_gqa = _check_bool(enable_gqa, "enable_gqa")
    if attn_mask is not None and is_causal:
        raise ValueError(
            "attn_mask and is_causal=True cannot be combined; "
            "pass the causal mask inside attn_mask or drop attn_mask"
        )
    layout = _broadcast_layout(q, k, v, enable_gqa)
    scale = _check_scale(scale, layout.head_dim)
    mask = _normalize_mask(attn_mask, layout, compute_dtype)
    lengths = _normalize_kv_lengths(kv_lengths, layout)
    module = backends.load("attention", backend)

    q4, k4, v4, kv_batch = _flatten_batches(q, k, v, layout, compute_dtype)
    if q4.size == 0 or layout.n_keys == 0 or layout.value_dim == 0:
        # No query, no key or no value column: the rule "no visible key gives zeros" covers it.
        out = np.zeros(q4.shape[:3] + (layout.value_dim,), dtype=compute_dtype)
    else:
        out = module.attend(
            q4, k4, v4, kv_batch, mask, lengths, is_causal, scale, get_num_threads()
        )
    return out.reshape(layout.out_shape).astype(q.dtype, copy=False)


# ----------------------------------------------------------------------------- arguments


def _check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r} of type {type(value).__name__}")
    return bool(value)


def _check_tensor(array, name):
    """Return `array` as an ndarray of a float dtype with at least 2 dimensions."""
    if not (hasattr(array, "__array__") or isinstance(array, (list, tuple))):
        raise TypeError(f"{name} must be an array-like of floats, got {type(array).__name__}")
    array = np.asarray(array)
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} has dtype {array.dtype}; expected float16, float32 or float64 "
            f"(convert with {name}.astype(np.float32))"
        )
    if array.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (..., sequence, features), "
            f"got shape {array.shape}"
        )
    return array


def _check_qkv(q, k, v):
    """Validate dtypes and values of q, k, v; return them and the dtype to compute in."""
    q = _check_tensor(q, "q")
    k = _check_tensor(k, "k")
    v = _check_tensor(v, "v")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(
            f"q, k and v must have the same dtype, got {q.dtype}, {k.dtype} and {v.dtype}"
        )
    for array, name in ((q, "q"), (k, "k"), (v, "v")):
        check_finite(array, name)
    # float16 is computed in float32 and rounded back at the end, as float16 has too little
    # range for the scores and too little precision for the softmax sums.
    compute_dtype = np.dtype(np.float32) if q.dtype == np.float16 else q.dtype
    return q, k, v, compute_dtype


def _check_scale(scale, head_dim):
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    return check_float(scale, "scale")


# ----------------------------------------------------------------------------- shapes


def _pad_shape(shape, ndim):
    return (1,) * (ndim - len(shape)) + tuple(shape)


def _broadcast_layout(q, k, v, enable_gqa):
    """Check that q, k, v fit together and return their broadcast Layout."""
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must have the same head dim (last axis), got q.shape={q.shape} "
            f"and k.shape={k.shape}"
        )
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(
            f"k and v must have the same shape except the last axis, got k.shape={k.shape} "
            f"and v.shape={v.shape}"
        )
    if q.shape[-1] == 0:
        raise ValueError(f"the head dim E must be at least 1, got q.shape={q.shape}")

    out_ndim = max(q.ndim, k.ndim)
    ndim = max(out_ndim, 3)
    q_shape, k_shape = _pad_shape(q.shape, ndim), _pad_shape(k.shape, ndim)
    try:
        batch_shape = np.broadcast_shapes(q_shape[:-3], k_shape[:-3])
    except ValueError:
        raise ValueError(
            f"the leading (batch) dimensions of q and k do not broadcast: "
            f"q.shape={q.shape}, k.shape={k.shape}"
        ) from None

    n_heads, n_kv_heads = _check_heads(q_shape[-3], k_shape[-3], enable_gqa, q.shape, k.shape)
    return Layout(
        batch_shape=tuple(batch_shape),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        n_queries=q.shape[-2],
        n_keys=k.shape[-2],
        head_dim=q.shape[-1],
        value_dim=v.shape[-1],
        out_ndim=out_ndim,
    )


def _check_heads(hq, hkv, enable_gqa, q_shape, k_shape):
    """Return (output query heads, key/value heads) for the head counts of q and k."""
    shapes = f"q.shape={q_shape}, k.shape={k_shape}"
    if hq == 0 or hkv == 0:
        raise ValueError(f"the head count (axis -3) must be at least 1, got {shapes}")
    if enable_gqa:
        if hq % hkv:
            raise ValueError(
                f"with enable_gqa=True the query heads Hq={hq} must be a multiple of the "
                f"key/value heads Hkv={hkv} ({shapes})"
            )
        return hq, hkv
    if hq == hkv or hkv == 1:
        return hq, hkv
    if hq == 1:
        # One query head broadcast against several key/value heads, as torch broadcasts.
        return hkv, hkv
    raise ValueError(
        f"q has Hq={hq} heads and k has Hkv={hkv}; they must be equal or one of them 1, "
        f"or pass enable_gqa=True for grouped-query attention ({shapes})"
    )


def _flatten_batches(q, k, v, layout, dtype):
    """Reshape to the backends' (B, H, L, E) arrays; return them and the key/value batch map."""
    ndim = len(layout.batch_shape) + 3
    q_full = layout.batch_shape + (layout.n_heads,) + q.shape[-2:]
    # The queries are no larger than the output, so broadcasting them by a copy is cheap.
    q4 = np.broadcast_to(q.reshape(_pad_shape(q.shape, ndim)), q_full)
    q4 = np.ascontiguousarray(q4, dtype=dtype).reshape((layout.n_batch,) + q_full[-3:])

    k_shape = _pad_shape(k.shape, ndim)
    k_batch_shape = k_shape[:-3]
    n_kv_batch = math.prod(k_batch_shape)
    k4 = np.ascontiguousarray(k, dtype=dtype).reshape((n_kv_batch,) + k_shape[-3:])
    v4 = np.ascontiguousarray(v, dtype=dtype).reshape((n_kv_batch,) + k_shape[-3:-1] + v.shape[-1:])

    # kv_batch[b] = the k/v batch that output batch b reads after broadcasting.
    kv_index = np.arange(n_kv_batch, dtype=np.intp).reshape(k_batch_shape)
    kv_batch = np.ascontiguousarray(np.broadcast_to(kv_index, layout.batch_shape).ravel())
    return q4, k4, v4, kv_batch


# ----------------------------------------------------------------------------- masks


def _normalize_mask(attn_mask, layout, dtype):
    """Return the additive mask as (Bm, Hm, Lm, S), each of Bm, Hm, Lm 1 or full, or None."""
    if attn_mask is None:
        return None
    if not (hasattr(attn_mask, "__array__") or isinstance(attn_mask, (list, tuple))):
        raise TypeError(
            f"attn_mask must be an array-like of bool or float, got {type(attn_mask).__name__}"
        )
    mask = np.asarray(attn_mask)
    full = layout.batch_shape + (layout.n_heads, layout.n_queries, layout.n_keys)
    _check_mask_shape(mask, full)

    if mask.dtype == np.bool_:
        additive = np.where(mask, dtype.type(0), dtype.type(-np.inf))
    elif mask.dtype.kind == "f":
        additive = _check_float_mask(mask).astype(dtype, copy=False)
    else:
        raise TypeError(
            f"attn_mask has dtype {mask.dtype}; expected bool (True = may attend) "
            "or a float dtype (added to the scores)"
        )
    return _compact_mask(additive, layout)


def _check_mask_shape(mask, full):
    if mask.ndim < 2:
        raise ValueError(
            f"attn_mask must have at least 2 dimensions (L, S), got shape {mask.shape}; "
            f"it must broadcast to {full}"
        )
    try:
        broadcast = np.broadcast_shapes(mask.shape, full)
    except ValueError:
        broadcast = None
    if broadcast != full:
        raise ValueError(
            f"attn_mask of shape {mask.shape} does not broadcast to the attention shape "
            f"{full} (batch..., Hq, L, S)"
        )


def _check_float_mask(mask):
    if np.isnan(mask).any():
        index = tuple(int(i) for i in np.argwhere(np.isnan(mask))[0])
        raise ValueError(f"attn_mask contains NaN (first at index {index}); use -inf to mask a key")
    if np.isposinf(mask).any():
        index = tuple(int(i) for i in np.argwhere(np.isposinf(mask))[0])
        raise ValueError(
            f"attn_mask contains +inf (first at index {index}), which makes the softmax "
            "undefined; use finite values, or -inf to mask a key"
        )
    return mask


def _compact_mask(mask, layout):
    """Reshape a mask that broadcasts to (batch..., Hq, L, S) into (Bm, Hm, Lm, S).

    Each of Bm, Hm, Lm stays 1 where the mask broadcasts along it, so a (L, S) mask is never
    copied per batch and head. Only a mask that broadcasts along some batch dimensions but not
    others is expanded over the batch.
    """
    batch_ndim = len(layout.batch_shape)
    mask = mask.reshape(_pad_shape(mask.shape, batch_ndim + 3))
    batch_part = mask.shape[:batch_ndim]
    if all(n == 1 for n in batch_part):
        n_batch = 1
    else:
        n_batch = layout.n_batch
        mask = np.broadcast_to(mask, layout.batch_shape + mask.shape[batch_ndim:])
    mask = np.broadcast_to(mask, mask.shape[:-1] + (layout.n_keys,))
    return np.ascontiguousarray(mask).reshape((n_batch,) + mask.shape[batch_ndim:])


def _normalize_kv_lengths(kv_lengths, layout):
    """Return the valid key count of every batch element, shape (B,), as intp."""
    n_keys = layout.n_keys
    if kv_lengths is None:
        return np.full(layout.n_batch, n_keys, dtype=np.intp)
    lengths = np.asarray(kv_lengths)
    if lengths.dtype.kind not in "iu":
        raise TypeError(f"kv_lengths must contain integers, got dtype {lengths.dtype}")
    try:
        lengths = np.broadcast_to(lengths, layout.batch_shape)
    except ValueError:
        raise ValueError(
            f"kv_lengths of shape {lengths.shape} does not broadcast to the batch shape "
            f"{layout.batch_shape} of q, k and v"
        ) from None
    bad = (lengths < 0) | (lengths > n_keys)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"kv_lengths must be between 0 and S={n_keys}, got {int(lengths[index])} "
            f"at index {index}"
        )
    return np.ascontiguousarray(lengths, dtype=np.intp).reshape(-1)

"""Scaled dot-product attention vectorized with NumPy: the textbook three steps.

scores = q k^T * scale (+ mask), a row-wise softmax that subtracts the row maximum, then
weights @ v. The query heads that share a key/value head are stacked on a group axis, so
grouped-query attention broadcasts k and v instead of repeating them.

Cost: O(B Hq L S (E + Ev)) flops, nearly all in two batched BLAS matrix products, and
O(B Hq L S) extra memory for the scores. The full L x S matrix of every head exists at once,
which is what the fused Numba and Cython backends avoid.
"""

import numpy as np

from fastml._threads import blas_threads


def attend(q, k, v, kv_batch, mask, kv_lengths, is_causal, scale, n_threads):
    """Return the attention output (B, Hq, L, Ev); see ``fastml.attention._api`` for the inputs."""
    with blas_threads(n_threads):
        weights = _grouped_weights(q, k, kv_batch, mask, kv_lengths, is_causal, scale)
        values = _grouped(v, kv_batch)
        # (B, Hkv, G, L, S) @ (B, Hkv, 1, S, Ev) -> (B, Hkv, G, L, Ev)
        out = np.matmul(weights, values[:, :, None])
    return out.reshape(q.shape[:3] + (v.shape[3],))


def _grouped(array, kv_batch):
    """Return the key/value batches in output batch order, a view unless they broadcast unevenly."""
    if array.shape[0] == kv_batch.shape[0]:
        return array
    if array.shape[0] == 1:
        return np.broadcast_to(array, (kv_batch.shape[0],) + array.shape[1:])
    return array[kv_batch]


def _grouped_weights(q, k, kv_batch, mask, kv_lengths, is_causal, scale):
    n_batch, n_heads, n_queries, head_dim = q.shape
    n_kv_heads, n_keys = k.shape[1], k.shape[2]
    group = n_heads // n_kv_heads

    # (B, Hq, L, E) -> (B, Hkv, G, L, E): query head h = kvh * G + g reads key head kvh.
    queries = q.reshape(n_batch, n_kv_heads, group, n_queries, head_dim)
    keys = _grouped(k, kv_batch)[:, :, None]
    # A masked key may overflow its score to +-inf, and the mask then replaces it with -inf.
    # The overflow warnings are noise, while an overflow in an unmasked score still gives NaN.
    with np.errstate(over="ignore", invalid="ignore"):
        # (B, Hkv, G, L, E) @ (B, Hkv, 1, E, S) -> (B, Hkv, G, L, S)
        scores = np.matmul(queries, keys.swapaxes(-1, -2))
        scores *= scores.dtype.type(scale)

        # The scores are the one big array: every step below works on them in place.
        if mask is not None:
            grouped_mask = _grouped_mask(mask, n_kv_heads, group)
            scores += grouped_mask
            # -inf excludes a key even where its score overflowed to +inf (inf - inf is NaN).
            np.copyto(scores, -np.inf, where=grouped_mask == -np.inf)
        if is_causal or (kv_lengths < n_keys).any():
            hidden = ~_visible(n_queries, n_keys, kv_lengths, is_causal)
            np.copyto(scores, -np.inf, where=hidden[:, None, None])
    _softmax_inplace(scores)
    return scores


def _grouped_mask(mask, n_kv_heads, group):
    """(Bm, Hm, Lm, S) -> (Bm, Hkv or 1, G or 1, Lm, S), to broadcast against the scores."""
    n_mask_batch, n_mask_heads, n_mask_rows, n_keys = mask.shape
    if n_mask_heads == 1:
        return mask[:, :, None]
    return mask.reshape(n_mask_batch, n_kv_heads, group, n_mask_rows, n_keys)


def _visible(n_queries, n_keys, kv_lengths, is_causal):
    """Boolean (B, L, S): key j is valid and, with is_causal, j <= length - L + i."""
    keys = np.arange(n_keys)
    lengths = kv_lengths[:, None, None]
    visible = keys[None, None, :] < lengths
    if is_causal:
        # Bottom-right alignment: the last query attends to the last valid key.
        last_visible = lengths - n_queries + np.arange(n_queries)[None, :, None]
        visible = visible & (keys[None, None, :] <= last_visible)
    return visible


def _softmax_inplace(scores):
    """Row-wise softmax over the last axis; a row of -inf only gives zeros."""
    top = scores.max(axis=-1, keepdims=True)
    # A row without a finite score has top = -inf; 0 keeps exp(-inf - 0) = 0 instead of NaN.
    top[top == -np.inf] = 0
    scores -= top
    np.exp(scores, out=scores)
    total = scores.sum(axis=-1, keepdims=True)
    total[total == 0] = 1
    scores /= total

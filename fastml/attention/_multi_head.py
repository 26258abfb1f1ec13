"""Multi-head, grouped-query and multi-query attention layers, and rotary position embeddings.

The projections are single matrix products (BLAS through NumPy) on every backend. `backend`
selects the implementation of the attention in the middle, because that is where the four
differ.

Weight layout, input features first, so that a projection is ``x @ w`` (the layout of GPT-2's
``Conv1D``; a ``torch.nn.Linear`` weight is the transpose, ``linear.weight.T``)::

    x    (..., L, D)
    w_q  (D, Hq * E)     columns h*E:(h+1)*E project query head h
    w_k  (D, Hkv * E)    columns g*E:(g+1)*E project key head g
    w_v  (D, Hkv * Ev)
    w_o  (Hq * Ev, D_out) rows h*Ev:(h+1)*Ev take the output of head h
"""

import numpy as np

from fastml._threads import blas_threads, get_num_threads
from fastml._validation import check_finite, check_float, check_int
from fastml.attention._api import _check_tensor, scaled_dot_product_attention


def multi_head_attention(
    x,
    w_q,
    w_k,
    w_v,
    w_o,
    n_heads,
    n_kv_heads=None,
    *,
    b_q=None,
    b_k=None,
    b_v=None,
    b_o=None,
    attn_mask=None,
    is_causal=False,
    scale=None,
    rope_theta=None,
    positions=None,
    backend="auto",
):
    """Self-attention of `x`: project, split into heads, attend, concatenate, project.

    Parameters
    ----------
    x : array-like of shape (..., L, D)
        float16 (computed in float32), float32 or float64; every weight and bias must have the
        same dtype.
    w_q, w_k, w_v, w_o : array-like
        Projection weights, input features first; see the module docstring for the layout.
    n_heads : int
        Query heads Hq; the head dim is E = w_q.shape[1] // n_heads.
    n_kv_heads : int, optional
        Key/value heads Hkv, a divisor of n_heads: None or n_heads gives multi-head attention,
        1 multi-query attention, anything between grouped-query attention, where query head h
        reads key/value head h // (Hq // Hkv).
    b_q, b_k, b_v, b_o : array-like, optional
        Biases of shape (Hq * E,), (Hkv * E,), (Hkv * Ev,) and (D_out,).
    attn_mask, is_causal, scale
        As in `scaled_dot_product_attention`; the mask broadcasts to (..., Hq, L, L).
    rope_theta : float, optional
        Apply rotary position embeddings with this base (10000 is the usual default, SmolLM2
        uses 100000) to the queries and keys of every head, in the half-split layout of
        GPT-NeoX and Hugging Face Llama. None applies none.
    positions : array-like of int, broadcastable to (..., L), optional
        The positions of the L tokens for the rotary embeddings; 0 .. L - 1 by default.
    backend : {"auto", "naive", "numpy", "numba", "cython"}

    Returns
    -------
    ndarray of shape (..., L, D_out), in the dtype of x.
    """
    x = _check_input(x, "x")
    compute_dtype = np.float32 if x.dtype == np.float16 else x.dtype
    n_heads = check_int(n_heads, "n_heads", min_value=1)
    n_kv_heads = n_heads if n_kv_heads is None else check_int(n_kv_heads, "n_kv_heads", min_value=1)
    if n_heads % n_kv_heads:
        raise ValueError(
            f"n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}: each key/value "
            "head serves the same number of query heads"
        )
    weights = _check_weights(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads)
    biases = _check_biases(x, weights, b_q, b_k, b_v, b_o)
    head_dim = weights[0].shape[1] // n_heads
    if rope_theta is not None:
        rope_theta = check_float(rope_theta, "rope_theta", min_value=0.0, include_min=False)
        positions = _check_positions(positions, x.shape[:-1], head_dim)

    w_q, w_k, w_v, w_o = (w.astype(compute_dtype, copy=False) for w in weights)
    b_q, b_k, b_v, b_o = (None if b is None else b.astype(compute_dtype, copy=False) for b in biases)
    x = x.astype(compute_dtype, copy=False)

    with blas_threads(get_num_threads()):
        # (..., L, D) @ (D, H * E) -> (..., L, H * E) -> (..., H, L, E)
        q = _split_heads(_project(x, w_q, b_q), n_heads)
        k = _split_heads(_project(x, w_k, b_k), n_kv_heads)
        v = _split_heads(_project(x, w_v, b_v), n_kv_heads)
    if rope_theta is not None:
        q = rotary_embedding(q, positions[..., None, :], theta=rope_theta)
        k = rotary_embedding(k, positions[..., None, :], theta=rope_theta)

    attended = scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale,
        enable_gqa=n_kv_heads != n_heads, backend=backend,
    )
    with blas_threads(get_num_threads()):
        # (..., Hq, L, Ev) -> (..., L, Hq * Ev) @ (Hq * Ev, D_out) -> (..., L, D_out)
        out = _project(_merge_heads(attended), w_o, b_o)
    return out.astype(weights[0].dtype, copy=False)


def rotary_embedding(x, positions=None, *, theta=10000.0):
    """Rotate feature pairs of `x` (..., L, E) by angles proportional to the token position.

    The half-split layout of GPT-NeoX and Hugging Face Llama: feature j < E/2 is paired with
    feature j + E/2, and the pair of token p turns by the angle p * theta^(-2j/E). Computed in
    float64 and returned in the dtype of x. `positions` broadcasts to (..., L); 0 .. L - 1 by
    default.
    """
    x = _check_input(x, "x")
    theta = check_float(theta, "theta", min_value=0.0, include_min=False)
    positions = _check_positions(positions, x.shape[:-1], x.shape[-1])

    half = x.shape[-1] // 2
    # (half,) frequencies; (..., L, half) angles
    inverse_frequency = theta ** (-np.arange(half, dtype=np.float64) * 2.0 / x.shape[-1])
    angles = positions[..., None].astype(np.float64) * inverse_frequency
    cos, sin = np.cos(angles), np.sin(angles)

    first, second = x[..., :half].astype(np.float64), x[..., half:].astype(np.float64)
    rotated = np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(x.dtype)


# ----------------------------------------------------------------------------- helpers


def _project(x, weight, bias):
    out = x @ weight
    if bias is not None:
        out += bias
    return out


def _split_heads(projected, n_heads):
    # (..., L, H * E) -> (..., L, H, E) -> (..., H, L, E)
    shape = projected.shape[:-1] + (n_heads, projected.shape[-1] // n_heads)
    return np.swapaxes(projected.reshape(shape), -2, -3)


def _merge_heads(attended):
    # (..., H, L, E) -> (..., L, H, E) -> (..., L, H * E)
    swapped = np.swapaxes(attended, -2, -3)
    return swapped.reshape(swapped.shape[:-2] + (-1,))


def _check_input(x, name):
    x = _check_tensor(x, name)
    check_finite(x, name)
    return x


def _check_matrix(w, name, dtype):
    w = _check_tensor(w, name)
    if w.ndim != 2:
        raise ValueError(f"{name} must be 2-D (input features, output features), got shape {w.shape}")
    if w.dtype != dtype:
        raise TypeError(f"{name} has dtype {w.dtype} but x has {dtype}; they must match")
    check_finite(w, name)
    return w


def _check_weights(x, w_q, w_k, w_v, w_o, n_heads, n_kv_heads):
    n_features = x.shape[-1]
    w_q, w_k, w_v, w_o = (
        _check_matrix(w, name, x.dtype)
        for w, name in ((w_q, "w_q"), (w_k, "w_k"), (w_v, "w_v"), (w_o, "w_o"))
    )
    for w, name in ((w_q, "w_q"), (w_k, "w_k"), (w_v, "w_v")):
        if w.shape[0] != n_features:
            raise ValueError(
                f"{name} has shape {w.shape}; its first axis must match the D={n_features} "
                f"features of x (shape {x.shape})"
            )
    if w_q.shape[1] == 0 or w_q.shape[1] % n_heads:
        raise ValueError(
            f"w_q has {w_q.shape[1]} output columns, which is not n_heads={n_heads} times a "
            "head dim E >= 1"
        )
    head_dim = w_q.shape[1] // n_heads
    if w_k.shape[1] != n_kv_heads * head_dim:
        raise ValueError(
            f"w_k has shape {w_k.shape}; expected ({n_features}, n_kv_heads * E) = "
            f"({n_features}, {n_kv_heads * head_dim})"
        )
    if w_v.shape[1] % n_kv_heads:
        raise ValueError(
            f"w_v has {w_v.shape[1]} output columns, not a multiple of n_kv_heads={n_kv_heads}"
        )
    value_dim = w_v.shape[1] // n_kv_heads
    if w_o.shape[0] != n_heads * value_dim:
        raise ValueError(
            f"w_o has shape {w_o.shape}; its first axis must be n_heads * Ev = "
            f"{n_heads} * {value_dim} = {n_heads * value_dim}"
        )
    return w_q, w_k, w_v, w_o


def _check_biases(x, weights, *biases):
    checked = []
    for bias, weight, name in zip(biases, weights, ("b_q", "b_k", "b_v", "b_o")):
        if bias is not None:
            bias = np.asarray(bias)
            if bias.shape != (weight.shape[1],):
                raise ValueError(
                    f"{name} has shape {bias.shape}; expected ({weight.shape[1]},) to match "
                    f"the output columns of its weight"
                )
            if bias.dtype != x.dtype:
                raise TypeError(f"{name} has dtype {bias.dtype} but x has {x.dtype}; they must match")
            check_finite(bias, name)
        checked.append(bias)
    return checked


def _check_positions(positions, shape, head_dim):
    """Return integer positions broadcast to `shape` (..., L)."""
    if head_dim % 2:
        raise ValueError(f"rotary embeddings pair features, so the head dim must be even, got {head_dim}")
    if positions is None:
        return np.broadcast_to(np.arange(shape[-1]), shape)
    positions = np.asarray(positions)
    if positions.dtype.kind not in "iu":
        raise TypeError(f"positions must contain integers, got dtype {positions.dtype}")
    try:
        return np.broadcast_to(positions, shape)
    except ValueError:
        raise ValueError(
            f"positions of shape {positions.shape} does not broadcast to {shape} (..., L)"
        ) from None

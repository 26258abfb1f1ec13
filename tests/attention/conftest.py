import contextlib

import numpy as np
import pytest

from fastml.backends import available_backends, load

BACKENDS = available_backends("attention")
FAST_BACKENDS = tuple(b for b in BACKENDS if b != "naive")
FUSED_BACKENDS = tuple(b for b in BACKENDS if b in ("numba", "cython"))


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=FAST_BACKENDS)
def fast_backend(request):
    return request.param


@contextlib.contextmanager
def tiny_tiles(backend, block_rows=3, block_keys=2, band_rows=2):
    """Shrink the tiles of a fused backend so that small inputs cross many tile boundaries."""
    if backend not in FUSED_BACKENDS:
        yield
        return
    module = load("attention", backend)
    saved = module.BLOCK_ROWS, module.BLOCK_KEYS, module.BAND_ROWS
    module.BLOCK_ROWS, module.BLOCK_KEYS, module.BAND_ROWS = block_rows, block_keys, band_rows
    try:
        yield
    finally:
        module.BLOCK_ROWS, module.BLOCK_KEYS, module.BAND_ROWS = saved


def reference_attention(q, k, v, mask=None, is_causal=False, scale=None, kv_lengths=None):
    """Float64 attention of 4-D arrays (B, Hq, L, E), (B, Hkv, S, E), (B, Hkv, S, Ev).

    Written independently of fastml: the key/value heads are repeated (np.repeat) for grouped
    queries, every mask is expanded to (B, Hq, L, S), and softmax is taken row by row. A bool
    mask is True where attention is allowed; a float mask is added. Rows without a visible key
    are zero.
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    n_batch, n_heads, n_queries, head_dim = q.shape
    n_keys = k.shape[2]
    k = np.repeat(k, n_heads // k.shape[1], axis=1)
    v = np.repeat(v, n_heads // v.shape[1], axis=1)
    scale = 1 / np.sqrt(head_dim) if scale is None else scale
    lengths = np.full(n_batch, n_keys) if kv_lengths is None else np.asarray(kv_lengths)

    allowed = np.ones((n_batch, n_heads, n_queries, n_keys), dtype=bool)
    added = np.zeros((n_batch, n_heads, n_queries, n_keys))
    if mask is not None:
        mask = np.broadcast_to(np.asarray(mask), allowed.shape)
        if mask.dtype == bool:
            allowed &= mask
        else:
            allowed &= mask != -np.inf
            added = np.where(mask == -np.inf, 0.0, mask)
    for b in range(n_batch):
        allowed[b, :, :, lengths[b]:] = False
        if is_causal:
            for i in range(n_queries):
                allowed[b, :, i, max(0, lengths[b] - n_queries + i + 1):] = False

    out = np.zeros((n_batch, n_heads, n_queries, v.shape[3]))
    for b in range(n_batch):
        for h in range(n_heads):
            for i in range(n_queries):
                keys = np.flatnonzero(allowed[b, h, i])
                if keys.size == 0:
                    continue
                scores = k[b, h, keys] @ q[b, h, i] * scale + added[b, h, i, keys]
                weights = np.exp(scores - scores.max())
                out[b, h, i] = weights @ v[b, h, keys] / weights.sum()
    return out

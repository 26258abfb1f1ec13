"""The work split shared by the fused backends (Numba and Cython).

An item is one tile of up to ``block_rows`` stacked query rows of one (batch, key/value head):
with G = Hq // Hkv query heads per key/value head, the rows are the G * L (query, head) pairs,
query-major. Items are the unit of parallel work, dealt to the workers round-robin.
"""

import contextlib

from fastml._threads import blas_threads

# Multiply-adds below which another worker costs more than it saves: waking a thread and the
# barrier at the end take tens of microseconds, about 2^20 multiply-adds of BLAS.
MIN_WORK_PER_WORKER = 1 << 20


def plan(q_shape, k_shape, value_dim, n_threads, block_rows):
    """Return ``(n_items, n_workers, tile_rows)`` for the normalized shapes of q and k."""
    n_batch, n_heads, n_queries, head_dim = q_shape
    n_kv_heads, n_keys = k_shape[1], k_shape[2]
    n_rows = (n_heads // n_kv_heads) * n_queries
    tile_rows = min(block_rows, n_rows)
    n_items = n_batch * n_kv_heads * -(-n_rows // tile_rows)

    work = n_batch * n_heads * n_queries * n_keys * (head_dim + value_dim)
    n_workers = max(1, min(n_threads, n_items, work // MIN_WORK_PER_WORKER))
    return n_items, n_workers, tile_rows


def blas_limit(n_workers, n_threads):
    """Return the BLAS thread limit for `n_workers` workers out of `n_threads` allowed.

    Workers calling BLAS in parallel need a single-threaded BLAS, and so does a thread setting
    of 1. One worker with more threads allowed leaves BLAS alone, because threadpoolctl costs
    about half a millisecond per call (it scans the loaded libraries), more than a small problem.
    """
    if n_workers > 1 or n_threads == 1:
        return blas_threads(1)
    return contextlib.nullcontext()

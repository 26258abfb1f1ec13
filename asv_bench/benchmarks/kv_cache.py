"""Decoding with a KV cache: one new token per step, against recomputing the whole sequence.

Inputs are float32, batch 1, 16 query heads of dim 64, with 16 key/value heads or 4
(grouped-query attention). A step with the cache is ``cached_attention`` of one new query, key
and value against a ``KVCache`` holding ``cache_len`` tokens: the append and an attention over
cache_len + 1 keys, O(cache_len). The cache is truncated back to cache_len before every step
(``KVCache.truncate``, which only lowers the lengths), so each sample measures the same step.

Without a cache, a model has no keys and values of earlier tokens to reuse, so every layer
recomputes causal self-attention over all cache_len + 1 tokens to produce the next one:
``scaled_dot_product_attention(..., is_causal=True)``, O(cache_len^2) per token. Both measure the
attention alone; the projections, which the cache saves too, are left out.

The torch peer runs ``scaled_dot_product_attention`` on one query against contiguous keys and
values of cache_len + 1 tokens, with no append. That is the case of the speed target.

Threads: fastml uses all CPUs of the machine (or FASTML_NUM_THREADS), and torch is set to the
same count in ``setup``.
"""

import functools

import numpy as np

import fastml
from fastml.attention import KVCache, cached_attention, scaled_dot_product_attention

from ._util import best_time, import_peer, interleaved_best_times, loglog_slope, skip

BACKENDS = ("naive", "numpy", "numba", "cython")
FAST = ("numpy", "numba", "cython")
PEERS = ("torch",)

N_HEADS = 16
HEAD_DIM = 64
HEADS = {"16/16 heads": 16, "16/4 heads": 4}
CACHE_LENGTHS = (256, 512, 1024, 2048)
SEED = 0


@functools.cache
def sequence(n_tokens, n_kv_heads):
    """Return seeded float32 q (1, 16, T, 64), k and v (1, Hkv, T, 64) of a whole sequence."""
    rng = np.random.default_rng(SEED)
    q = rng.standard_normal((1, N_HEADS, n_tokens, HEAD_DIM), dtype=np.float32)
    k = rng.standard_normal((1, n_kv_heads, n_tokens, HEAD_DIM), dtype=np.float32)
    v = rng.standard_normal((1, n_kv_heads, n_tokens, HEAD_DIM), dtype=np.float32)
    return q, k, v


def cached_step(backend, cache_len, n_kv_heads):
    """Return a warmed-up callable: one decoding step against a cache of cache_len tokens."""
    q, k, v = sequence(cache_len + 1, n_kv_heads)
    if backend == "torch":
        return _torch_step(q[:, :, -1:], k, v, n_kv_heads)

    cache = KVCache(1, n_kv_heads, cache_len + 1, HEAD_DIM, dtype=np.float32)
    cache.append(k[:, :, :cache_len], v[:, :, :cache_len])
    new = [np.ascontiguousarray(a[:, :, cache_len:]) for a in (q, k, v)]

    def run():
        cache.truncate(cache_len)
        return cached_attention(*new, cache, backend=backend)

    run()
    return run


def _torch_step(query, k, v, n_kv_heads):
    try:
        torch = import_peer("torch")
    except ImportError:
        skip("torch is not installed in the benchmark environment (torch==2.13.0)")
    torch.set_num_threads(fastml.get_num_threads())
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in (query, k, v)]
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def run():
        with torch.no_grad():
            return sdpa(*tensors, enable_gqa=n_kv_heads != N_HEADS)

    run()
    return run


def recompute_step(backend, cache_len, n_kv_heads):
    """Return a warmed-up callable: causal attention over all cache_len + 1 tokens, no cache."""
    q, k, v = sequence(cache_len + 1, n_kv_heads)

    def run():
        return scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=n_kv_heads != N_HEADS, backend=backend
        )

    run()
    return run


@functools.cache
def runner(kind, backend, cache_len, n_kv_heads):
    make = cached_step if kind == "cached" else recompute_step
    return make(backend, cache_len, n_kv_heads)


# ---- benchmarks -------------------------------------------------------------------------------

class DecodeStep:
    """Time of one decoding step with the cache, over backend x cache length x heads."""

    params = (BACKENDS + PEERS, CACHE_LENGTHS, tuple(HEADS))
    param_names = ("backend", "cache_len", "heads")
    timeout = 600

    def setup(self, backend, cache_len, heads):
        self.run = runner("cached", backend, cache_len, HEADS[heads])

    def time_decode_step(self, backend, cache_len, heads):
        self.run()


class RecomputeStep:
    """Time of producing the next token without a cache: causal attention over every token.

    The naive backend is left out. Its cached step took 0.04 s at cache_len = 256 with 16 heads
    (measured once on a loaded 2-core machine), so recomputing, which does about 128 times the
    work at 256 and 1024 times at 2048, is estimated at 5 s to 6 minutes per step.
    """

    params = (FAST, CACHE_LENGTHS, tuple(HEADS))
    param_names = ("backend", "cache_len", "heads")
    timeout = 600

    def setup(self, backend, cache_len, heads):
        self.run = runner("recompute", backend, cache_len, HEADS[heads])

    def time_recompute_step(self, backend, cache_len, heads):
        self.run()


# The cases of the speed target: one query against 2048 cached tokens, (key/value heads).
TARGETS = {"2048 16/16": 16, "2048 16/4": 4}


class DecodeRatioToTorch:
    """A backend's decoding step divided by torch SDPA's in the same process (below 1: faster)."""

    params = (FAST, tuple(TARGETS))
    param_names = ("backend", "case")
    rounds = 1
    timeout = 600

    def setup(self, backend, case):
        self.torch = runner("cached", "torch", 2048, TARGETS[case])
        self.run = runner("cached", backend, 2048, TARGETS[case])

    def track_time_ratio_to_torch(self, backend, case):
        ours, theirs = interleaved_best_times(self.run, self.torch, rounds=5, repeat=20)
        return ours / theirs

    track_time_ratio_to_torch.unit = "time / torch time"


class DecodeScaling:
    """Empirical exponent of the per-token time in the cache length, 16/16 heads.

    The slope of log(time) over log(cache_len): about 1 with the cache (one pass over the cached
    keys and values) and about 2 without it (causal attention over the whole sequence for every
    token). A cached step has fixed costs of tens of microseconds (checks, the kernel call), which
    flatten the slope at short lengths, so it climbs the ladder 1024 to 8192. Recomputing climbs
    256 to 2048, where NumPy's score matrix is already 256 MiB.
    """

    params = (FAST,)
    param_names = ("backend",)
    rounds = 1
    timeout = 600

    def setup(self, backend):
        self.backend = backend

    CACHED_LADDER = (1024, 2048, 4096, 8192)
    RECOMPUTE_LADDER = CACHE_LENGTHS

    def _exponent(self, kind, sizes, repeat):
        runs = [runner(kind, self.backend, n, N_HEADS) for n in sizes]
        return loglog_slope(sizes, [best_time(run, repeat=repeat) for run in runs])

    def track_exponent_with_cache(self, backend):
        return self._exponent("cached", self.CACHED_LADDER, repeat=50)

    track_exponent_with_cache.unit = "exponent of cache length"

    def track_exponent_without_cache(self, backend):
        return self._exponent("recompute", self.RECOMPUTE_LADDER, repeat=3)

    track_exponent_without_cache.unit = "exponent of cache length"

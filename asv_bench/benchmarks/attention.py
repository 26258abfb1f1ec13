"""Scaled dot-product attention: the four fastml backends against torch's SDPA.

Inputs are float32, batch 1, 16 query heads of dim 64, with either 16 key/value heads or 4
(grouped-query attention), self-attention (L = S), causal or not. torch runs
``torch.nn.functional.scaled_dot_product_attention`` on the same arrays (``torch.from_numpy``
shares their memory) with ``is_causal`` and ``enable_gqa``, which for L = S mean the same as
fastml's.

Threads: fastml uses all CPUs of the machine (or FASTML_NUM_THREADS), and torch is set to the
same count in ``setup``. torch ships its own OpenMP runtime, separate from the system libgomp of
fastml's Cython and Numba code, so the two never share a thread pool.
"""

import functools

import numpy as np

import fastml
from fastml.attention import scaled_dot_product_attention

from ._util import (
    best_time,
    import_peer,
    interleaved_best_times,
    loglog_slope,
    reset_peak_memory,
    skip,
)

BACKENDS = ("naive", "numpy", "numba", "cython")
FAST = ("numpy", "numba", "cython")
PEERS = ("torch",)

N_HEADS = 16
HEAD_DIM = 64
HEADS = {"16/16 heads": 16, "16/4 heads": 4}
SEQUENCE_LENGTHS = (64, 512, 2048)
# The naive backend runs only at this length: about 1 s per call causal with 16 heads, where
# L = 512 would take a minute.
NAIVE_LENGTH = 64
SEED = 0


@functools.cache
def inputs(n_queries, n_kv_heads, n_heads=N_HEADS):
    """Return seeded float32 (q, k, v) of shapes (1, H, L, 64) and (1, Hkv, L, 64)."""
    rng = np.random.default_rng(SEED)
    q = rng.standard_normal((1, n_heads, n_queries, HEAD_DIM), dtype=np.float32)
    k = rng.standard_normal((1, n_kv_heads, n_queries, HEAD_DIM), dtype=np.float32)
    v = rng.standard_normal((1, n_kv_heads, n_queries, HEAD_DIM), dtype=np.float32)
    return q, k, v


def attention_runner(backend, q, k, v, is_causal):
    """Return a warmed-up callable computing the attention of q, k, v (Numba compiles here)."""
    enable_gqa = q.shape[1] != k.shape[1]
    if backend == "torch":
        try:
            torch = import_peer("torch")
        except ImportError:
            skip("torch is not installed in the benchmark environment (torch==2.13.0)")
        torch.set_num_threads(fastml.get_num_threads())
        tensors = [torch.from_numpy(a) for a in (q, k, v)]
        sdpa = torch.nn.functional.scaled_dot_product_attention

        def run():
            with torch.no_grad():
                return sdpa(*tensors, is_causal=is_causal, enable_gqa=enable_gqa)
    else:
        def run():
            return scaled_dot_product_attention(
                q, k, v, is_causal=is_causal, enable_gqa=enable_gqa, backend=backend
            )
    run()
    return run


@functools.cache
def case_runner(backend, n_queries, n_kv_heads, is_causal):
    return attention_runner(backend, *inputs(n_queries, n_kv_heads), is_causal)


# ---- benchmarks -------------------------------------------------------------------------------

class Attention:
    """Self-attention time over backend x sequence length x causal x grouped-query heads."""

    params = (BACKENDS + PEERS, SEQUENCE_LENGTHS, (True, False), tuple(HEADS))
    param_names = ("backend", "seq_len", "is_causal", "heads")
    timeout = 600

    def setup(self, backend, seq_len, is_causal, heads):
        if backend == "naive" and seq_len != NAIVE_LENGTH:
            skip(f"the naive backend runs only at L = {NAIVE_LENGTH}")
        self.run = case_runner(backend, seq_len, HEADS[heads], is_causal)

    def time_attention(self, backend, seq_len, is_causal, heads):
        self.run()


class AttentionMemory:
    """Peak memory of causal attention, 4 heads, as L doubles from 1024 to 4096.

    The NumPy backend materializes the L x S scores of every head (4 * 4096^2 float32 = 256 MiB
    at L = 4096), so the part of its peak above the resident baseline grows fourfold per
    doubling. The fused backends keep the inputs, the output and a few tiles per thread, so
    theirs grows twofold. Measured once here (resident baseline included): NumPy 57, 116 and
    341 MiB; Cython 62, 66 and 74 MiB. The peak is reset at the end of setup, after the warm-up.
    """

    params = (FAST + PEERS, (1024, 2048, 4096))
    param_names = ("backend", "seq_len")
    rounds = 1
    timeout = 600

    def setup(self, backend, seq_len):
        q, k, v = inputs(seq_len, 4, n_heads=4)
        self.run = attention_runner(backend, q, k, v, is_causal=True)
        if not reset_peak_memory():
            skip("resetting the peak memory needs Linux's /proc/self/clear_refs")

    def peakmem_attention(self, backend, seq_len):
        self.run()


# The cases of the speed targets: (L, key/value heads, is_causal).
TARGETS = {
    "2048 causal 16/16": (2048, 16, True),
    "2048 full 16/16": (2048, 16, False),
    "2048 causal 16/4": (2048, 4, True),
}


class AttentionRatioToTorch:
    """A backend's time divided by torch SDPA's in the same process (below 1: faster than torch)."""

    params = (FAST, tuple(TARGETS))
    param_names = ("backend", "case")
    rounds = 1
    timeout = 600

    def setup(self, backend, case):
        self.torch = case_runner("torch", *TARGETS[case])
        self.run = case_runner(backend, *TARGETS[case])

    def track_time_ratio_to_torch(self, backend, case):
        ours, theirs = interleaved_best_times(self.run, self.torch, rounds=5, repeat=2)
        return ours / theirs

    track_time_ratio_to_torch.unit = "time / torch time"


class AttentionSpeedup:
    """A backend's time divided by the naive backend's at L = 64, causal, 16/16 heads."""

    params = (FAST + PEERS,)
    param_names = ("backend",)
    rounds = 1
    timeout = 600

    def setup(self, backend):
        self.naive = case_runner("naive", NAIVE_LENGTH, N_HEADS, True)
        self.run = case_runner(backend, NAIVE_LENGTH, N_HEADS, True)

    def track_time_ratio_to_naive(self, backend):
        return best_time(self.run, repeat=20) / best_time(self.naive, repeat=2)

    track_time_ratio_to_naive.unit = "time / naive time"


class AttentionScaling:
    """Empirical exponent of the time in L: the slope of log(time) over log(L), causal, 16/16.

    Attention does O(L^2) work, so a value near 2 is expected; a smaller one means fixed costs
    still weigh on the ladder. The naive backend climbs its own, shorter ladder.
    """

    params = (BACKENDS + PEERS,)
    param_names = ("backend",)
    rounds = 1
    timeout = 600
    LADDERS = {"naive": (16, 32, 64)}
    LADDER = (256, 512, 1024, 2048)

    def setup(self, backend):
        self.sizes = self.LADDERS.get(backend, self.LADDER)
        self.runs = [case_runner(backend, n, N_HEADS, True) for n in self.sizes]

    def track_exponent_in_seq_len(self, backend):
        return loglog_slope(self.sizes, [best_time(run, repeat=3) for run in self.runs])

    track_exponent_in_seq_len.unit = "exponent of L"

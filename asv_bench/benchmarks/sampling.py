"""Next-token sampling: the four fastml backends against torch, on Zipf-like logits.

Each benchmark samples one token per row of float32 logits of shape (batch, V), with V = 50,257
(GPT-2's vocabulary) or 128,256 (Llama 3's). The logits come from
``fastml.sampling._synthetic.zipf_logits``: at temperature 1 the top-p 0.9 nucleus contains about
12% of the vocabulary, a hard case for partial selection. Methods:

- greedy: temperature 0 (torch: ``argmax``);
- temperature: temperature 0.8 and a draw from the full softmax (torch: ``softmax`` and
  ``multinomial``);
- top_k: top_k=50 (torch: ``topk``, then a draw among the k);
- top_p: top_p=0.9, sorted in full by torch as Hugging Face's ``TopPLogitsWarper`` does;
- min_p: min_p=0.05;
- combined: temperature 0.8, top_k=1000, top_p=0.9, min_p=0.01, in that order.

Threads: one, for fastml (``fastml.num_threads(1)``) and torch (``torch.set_num_threads(1)``),
so that a ratio does not depend on what else runs on the other cores. The torch peer needs
``torch==2.13.0`` in the benchmark environment; without it, its combinations are skipped.
"""

import functools

import numpy as np

import fastml
from fastml import sampling
from fastml.sampling._synthetic import zipf_logits

from ._util import best_time, import_peer, loglog_slope, skip

BACKENDS = ("naive", "numpy", "numba", "cython")
FAST = ("numpy", "numba", "cython")
PEERS = ("torch",)
VOCAB_SIZES = (50_257, 128_256)
BATCHES = (1, 64)
SEED = 0

METHODS = {
    "greedy": dict(temperature=0.0),
    "temperature": dict(temperature=0.8),
    "top_k": dict(top_k=50),
    "top_p": dict(top_p=0.9),
    "min_p": dict(min_p=0.05),
    "combined": dict(temperature=0.8, top_k=1000, top_p=0.9, min_p=0.01),
}


# ---- inputs, memoized per process -------------------------------------------------------------

@functools.cache
def logits(batch, vocab_size):
    """Return seeded Zipf-like float32 logits of shape (batch, vocab_size)."""
    return zipf_logits(batch, vocab_size, seed=SEED)


# ---- one sampling call per backend or peer ----------------------------------------------------

def sampler(backend, method, batch, vocab_size):
    """Return a warmed-up callable that samples one token per row, on one thread."""
    x = logits(batch, vocab_size)
    settings = METHODS[method]
    if backend == "torch":
        try:
            torch = import_peer("torch")
        except ImportError:
            skip("torch is not installed in the benchmark environment (torch==2.13.0)")
        run = _torch_sampler(torch, x, **settings)
    else:

        def run():
            with fastml.num_threads(1):
                return sampling.sample(x, rng=SEED, backend=backend, **settings)

    # Numba compiles on the first call: here, never inside a timing.
    run()
    return run


def _torch_sampler(torch, x, temperature=1.0, top_k=None, top_p=None, min_p=None):
    """Return a callable that applies the same filters in torch, in Hugging Face's order (top-p
    sorts the whole row), and draws with ``torch.multinomial``."""
    torch.set_num_threads(1)
    scores = torch.from_numpy(x)
    generator = torch.Generator().manual_seed(SEED)

    def run():
        if temperature == 0:
            return torch.argmax(scores, dim=-1)
        z = scores / temperature
        if top_k is not None:
            kth = torch.topk(z, top_k, dim=-1).values[..., -1:]
            z = z.masked_fill(z < kth, -float("inf"))
        if top_p is not None:
            ascending, order = torch.sort(z, dim=-1)
            cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
            remove = cumulative <= 1 - top_p
            remove[..., -1] = False
            z = z.masked_fill(remove.scatter(-1, order, remove), -float("inf"))
        probabilities = torch.softmax(z, dim=-1)
        if min_p is not None:
            top = probabilities.amax(dim=-1, keepdim=True)
            probabilities = probabilities.masked_fill(probabilities < min_p * top, 0.0)
        return torch.multinomial(probabilities, 1, generator=generator)

    return run


@functools.cache
def case_sampler(backend, method, batch, vocab_size):
    return sampler(backend, method, batch, vocab_size)


def skip_slow_naive(backend, batch):
    if backend == "naive" and batch != 1:
        skip("the naive backend takes about 0.3 s per row of 128,256 tokens; batch 1 only")


# ---- benchmarks -------------------------------------------------------------------------------

class Sample:
    """One token per row: backend x vocabulary size x batch x method, on one thread."""

    params = (BACKENDS + PEERS, VOCAB_SIZES, BATCHES, tuple(METHODS))
    param_names = ("backend", "vocab_size", "batch", "method")
    timeout = 600

    def setup(self, backend, vocab_size, batch, method):
        skip_slow_naive(backend, batch)
        self.run = case_sampler(backend, method, batch, vocab_size)

    def time_sample(self, backend, vocab_size, batch, method):
        self.run()


class SampleSpeedupOverTorch:
    """torch's time divided by the backend's, V=128,256, batch 64, one thread (higher is better).

    Both are timed in the same process, one after the other, so other load affects both alike.
    """

    params = (FAST, tuple(METHODS))
    param_names = ("backend", "method")
    rounds = 1
    timeout = 600

    def setup(self, backend, method):
        self.torch = sampler("torch", method, 64, 128_256)
        self.run = sampler(backend, method, 64, 128_256)

    def track_speedup_over_torch(self, backend, method):
        return best_time(self.torch, repeat=5) / best_time(self.run, repeat=5)

    track_speedup_over_torch.unit = "torch time / time"


class SampleScaling:
    """Empirical complexity exponent: the slope of log(time) over log(V), batch 8, one thread.

    The fast backends select instead of sorting, so a value near 1 is expected; torch's sort
    gives slightly more than 1 for top_p. The naive backend, which sorts in Python, climbs a
    smaller ladder.
    """

    params = (BACKENDS + PEERS, ("top_k", "top_p", "combined"))
    param_names = ("backend", "method")
    rounds = 1
    timeout = 600
    LADDERS = {"naive": (2_000, 4_000, 8_000, 16_000)}
    LADDER = (16_032, 32_064, 64_128, 128_256)
    BATCH = 8

    def setup(self, backend, method):
        self.sizes = self.LADDERS.get(backend, self.LADDER)
        self.runs = [sampler(backend, method, self.BATCH, size) for size in self.sizes]

    def track_exponent_in_vocab_size(self, backend, method):
        return loglog_slope(self.sizes, [best_time(run, repeat=3) for run in self.runs])

    track_exponent_in_vocab_size.unit = "exponent of V"

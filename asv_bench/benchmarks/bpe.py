"""Byte-level BPE: fastml's backends against rustbpe and Hugging Face tokenizers (training) and
tiktoken (encoding), in one parametrization.

Inputs. The corpus is the King James Bible from the Debian package bible-kjv (4.1 MB of ASCII
text, `apt-get install bible-kjv`). The 41 MB case is that text repeated ten times, so it
measures throughput on a corpus with the KJV's distinct words. Encoding uses the GPT-2
(r50k_base) and cl100k_base rank files that scripts/fetch_bpe_data.py stores under data/bpe
(or $FASTML_BPE_DATA). A case whose input is missing is skipped with the install command.

Same work for every trainer: the GPT-4 split pattern (rustbpe's only pattern; tokenizers'
ByteLevel pre-tokenizer applies GPT-2's instead, the closest it offers), no special tokens and
vocab_size tokens in total. fastml stops at min_frequency=1, like the peers, so every trainer
makes the same number of merges unless the corpus runs out of pairs. Encoding clears fastml's
pre-token cache before each call, because tiktoken keeps none between calls.

Threads: rustbpe and tokenizers count pre-tokens on all cores; fastml's training and encoding
run on one thread.
"""

import functools
import os
from pathlib import Path

from fastml import bpe
from fastml.bpe._corpus import load_kjv

from ._util import best_time, import_peer, loglog_slope, reset_peak_memory, skip

BACKENDS = ("naive", "numba", "cython")
FAST = ("numba", "cython")
TRAIN_PEERS = ("rustbpe", "tokenizers")

# case -> (corpus bytes, vocab_size); the corpus is a prefix of the KJV, or the KJV repeated.
TRAIN_CASES = {
    "kjv 100kB vocab 1k": (100_000, 1_024),
    "kjv 4.1MB vocab 8k": (None, 8_192),
    "kjv 4.1MB vocab 32k": (None, 32_768),
    "kjv x10 41MB vocab 32k": (10, 32_768),
}
# The naive recount takes a few seconds on 100 kB to 1k tokens, and hours on the others.
NAIVE_TRAIN_CASE = "kjv 100kB vocab 1k"

RANK_PATTERNS = {"gpt2": "gpt2", "cl100k": "gpt4"}

# asv runs fastml from the wheel it installed, so the rank files are looked up in this
# repository's data/bpe unless $FASTML_BPE_DATA names another directory.
os.environ.setdefault("FASTML_BPE_DATA", str(Path(__file__).resolve().parents[2] / "data" / "bpe"))


# ---- inputs, memoized per process -------------------------------------------------------------

@functools.cache
def kjv():
    try:
        return load_kjv()
    except FileNotFoundError as exc:
        skip(str(exc))


@functools.cache
def train_corpus(case):
    size, _ = TRAIN_CASES[case]
    if size is None:
        return kjv()
    if size <= 100:
        return kjv() * size
    return kjv()[:size]


@functools.cache
def rank_path(name):
    try:
        return bpe.rank_file_path(name)
    except FileNotFoundError as exc:
        skip(str(exc))


# ---- one training run per backend or peer -----------------------------------------------------

def train_runner(backend, corpus, vocab_size):
    """Return a callable that trains `vocab_size` tokens on `corpus` with `backend` or a peer."""
    if backend == "rustbpe":
        rustbpe = import_peer("rustbpe")

        def run():
            tokenizer = rustbpe.Tokenizer()
            tokenizer.train_from_iterator(iter([corpus]), vocab_size)
            return tokenizer

        return run
    if backend == "tokenizers":
        return functools.partial(_train_tokenizers, import_peer("tokenizers"), corpus, vocab_size)
    return functools.partial(
        bpe.train, corpus, vocab_size, min_frequency=1, backend=backend, progress=False
    )


def _train_tokenizers(tokenizers, corpus, vocab_size):
    byte_level = tokenizers.pre_tokenizers.ByteLevel
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = byte_level(add_prefix_space=False, use_regex=True)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=0, show_progress=False,
        initial_alphabet=byte_level.alphabet(),
    )
    tokenizer.train_from_iterator([corpus], trainer)
    return tokenizer


@functools.cache
def warmed_train_runner(backend, case):
    """Return the training run of `backend` on `case`, called once (Numba compiles here)."""
    if backend == "naive" and case != NAIVE_TRAIN_CASE:
        skip(f"the naive backend trains only on {NAIVE_TRAIN_CASE!r}")
    size, vocab_size = TRAIN_CASES[case]
    run = train_runner(backend, train_corpus(case), vocab_size)
    if backend in FAST:
        # Compile on a tiny corpus, so the warm-up does not cost a full run.
        bpe.train("warm up the compiled kernels " * 3, 300, backend=backend, progress=False)
    return run


# ---- one encoding run per backend or peer -----------------------------------------------------

@functools.cache
def encode_runner(backend, ranks):
    """Return a warmed-up callable that encodes the whole KJV with `ranks` ("gpt2" or "cl100k")."""
    text = kjv()
    if backend == "tiktoken":
        os.environ["TIKTOKEN_CACHE_DIR"] = ""
        tiktoken = import_peer("tiktoken")
        load = import_peer("tiktoken.load").load_tiktoken_bpe
        encoding = tiktoken.Encoding(
            name=f"local-{ranks}", pat_str=bpe.PATTERNS[RANK_PATTERNS[ranks]],
            mergeable_ranks=load(str(rank_path(ranks))), special_tokens={},
        )
        run = functools.partial(encoding.encode_ordinary, text)
    else:
        tokenizer = bpe.Tokenizer.from_tiktoken_file(
            rank_path(ranks), pattern=RANK_PATTERNS[ranks], backend=backend
        )

        def run():
            tokenizer._cache.clear()
            return tokenizer.encode_ordinary(text)

    run()
    return run


# ---- benchmarks -------------------------------------------------------------------------------

class BPETrain:
    """Training wall time: corpus size and vocabulary size, fastml backends and peers."""

    params = (BACKENDS + TRAIN_PEERS, tuple(TRAIN_CASES))
    param_names = ("backend", "case")
    timeout = 900

    def setup(self, backend, case):
        self.run = warmed_train_runner(backend, case)

    def time_train(self, backend, case):
        self.run()


class BPETrainMemory:
    """Peak memory of training 32k tokens on the KJV; setup's inputs and JIT stay out of it."""

    params = (FAST + TRAIN_PEERS,)
    param_names = ("backend",)
    rounds = 1
    timeout = 900

    def setup(self, backend):
        self.run = warmed_train_runner(backend, "kjv 4.1MB vocab 32k")
        if not reset_peak_memory():
            skip("resetting the peak memory needs Linux's /proc/self/clear_refs")

    def peakmem_train(self, backend):
        self.run()


class BPETrainRatio:
    """Training time divided by rustbpe's on the same case (lower is better; goal <= 1)."""

    params = (FAST + ("tokenizers",), ("kjv 4.1MB vocab 32k", "kjv x10 41MB vocab 32k"))
    param_names = ("backend", "case")
    rounds = 1
    timeout = 1800

    def setup(self, backend, case):
        self.run = warmed_train_runner(backend, case)
        self.reference = warmed_train_runner("rustbpe", case)

    def track_time_ratio_to_rustbpe(self, backend, case):
        return best_time(self.run, repeat=3) / best_time(self.reference, repeat=3)

    track_time_ratio_to_rustbpe.unit = "time / rustbpe time"


class BPETrainScaling:
    """Empirical exponent of training time over corpus size (32k tokens; the naive: 1k).

    Prefixes of the KJV; near 1 means the cost grows linearly with the corpus. The naive
    backend climbs its own ladder of small prefixes.
    """

    params = (BACKENDS + TRAIN_PEERS,)
    param_names = ("backend",)
    rounds = 1
    timeout = 1800
    LADDERS = {"naive": (25_000, 50_000, 100_000, 200_000)}
    LADDER = (500_000, 1_000_000, 2_000_000, 4_000_000)

    def setup(self, backend):
        self.sizes = self.LADDERS.get(backend, self.LADDER)
        vocab_size = 1_024 if backend == "naive" else 32_768
        if backend in FAST:
            bpe.train("warm up the compiled kernels " * 3, 300, backend=backend, progress=False)
        self.runs = [train_runner(backend, kjv()[:n], vocab_size) for n in self.sizes]

    def track_exponent_in_corpus_size(self, backend):
        return loglog_slope(self.sizes, [best_time(run, repeat=2) for run in self.runs])

    track_exponent_in_corpus_size.unit = "exponent of corpus size"


class BPEEncode:
    """Encoding the whole KJV (4.1 MB) with GPT-2's and cl100k's ranks; ids equal tiktoken's."""

    params = (BACKENDS + ("tiktoken",), tuple(RANK_PATTERNS))
    param_names = ("backend", "ranks")
    timeout = 900

    def setup(self, backend, ranks):
        self.run = encode_runner(backend, ranks)

    def time_encode(self, backend, ranks):
        self.run()

    def track_megabytes_per_second(self, backend, ranks):
        return len(kjv()) / 1e6 / best_time(self.run, repeat=3)

    track_megabytes_per_second.unit = "MB/s"


class BPEEncodeRatio:
    """Encoding time divided by tiktoken's on the KJV (lower is better; goal <= 1)."""

    params = (FAST, tuple(RANK_PATTERNS))
    param_names = ("backend", "ranks")
    rounds = 1
    timeout = 900

    def setup(self, backend, ranks):
        self.run = encode_runner(backend, ranks)
        self.reference = encode_runner("tiktoken", ranks)

    def track_time_ratio_to_tiktoken(self, backend, ranks):
        return best_time(self.run, repeat=5) / best_time(self.reference, repeat=5)

    track_time_ratio_to_tiktoken.unit = "time / tiktoken time"


class BPEEncodeRepeatedCharacter:
    """Exponent of encoding time over n for "a" * n (one pre-token) with GPT-2's ranks.

    The heap merge of the fast backends is O(n log n), so the exponent should stay near 1;
    the classic rescan (the naive backend, and tiktoken 0.14) is quadratic. Those climb a
    shorter ladder.
    """

    params = (BACKENDS + ("tiktoken",),)
    param_names = ("backend",)
    rounds = 1
    timeout = 900
    LADDERS = {"naive": (500, 1_000, 2_000, 4_000), "tiktoken": (2_000, 4_000, 8_000, 16_000)}
    LADDER = (40_000, 80_000, 160_000, 320_000)

    def setup(self, backend):
        self.sizes = self.LADDERS.get(backend, self.LADDER)
        if backend == "tiktoken":
            os.environ["TIKTOKEN_CACHE_DIR"] = ""
            tiktoken = import_peer("tiktoken")
            load = import_peer("tiktoken.load").load_tiktoken_bpe
            encoding = tiktoken.Encoding(
                name="local-gpt2", pat_str=bpe.GPT2_PATTERN,
                mergeable_ranks=load(str(rank_path("gpt2"))), special_tokens={},
            )
            encode = encoding.encode_ordinary
        else:
            tokenizer = bpe.Tokenizer.from_tiktoken_file(
                rank_path("gpt2"), pattern="gpt2", backend=backend, cache_size=0
            )
            encode = tokenizer.encode_ordinary
        self.runs = [functools.partial(encode, "a" * n) for n in self.sizes]
        self.runs[0]()

    def track_exponent_in_length(self, backend):
        return loglog_slope(self.sizes, [best_time(run, repeat=3) for run in self.runs])

    track_exponent_in_length.unit = "exponent of n"

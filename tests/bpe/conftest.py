import functools
import os

import pytest

from fastml.backends import available_backends
from fastml.bpe import GPT2_PATTERN, GPT4_PATTERN, Tokenizer, rank_file_path
from fastml.bpe._corpus import load_kjv

# tiktoken must build its encodings from the local rank files and write no cache.
os.environ["TIKTOKEN_CACHE_DIR"] = ""

BACKENDS = available_backends("bpe")
FAST_BACKENDS = tuple(b for b in BACKENDS if b != "naive")

# name -> (pattern, special tokens) as tiktoken 0.14 defines r50k_base and cl100k_base.
ENCODINGS = {
    "gpt2": (GPT2_PATTERN, {"<|endoftext|>": 50256}),
    "cl100k": (
        GPT4_PATTERN,
        {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
}


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=FAST_BACKENDS)
def fast_backend(request):
    return request.param


@pytest.fixture(scope="session")
def kjv():
    """The King James Bible text, or a skip with the install command."""
    try:
        return load_kjv()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def kjv_slice(kjv):
    """The first 200 kB of the KJV (Genesis and most of Exodus), for training on every backend."""
    return kjv[:200_000]


def rank_path(name):
    try:
        return rank_file_path(name)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@functools.cache
def tiktoken_encoding(name):
    """A tiktoken Encoding built from the local rank file `name`, or a skip."""
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    pattern, special_tokens = ENCODINGS[name]
    return tiktoken.Encoding(
        name=f"local-{name}",
        pat_str=pattern,
        mergeable_ranks=load_tiktoken_bpe(str(rank_path(name))),
        special_tokens=special_tokens,
    )


_loaded = {}


def fastml_tokenizer(name, backend):
    """A fastml Tokenizer over the same rank file, cached per (name, backend)."""
    key = (name, backend)
    if key not in _loaded:
        pattern, special_tokens = ENCODINGS[name]
        _loaded[key] = Tokenizer.from_tiktoken_file(
            rank_path(name), pattern=pattern, special_tokens=special_tokens, backend=backend
        )
    return _loaded[key]

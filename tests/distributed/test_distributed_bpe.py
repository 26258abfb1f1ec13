"""Distributed BPE counting and training against the single-machine ones, on files and bags."""

import pytest

pytest.importorskip("dask.array", reason="needs the distributed extra: pip install 'fastml[distributed]'")
pytest.importorskip("distributed", reason="needs the distributed extra: pip install 'fastml[distributed]'")

from collections import Counter

import dask.bag as db
import numpy as np
import regex

from fastml import bpe
from fastml.bpe._corpus import load_kjv
from fastml.bpe._pretokenize import GPT2_PATTERN, GPT4_PATTERN
from fastml.distributed import count_pretokens, train_bpe

WORDS = (
    "the", "of", "and", "lower", "lowest", "newer", "wider", "ünïcode", "naïve", "東京", "  ",
    "don't", "we'll", "12345", "3.14", "!!", "\n", "\t", "x", "café",
)


def documents(n_documents=12, n_words=400, seed=0):
    """Return seeded documents of words, digits, punctuation, ASCII and non-ASCII letters."""
    rng = np.random.default_rng(seed)
    return [
        " ".join(rng.choice(WORDS, size=n_words)) + rng.choice(["", " ", "\n"])
        for _ in range(n_documents)
    ]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    paths = []
    for index, text in enumerate(documents()):
        path = folder / f"part-{index:02d}.txt"
        # One file has bytes that are not UTF-8, which training keeps as they are.
        path.write_bytes(text.encode() + (b"\xff\xfe tail" if index == 3 else b""))
        paths.append(path)
    return paths


def regex_counts(texts, pattern):
    """Count pre-tokens with the regex alone: the reference that shares no code with fastml."""
    counts = Counter()
    for text in texts:
        counts.update(piece.encode("utf-8", "surrogateescape") for piece in regex.findall(pattern, text))
    return dict(counts)


@pytest.mark.parametrize("pattern", [GPT4_PATTERN, GPT2_PATTERN], ids=["gpt4", "gpt2"])
def test_file_counts_equal_regex_reference(client, files, pattern):
    texts = [path.read_bytes().decode("utf-8", "surrogateescape") for path in files]
    assert count_pretokens(files, pattern=pattern, client=client) == regex_counts(texts, pattern)


@pytest.mark.parametrize("backend", ["naive", "numba", "cython"])
def test_file_merges_equal_single_machine(client, files, backend):
    expected = bpe.train(files, 600, backend=backend, progress=False)
    result = train_bpe(files, 600, backend=backend, progress=False, client=client)

    assert result.merges == expected.merges
    assert result.ranks == expected.ranks


def test_bag_merges_equal_single_machine(client):
    texts = documents(n_documents=9, seed=1)
    expected = bpe.train(texts, 500, special_tokens=["<|end|>"], progress=False)
    bag = db.from_sequence(texts, npartitions=4)
    result = train_bpe(bag, 500, special_tokens=["<|end|>"], progress=False, client=client)

    assert result.merges == expected.merges
    assert result.encode("lowest café<|end|>", allowed_special="all") == expected.encode(
        "lowest café<|end|>", allowed_special="all"
    )


def test_bag_of_bytes_counts(client):
    texts = [text.encode() for text in documents(n_documents=4, seed=2)]
    bag = db.from_sequence(texts, npartitions=2)
    expected = regex_counts([text.decode() for text in texts], GPT4_PATTERN)
    assert count_pretokens(bag, client=client) == expected


def test_kjv_in_files_equals_single_machine(client, tmp_path):
    try:
        text = load_kjv()[:400_000]
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    # Cut at line ends, so that no pre-token spans two files.
    lines = text.splitlines(keepends=True)
    paths = []
    for index in range(4):
        path = tmp_path / f"kjv-{index}.txt"
        path.write_text("".join(lines[index::4]))
        paths.append(path)

    expected = bpe.train(paths, 700, progress=False)
    assert train_bpe(paths, 700, progress=False, client=client).merges == expected.merges

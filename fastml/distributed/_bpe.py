"""BPE pre-token counting over many files or a Dask bag, reduced to one table on the client.

Each task counts the pre-tokens of one file, or of one bag partition, with the single-machine
counter (``fastml.bpe._pretokenize.count_pretokens``, the backend's ASCII scanner included), and
the count tables are added in a tree of tasks. Counting is exact integer arithmetic, so the table
equals the single-machine one, and the single-machine merge loop trained on it learns the same
merges. Only the merge loop runs on the client: its input grows with the distinct pre-tokens,
not with the corpus.
"""

import os
from collections import Counter

import dask
import dask.bag as db

from fastml import backends
from fastml.bpe._api import check_special_list, check_train_settings, train_from_counts
from fastml.bpe._pretokenize import count_pretokens as count_local
from fastml.bpe._pretokenize import resolve_pattern
from fastml.distributed._client import connect

# Count tables added by one task of the reduction tree.
MERGE_FAN_IN = 8


def count_pretokens(corpus, *, pattern="gpt4", special_tokens=(), backend="auto", client=None):
    """Count the pre-tokens of `corpus` on Dask; return a dict from bytes to count.

    Parameters
    ----------
    corpus : dask.bag.Bag of str or bytes documents, or a sequence of os.PathLike files
        One task per file or per bag partition. The workers must see the files at these paths.
    pattern, special_tokens
        As in ``fastml.bpe.train``.
    backend : {"auto", "naive", "numba", "cython"}
        The backend whose ASCII pre-token scanner the tasks use, if it has one.
    client : None, distributed.Client or str
        See ``fastml.distributed.connect``.
    """
    regex_pattern = resolve_pattern(pattern)
    special_tokens = check_special_list(special_tokens)
    backend = backends.resolve("bpe", backend)
    options = (regex_pattern, tuple(special_tokens), backend)

    if isinstance(corpus, db.Bag):
        counts = corpus.reduction(
            lambda partition: _count_texts(list(partition), *options),
            _add_counts,
            split_every=MERGE_FAN_IN,
        )
    else:
        paths = _check_paths(corpus)
        counts = _add_tree(
            [dask.delayed(_count_texts, pure=True)([path], *options) for path in paths]
        )

    with connect(client) as dask_client:
        return dask_client.compute(counts).result()


def train_bpe(
    corpus,
    vocab_size,
    *,
    pattern="gpt4",
    special_tokens=(),
    min_frequency=2,
    backend="auto",
    progress=True,
    client=None,
):
    """Learn a byte-level BPE vocabulary: count on Dask, then run the merge loop on the client.

    The merges equal those of ``fastml.bpe.train`` on the same documents or files. The parameters
    are those of ``fastml.bpe.train``, with `corpus` and `client` as in ``count_pretokens``.
    """
    settings = check_train_settings(vocab_size, pattern, special_tokens, min_frequency, backend)
    counts = count_pretokens(
        corpus, pattern=settings.pattern, special_tokens=settings.special_tokens, backend=backend,
        client=client,
    )
    return train_from_counts(counts, settings, progress)


def _check_paths(corpus):
    if isinstance(corpus, (str, bytes, os.PathLike)):
        raise TypeError(
            f"corpus must be a dask.bag.Bag or a sequence of file paths, got the "
            f"{type(corpus).__name__} {corpus!r:.60}; wrap a single file in a list"
        )
    paths = list(corpus)
    for index, path in enumerate(paths):
        if not isinstance(path, os.PathLike):
            raise TypeError(
                f"corpus item {index} is a {type(path).__name__} ({path!r:.60}); expected a file "
                "path as os.PathLike (pathlib.Path), or pass documents as a dask.bag.Bag"
            )
        if not os.path.isfile(path):
            raise FileNotFoundError(f"corpus item {index}: no such file {os.fspath(path)!r}")
    if not paths:
        raise ValueError("corpus contains no files")
    return paths


def _count_texts(texts, pattern, special_tokens, backend):
    """Count the pre-tokens of `texts` (documents or file paths) with `backend`'s scanner."""
    module = backends.load("bpe", backend)
    scanner = getattr(module, "count_ascii_pretokens", None)
    return count_local(texts, pattern, list(special_tokens), scanner, n_threads=1)


def _add_counts(tables):
    total = Counter()
    for table in tables:
        total.update(table)
    return dict(total)


def _add_tree(tables):
    """Add the count tables in a tree of tasks, MERGE_FAN_IN at a time, to one Delayed."""
    while len(tables) > 1:
        tables = [
            dask.delayed(_add_counts, pure=True)(tables[start : start + MERGE_FAN_IN])
            for start in range(0, len(tables), MERGE_FAN_IN)
        ]
    return tables[0]

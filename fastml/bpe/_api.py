"""Byte-level BPE training: validation, pre-token counting, then the backend's merge loop."""

import sys
import threading
from typing import NamedTuple

import numpy as np

from fastml import backends
from fastml._threads import get_num_threads
from fastml._validation import check_int
from fastml.bpe._pretokenize import count_pretokens, resolve_pattern
from fastml.bpe._tokenizer import Tokenizer

# Seconds between two refreshes of the progress bar.
PROGRESS_INTERVAL = 0.2


def train(
    corpus,
    vocab_size,
    *,
    pattern="gpt4",
    special_tokens=(),
    min_frequency=2,
    backend="auto",
    progress=True,
):
    """Learn a byte-level BPE vocabulary of at most `vocab_size` tokens from `corpus`.

    Parameters
    ----------
    corpus : str, bytes, iterable of str or bytes, or iterable of os.PathLike
        The training text. Each document (and each file) is pre-tokenized on its own, and files
        are streamed in blocks, so memory grows with the number of distinct pre-tokens, not
        with the corpus. Bytes that are not valid UTF-8 are trained on as they are. File paths
        must be ``os.PathLike`` (``pathlib.Path``), because a plain str is a document.
    vocab_size : int
        256 byte tokens + the merges + the special tokens. At least 256 + len(special_tokens).
    pattern : str or None
        "gpt4" (also "cl100k"), "gpt2" (also "r50k"), a regular expression, or None for no
        pre-tokenization.
    special_tokens : sequence of str
        Cut out of the corpus before pre-tokenization and given the ids after the last merge.
    min_frequency : int
        Training stops when the most frequent pair occurs fewer times than this.
    backend : {"auto", "naive", "numba", "cython"}
        All backends learn the same merges: the pair with the highest count, and among equal
        counts the smallest pair of token ids.
    progress : bool
        Show a tqdm progress bar over the merges (only when stderr is a terminal).

    Returns
    -------
    Tokenizer
        Token 256 + k is merge k. Training stops early, without error, when no pair is left.
    """
    settings = check_train_settings(vocab_size, pattern, special_tokens, min_frequency, backend)
    counts = count_pretokens(
        corpus, settings.pattern, settings.special_tokens,
        getattr(settings.module, "count_ascii_pretokens", None), n_threads=get_num_threads(),
    )
    return train_from_counts(counts, settings, progress)


class TrainSettings(NamedTuple):
    """The validated settings of `train`, and the backend module that runs the merge loop."""

    n_merges: int
    pattern: str
    special_tokens: list
    min_frequency: int
    module: object


def check_train_settings(vocab_size, pattern, special_tokens, min_frequency, backend):
    """Validate the settings of `train`; return them as `TrainSettings`."""
    vocab_size = check_int(vocab_size, "vocab_size", min_value=1)
    special_tokens = check_special_list(special_tokens)
    n_merges = vocab_size - 256 - len(special_tokens)
    if n_merges < 0:
        raise ValueError(
            f"vocab_size={vocab_size} is below 256 byte tokens + {len(special_tokens)} special "
            f"tokens = {256 + len(special_tokens)}"
        )
    min_frequency = check_int(min_frequency, "min_frequency", min_value=1)
    return TrainSettings(
        n_merges, resolve_pattern(pattern), special_tokens, min_frequency,
        backends.load("bpe", backend),
    )


def train_from_counts(counts, settings, progress):
    """Run the merge loop on a table of pre-token counts; return the trained `Tokenizer`."""
    words, offsets, weights = pack_words(counts)
    n_merges = settings.n_merges
    merges = run_with_progress(
        settings.module.train, (words, offsets, weights, n_merges, settings.min_frequency),
        n_merges, progress,
    )
    backend = settings.module.__name__.rsplit("._", 1)[1]
    return build_tokenizer(merges, settings.pattern, settings.special_tokens, backend)


def check_special_list(special_tokens):
    """Validate the special tokens given to `train`: distinct non-empty str."""
    if isinstance(special_tokens, str):
        raise TypeError(
            f"special_tokens must be a sequence of str, got the str {special_tokens!r}; "
            f"wrap it in a list: [{special_tokens!r}]"
        )
    special_tokens = list(special_tokens)
    for token in special_tokens:
        if not isinstance(token, str) or not token:
            raise TypeError(f"special tokens must be non-empty str, got {token!r}")
    duplicates = sorted({token for token in special_tokens if special_tokens.count(token) > 1})
    if duplicates:
        raise ValueError(f"special_tokens contains duplicates: {duplicates}")
    return special_tokens


def pack_words(counts):
    """Pack the pre-tokens that have a pair into ``(words, offsets, weights)`` arrays.

    Word i is ``words[offsets[i]:offsets[i + 1]]`` (int32 byte values) and occurs `weights[i]`
    times. Single-byte pre-tokens have no pair and are left out.
    """
    pieces = [piece for piece in counts if len(piece) > 1]
    lengths = np.fromiter((len(piece) for piece in pieces), dtype=np.int64, count=len(pieces))
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    words = np.frombuffer(b"".join(pieces), dtype=np.uint8).astype(np.int32)
    weights = np.fromiter((counts[piece] for piece in pieces), dtype=np.int64, count=len(pieces))
    return words, offsets, weights


def run_with_progress(train_function, args, n_merges, progress):
    """Run a backend's `train_function` while a thread shows its merge counter in tqdm."""
    counter = np.zeros(1, dtype=np.int64)
    bar = make_progress_bar(n_merges, progress)
    if bar is None:
        return train_function(*args, counter)

    done = threading.Event()

    def refresh():
        while not done.wait(PROGRESS_INTERVAL):
            bar.update(int(counter[0]) - bar.n)

    thread = threading.Thread(target=refresh, daemon=True)
    thread.start()
    try:
        return train_function(*args, counter)
    finally:
        done.set()
        thread.join()
        bar.update(int(counter[0]) - bar.n)
        bar.close()


def make_progress_bar(n_merges, progress):
    """Return a tqdm bar over `n_merges` merges, or None when it is off or stderr is no terminal."""
    if not progress or n_merges == 0 or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=n_merges, desc="BPE merges", unit="merge")


def build_tokenizer(merges, pattern, special_tokens, backend):
    """Return the Tokenizer of the learned `merges`: bytes, then merges, then special tokens."""
    tokens = [bytes([b]) for b in range(256)]
    for a, b in merges:
        tokens.append(tokens[a] + tokens[b])

    # NOTE: two merges can build the same bytes (from different splits). The rank table keeps
    # the first, which is the one encoding can produce. The later id is never emitted, and a
    # saved rank file leaves it out.
    ranks = {}
    for token_id, token in enumerate(tokens):
        ranks.setdefault(token, token_id)

    first_special = len(tokens)
    specials = {text: first_special + i for i, text in enumerate(special_tokens)}
    return Tokenizer(
        ranks, pattern=pattern, special_tokens=specials, backend=backend, merges=merges.tolist()
    )

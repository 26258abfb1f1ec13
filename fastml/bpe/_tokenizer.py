"""The Tokenizer class: special tokens, pre-tokenization and the per-piece cache around a backend."""

import numbers
import os
from concurrent.futures import ThreadPoolExecutor

import regex

from fastml import backends
from fastml._threads import get_num_threads
from fastml.bpe import _rankfile
from fastml.bpe._pretokenize import (
    ASCII_SCANNERS,
    ascii_segments,
    GPT2_PATTERN,
    GPT4_PATTERN,
    resolve_pattern,
    replace_lone_surrogates,
    special_splitter,
    split_pieces,
)

# Pre-tokens whose ids the cache keeps; it is emptied when it reaches this size, so memory stays
# bounded on text with endless distinct words.
DEFAULT_CACHE_SIZE = 1 << 16


class Tokenizer:
    """A byte-level BPE tokenizer: ranks, a split pattern and special tokens.

    Parameters
    ----------
    ranks : dict of bytes to int
        Token bytes to rank; the rank is the token id, as in tiktoken. All 256 single bytes must
        be tokens, so that every text can be encoded.
    pattern : str or None
        "gpt2" (also "r50k"), "gpt4" (also "cl100k"), a regular expression for the `regex`
        package, or None to treat each text between special tokens as one pre-token.
    special_tokens : dict of str to int
        Special token text to id; the ids must not be ranks.
    backend : {"auto", "naive", "numba", "cython"}
        The backend that encodes pre-tokens; all give the same ids.
    merges : list of (int, int), optional
        The merges in training order, kept for inspection when the tokenizer comes from `train`.
    cache_size : int
        Maximum number of encoded pre-tokens kept; 0 turns the cache off.
    """

    def __init__(
        self,
        ranks,
        *,
        pattern="gpt4",
        special_tokens=None,
        backend="auto",
        merges=None,
        cache_size=DEFAULT_CACHE_SIZE,
    ):
        self._ranks = check_ranks(ranks)
        self.pattern = resolve_pattern(pattern)
        self.special_tokens = check_special_tokens(special_tokens, self._ranks)
        self.backend = backends.resolve("bpe", backend)
        self.merges = None if merges is None else [tuple(map(int, pair)) for pair in merges]
        self.cache_size = check_cache_size(cache_size)

        self._compiled = None if self.pattern is None else regex.compile(self.pattern)
        self._decoder = {rank: token for token, rank in self._ranks.items()}
        for text, token_id in self.special_tokens.items():
            self._decoder[token_id] = text.encode("utf-8")
        self._encoder = None
        self._cache = {}

    # ---- construction from files --------------------------------------------------------------

    @classmethod
    def from_tiktoken_file(
        cls, path, pattern="gpt4", special_tokens=None, backend="auto", cache_size=DEFAULT_CACHE_SIZE
    ):
        """Load a bare tiktoken rank file, such as GPT-2's or cl100k's, with `pattern`.

        The rank file does not store the pattern or the special tokens: pass "gpt2" with
        ``{"<|endoftext|>": 50256}`` for GPT-2's ranks, "cl100k" for cl100k's.
        """
        ranks = _rankfile.read_ranks(path)
        return cls(
            ranks, pattern=pattern, special_tokens=special_tokens, backend=backend,
            cache_size=cache_size,
        )

    @classmethod
    def load(cls, path, backend="auto", cache_size=DEFAULT_CACHE_SIZE):
        """Load a tokenizer written by `save`: the rank file and its side file ``<path>.json``."""
        pattern, special_tokens = _rankfile.read_side(path)
        ranks = _rankfile.read_ranks(path)
        return cls(
            ranks, pattern=pattern, special_tokens=special_tokens, backend=backend,
            cache_size=cache_size,
        )

    def save(self, path):
        """Write the ranks to `path` as a tiktoken rank file and the rest to ``<path>.json``.

        tiktoken reads the rank file with ``tiktoken.load.load_tiktoken_bpe``; build its
        ``Encoding`` with ``pat_str=tokenizer.pattern`` and the same special tokens.
        """
        path = os.fspath(path)
        _rankfile.write_ranks(path, self._ranks)
        _rankfile.write_side(path, self.pattern, self.special_tokens)

    # ---- properties ---------------------------------------------------------------------------

    @property
    def ranks(self):
        """A copy of the dict from token bytes to rank."""
        return dict(self._ranks)

    @property
    def n_vocab(self):
        """One more than the largest token id, special tokens included (tiktoken's n_vocab)."""
        return max(self._decoder) + 1

    # ---- encoding -----------------------------------------------------------------------------

    def encode(self, text, *, allowed_special=frozenset(), disallowed_special="all"):
        """Encode `text` (str) to a list of token ids.

        Special tokens follow tiktoken: those in `allowed_special` ("all" or a set of their
        texts) become their ids. Text equal to a special token in `disallowed_special` ("all"
        means every special token not allowed) raises ValueError, and any other special text is
        encoded as ordinary text. Lone surrogates are replaced with U+FFFD first, as tiktoken
        does.
        """
        text = check_text(text)
        allowed = self._allowed_set(allowed_special)
        self._reject_disallowed(text, allowed, disallowed_special)
        if not allowed:
            return self._encode_ordinary(text)

        ids = []
        start = 0
        for match in special_splitter(allowed).finditer(text):
            ids.extend(self._encode_ordinary(text[start:match.start()]))
            ids.append(self.special_tokens[match.group()])
            start = match.end()
        ids.extend(self._encode_ordinary(text[start:]))
        return ids

    def encode_ordinary(self, text):
        """Encode `text` with every special token treated as ordinary text."""
        return self._encode_ordinary(check_text(text))

    def encode_batch(self, texts, *, allowed_special=frozenset(), disallowed_special="all"):
        """Encode each text of `texts`; return a list of lists of token ids.

        The texts are encoded on ``fastml.get_num_threads()`` threads. That pays with the
        compiled backends, which release the GIL while they split and merge ASCII text.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("texts must be a list of str; for one text call encode")
        texts = list(texts)

        def encode_one(text):
            return self.encode(
                text, allowed_special=allowed_special, disallowed_special=disallowed_special
            )

        n_threads = min(get_num_threads(), len(texts))
        if n_threads <= 1 or self.backend == "naive":
            return [encode_one(text) for text in texts]
        with ThreadPoolExecutor(n_threads) as pool:
            return list(pool.map(encode_one, texts))

    def _allowed_set(self, allowed_special):
        """Return the set of allowed special-token texts, checking that each is a special token."""
        if allowed_special == "all":
            return set(self.special_tokens)
        allowed = set(allowed_special)
        unknown = sorted(allowed - set(self.special_tokens))
        if unknown:
            raise ValueError(
                f"allowed_special contains {unknown}, which are not special tokens of this "
                f"tokenizer; its special tokens are {sorted(self.special_tokens)}"
            )
        return allowed

    def _reject_disallowed(self, text, allowed, disallowed_special):
        """Raise ValueError if `text` contains a disallowed special token."""
        if disallowed_special == "all":
            disallowed = set(self.special_tokens) - allowed
        else:
            disallowed = set(disallowed_special)
        if not disallowed:
            return
        match = special_splitter(disallowed).search(text)
        if match is None:
            return
        token = match.group()
        raise ValueError(
            f"the text contains the special token {token!r}, which is disallowed. To encode it "
            f"as its special id, pass allowed_special={{{token!r}}} (or \"all\"); to encode it "
            f"as ordinary text, pass disallowed_special=() or leave {token!r} out of "
            "disallowed_special."
        )

    def _encode_ordinary(self, text):
        """Encode text that contains no special token to handle."""
        if not text:
            return []
        encoder = self._get_encoder()
        if self.pattern not in ASCII_SCANNERS or not hasattr(encoder, "encode_ascii"):
            return self._encode_with_regex(text, encoder)

        # The compiled backends split and encode ASCII text in one pass without the regex. The
        # stretches around non-ASCII characters, cut where no pre-token crosses, use the regex.
        gpt4 = ASCII_SCANNERS[self.pattern]
        ids = []
        for segment, is_ascii in ascii_segments(text):
            if is_ascii:
                ids.extend(encoder.encode_ascii(segment.encode("ascii"), gpt4).tolist())
            else:
                ids.extend(self._encode_with_regex(segment, encoder))
        return ids

    def _encode_with_regex(self, text, encoder):
        """Encode text split by the regex, with the cache and whole-token lookups in Python."""
        text = replace_lone_surrogates(text)
        pieces = [piece.encode("utf-8") for piece in split_pieces(text, self._compiled)]
        ranks = self._ranks
        cache = self._cache

        # A pre-token that is a token, or is cached, costs one lookup; the rest go to the
        # backend in one batch. Cached ids are copied out first, because another thread of
        # encode_batch may empty the cache meanwhile.
        known = {}
        missing = []
        for piece in {p for p in pieces if p not in ranks}:
            ids = cache.get(piece)
            if ids is None:
                missing.append(piece)
            else:
                known[piece] = ids
        encoded = dict(zip(missing, encoder.encode_pieces(missing)))
        self._remember(encoded)
        known.update(encoded)

        ids = []
        for piece in pieces:
            rank = ranks.get(piece)
            if rank is not None:
                ids.append(rank)
            else:
                ids.extend(known[piece])
        return ids

    def _remember(self, encoded):
        """Add freshly encoded pre-tokens to the cache, emptying it first if it would overflow."""
        if self.cache_size == 0:
            return
        if len(self._cache) + len(encoded) > self.cache_size:
            self._cache.clear()
        if len(encoded) <= self.cache_size:
            self._cache.update(encoded)

    def _get_encoder(self):
        """Return the backend's encoder for these ranks, built on first use."""
        if self._encoder is None:
            self._encoder = backends.load("bpe", self.backend).Encoder(self._ranks)
        return self._encoder

    # ---- decoding -----------------------------------------------------------------------------

    def decode_bytes(self, ids):
        """Return the bytes of the token ids `ids` (special tokens as their UTF-8 text)."""
        decoder = self._decoder
        try:
            return b"".join([decoder[token_id] for token_id in ids])
        except (KeyError, TypeError):
            pass
        for position, token_id in enumerate(ids):
            if not isinstance(token_id, numbers.Integral) or token_id not in decoder:
                raise ValueError(
                    f"invalid token id {token_id!r} at position {position}; ids are the ranks and "
                    f"special-token ids of this tokenizer, below n_vocab={self.n_vocab}"
                )
        raise AssertionError("unreachable: every id was found")  # pragma: no cover

    def decode(self, ids):
        """Return the text of `ids`; byte sequences that are not valid UTF-8 become U+FFFD.

        A token boundary may fall inside a multi-byte character, so decoding part of an
        encoding can give U+FFFD where decoding all of it would not. `decode_bytes` is exact.
        """
        return self.decode_bytes(ids).decode("utf-8", "replace")

    def __repr__(self):
        names = {GPT2_PATTERN: "gpt2", GPT4_PATTERN: "gpt4", None: None}
        shown = names.get(self.pattern, "custom")
        return (
            f"Tokenizer(n_vocab={self.n_vocab}, pattern={shown!r}, "
            f"special_tokens={len(self.special_tokens)}, backend={self.backend!r})"
        )


# ---- validation ----------------------------------------------------------------------------------

def check_text(text):
    """Return `text` if it is a str, else raise TypeError naming its type."""
    if not isinstance(text, str):
        raise TypeError(
            f"text must be a str, got {type(text).__name__}; decode bytes first "
            "(bytes.decode('utf-8', 'surrogateescape') keeps invalid bytes)"
        )
    return text


def check_ranks(ranks):
    """Validate a rank table: bytes keys, distinct non-negative int ranks, all 256 single bytes."""
    if not isinstance(ranks, dict):
        raise TypeError(f"ranks must be a dict from bytes to int, got {type(ranks).__name__}")
    for token, rank in ranks.items():
        if not isinstance(token, bytes) or not token:
            raise TypeError(f"ranks keys must be non-empty bytes, got {token!r}")
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 0:
            raise ValueError(f"rank of {token!r} must be a non-negative int, got {rank!r}")
    if len(set(ranks.values())) != len(ranks):
        raise ValueError("ranks must be distinct; two tokens share a rank")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(
            f"ranks lack {len(missing)} single-byte token(s), first {bytes([missing[0]])!r}; "
            "byte-level BPE needs all 256 bytes as tokens"
        )
    return {token: int(rank) for token, rank in ranks.items()}


def check_special_tokens(special_tokens, ranks):
    """Validate a dict from special-token text to id; the ids must not be ranks."""
    if special_tokens is None:
        return {}
    if not isinstance(special_tokens, dict):
        raise TypeError(
            f"special_tokens must be a dict from str to int, got {type(special_tokens).__name__}"
        )
    used = set(ranks.values())
    for text, token_id in special_tokens.items():
        if not isinstance(text, str) or not text:
            raise TypeError(f"special token texts must be non-empty str, got {text!r}")
        if isinstance(token_id, bool) or not isinstance(token_id, numbers.Integral) or token_id < 0:
            raise ValueError(f"id of special token {text!r} must be a non-negative int, got {token_id!r}")
        if token_id in used:
            raise ValueError(f"id {token_id} of special token {text!r} is already a rank or special id")
        used.add(token_id)
    return {text: int(token_id) for text, token_id in special_tokens.items()}


def check_cache_size(cache_size):
    """Validate the cache size (an int >= 0)."""
    if isinstance(cache_size, bool) or not isinstance(cache_size, numbers.Integral) or cache_size < 0:
        raise ValueError(f"cache_size must be an int >= 0, got {cache_size!r}")
    return int(cache_size)

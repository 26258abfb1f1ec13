"""Pre-tokenization: the GPT-2 and cl100k split patterns, special tokens, and corpus streaming.

A byte-level BPE never merges across a pre-token boundary. The text is first cut at special
tokens, then each stretch between them is split by a regular expression (the `regex` package,
which has Unicode classes and possessive quantifiers), and each pre-token is encoded to UTF-8
bytes on its own.
"""

import os
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor

import regex

# The split patterns of tiktoken's r50k_base (GPT-2) and cl100k_base (GPT-3.5 and GPT-4)
# encodings, as tiktoken 0.14 defines them. The GPT-2 one is the possessive rewrite of the
# pattern in OpenAI's GPT-2 encoder.py, and it splits text the same way.
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

# Patterns that a backend may split by hand in ASCII text (with `count_ascii_pretokens` or
# `Encoder.encode_ascii`): pattern -> True for GPT-4's, False for GPT-2's.
ASCII_SCANNERS = {GPT2_PATTERN: False, GPT4_PATTERN: True}

PATTERNS = {"gpt2": GPT2_PATTERN, "r50k": GPT2_PATTERN, "gpt4": GPT4_PATTERN, "cl100k": GPT4_PATTERN}

# Files are read in blocks of this many bytes, cut at a boundary that no pre-token crosses.
READ_BLOCK = 1 << 20
# ASCII text of at least this many bytes is counted on several threads, in blocks of READ_BLOCK.
PARALLEL_MIN_BYTES = 2 * READ_BLOCK


def resolve_pattern(pattern):
    """Return the regular expression string for `pattern`: a name, a regex string, or None."""
    if pattern is None or pattern == "none":
        return None
    if not isinstance(pattern, str):
        raise TypeError(
            f"pattern must be a str (a name or a regular expression) or None, got {pattern!r} "
            f"of type {type(pattern).__name__}"
        )
    if pattern in PATTERNS:
        return PATTERNS[pattern]
    if pattern.isidentifier():
        # A bare word is a mistyped name far more often than a regex meant to match that word.
        raise ValueError(
            f"unknown pattern name {pattern!r}; expected one of {sorted(PATTERNS)}, 'none', "
            "or a regular expression"
        )
    try:
        regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
    return pattern


def replace_lone_surrogates(text):
    """Replace lone surrogates (which have no UTF-8 form) with U+FFFD, as tiktoken does."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def split_pieces(text, compiled):
    """Return the pre-tokens of `text` (a list of str); `compiled` None keeps the text whole."""
    if compiled is None:
        return [text] if text else []
    # A custom pattern may match the empty string; an empty pre-token has no tokens.
    return [piece for piece in compiled.findall(text) if piece]


def special_splitter(special_tokens):
    """Compile a regex that matches any of `special_tokens`, longest first; None if empty."""
    if not special_tokens:
        return None
    ordered = sorted(special_tokens, key=len, reverse=True)
    return regex.compile("|".join(regex.escape(token) for token in ordered))


NON_ASCII_RUN = regex.compile(r"[^\x00-\x7f]+")


def ascii_segments(text):
    """Cut `text` into ``(segment, is_ascii)`` pairs at points that no pre-token crosses.

    Each non-ASCII run is widened to the nearest safe cuts around it (see `safe_cut`), so
    splitting each segment on its own gives the pre-tokens of the whole text under the GPT-2
    and GPT-4 patterns.
    """
    position = 0
    for match in NON_ASCII_RUN.finditer(text):
        if match.start() < position:
            continue
        start = last_safe_space(text, position, match.start())
        end = first_safe_space(text, match.end())
        if start > position:
            yield text[position:start], True
        yield text[start:end], False
        position = end
    if position < len(text):
        yield text[position:], True


def is_safe_space(text, index):
    """Return whether a cut before `text[index]` is safe: a space after printable ASCII."""
    return text[index] == " " and "!" <= text[index - 1] <= "~"


def last_safe_space(text, start, end):
    """Return the last safe cut in text[start + 1:end + 1], or `start` if there is none."""
    index = text.rfind(" ", start + 1, end + 1)
    while index > start:
        if is_safe_space(text, index):
            return index
        index = text.rfind(" ", start + 1, index)
    return start


def first_safe_space(text, start):
    """Return the first safe cut at or after `start` (start > 0), or len(text) if there is none."""
    index = text.find(" ", start)
    while index != -1:
        if is_safe_space(text, index):
            return index
        index = text.find(" ", index + 1)
    return len(text)


# ---- training corpora --------------------------------------------------------------------------

def count_pretokens(corpus, pattern, special_tokens, ascii_counter=None, n_threads=1):
    """Count the distinct pre-tokens of `corpus`; return a dict from bytes to count.

    Only the counters grow with the corpus, so memory follows the number of distinct
    pre-tokens. Bytes that are not valid UTF-8 are kept through the "surrogateescape" error
    handler: the regex matches them as U+DC80..U+DCFF (neither letters, digits nor whitespace)
    and the pre-token encodes back to the original bytes.

    `ascii_counter(data, gpt4)`, when given, counts ASCII stretches (cut out with
    `ascii_segments`) under the GPT-2 or GPT-4 pattern in place of the regex. It must release
    the GIL: stretches of at least PARALLEL_MIN_BYTES are cut into blocks at safe points and
    counted on `n_threads` threads.
    """
    compiled = None if pattern is None else regex.compile(pattern)
    scanner = ASCII_SCANNERS.get(pattern) if ascii_counter is not None else None
    specials = special_splitter(special_tokens)
    text_counts = Counter()
    byte_counts = Counter()
    pool = ThreadPoolExecutor(n_threads) if scanner is not None and n_threads > 1 else None
    pending = deque()
    try:
        for text in iter_texts(corpus):
            stretches = [text] if specials is None else specials.split(text)
            for stretch in stretches:
                if scanner is None:
                    text_counts.update(split_pieces(stretch, compiled))
                    continue
                segments = [(stretch, True)] if stretch.isascii() else ascii_segments(stretch)
                for segment, is_ascii in segments:
                    if not is_ascii:
                        text_counts.update(split_pieces(segment, compiled))
                    elif pool is None or len(segment) < PARALLEL_MIN_BYTES:
                        byte_counts.update(ascii_counter(segment.encode("ascii"), scanner))
                    else:
                        # At most two blocks per thread wait, so memory stays bounded.
                        for block in ascii_blocks(segment.encode("ascii"), READ_BLOCK):
                            pending.append(pool.submit(ascii_counter, block, scanner))
                            if len(pending) > 2 * n_threads:
                                byte_counts.update(pending.popleft().result())
        while pending:
            byte_counts.update(pending.popleft().result())
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    for piece, count in text_counts.items():
        byte_counts[piece.encode("utf-8", "surrogateescape")] += count
    return dict(byte_counts)


def ascii_blocks(data, size):
    """Yield `data` (bytes) in blocks of about `size` bytes, each cut at a safe point."""
    start = 0
    while len(data) - start > size:
        cut = safe_cut(data, start, start + size)
        if cut <= start:
            cut = safe_cut(data, start, len(data))
            if cut <= start:
                break
        yield data[start:cut]
        start = cut
    yield data[start:]


def iter_texts(corpus):
    """Yield the corpus as str blocks: documents whole, files in blocks cut at safe points."""
    if isinstance(corpus, (str, bytes, bytearray, os.PathLike)):
        corpus = [corpus]
    elif not hasattr(corpus, "__iter__"):
        raise TypeError(
            "corpus must be a str, bytes, an iterable of str/bytes documents or of file paths "
            f"(os.PathLike), got {type(corpus).__name__}"
        )
    for index, item in enumerate(corpus):
        if isinstance(item, str):
            yield replace_lone_surrogates(item)
        elif isinstance(item, (bytes, bytearray)):
            yield bytes(item).decode("utf-8", "surrogateescape")
        elif isinstance(item, os.PathLike):
            yield from iter_file(item)
        else:
            raise TypeError(
                f"corpus item {index} is a {type(item).__name__} ({item!r:.60}); expected str or "
                "bytes documents, or file paths as os.PathLike (pathlib.Path)"
            )


def iter_file(path):
    """Yield a file's text in blocks of about READ_BLOCK bytes, each cut after a safe boundary."""
    pending = b""
    with open(path, "rb") as file:
        while True:
            block = file.read(READ_BLOCK)
            if not block:
                break
            pending += block
            cut = safe_cut(pending)
            if cut > 0:
                yield pending[:cut].decode("utf-8", "surrogateescape")
                pending = pending[cut:]
    if pending:
        yield pending.decode("utf-8", "surrogateescape")


def safe_cut(data, start=0, end=None):
    """Return the last offset in `data[start:end]` that no pre-token crosses, or `start` if none.

    That is a space (0x20) right after a printable ASCII byte other than a space. Under both
    patterns, no pre-token contains a non-space character followed by a space, and none looks
    ahead past one. The cut never splits a UTF-8 sequence because both bytes are ASCII.

    NOTE: a special token that contains a non-space character followed by a space can be cut
    in two when it falls on a block boundary of a file, and is then trained on as text.
    """
    end = len(data) if end is None else end
    position = data.rfind(b" ", start, end)
    while position > start:
        if 0x21 <= data[position - 1] <= 0x7E:
            return position
        position = data.rfind(b" ", start, position)
    return start

"""Reading and writing tiktoken's rank-file format, and the side file fastml adds to it.

A rank file has one line per token, ``<base64 of the token's bytes> <rank>``, and the rank is
the token id. tiktoken reads it with ``tiktoken.load.load_tiktoken_bpe``. The format has no room
for the split pattern or the special tokens, so ``Tokenizer.save`` writes them beside it, in
``<path>.json``:

    {"format": "fastml-bpe", "version": 1, "pattern": "<regex or null>",
     "special_tokens": {"<|endoftext|>": 50256, ...}}
"""

import base64
import binascii
import json
import os
from pathlib import Path

SIDE_FORMAT = "fastml-bpe"
SIDE_VERSION = 1

# The directory of the GPT-2 and cl100k rank files that fetch_bpe_data.py stores, and their names.
DATA_DIR_ENV = "FASTML_BPE_DATA"
RANK_FILES = {"gpt2": "gpt2.tiktoken", "r50k": "gpt2.tiktoken", "cl100k": "cl100k_base.tiktoken"}


def read_ranks(path):
    """Read a rank file; return a dict from token bytes to rank.

    Raises ValueError, with the line number, for a line that is not ``<base64> <int>``, a
    negative or repeated rank, or a repeated token.
    """
    ranks = {}
    seen_ranks = set()
    with open(path, "rb") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            token, rank = parse_line(line, number, path)
            if token in ranks:
                raise ValueError(f"{path}, line {number}: token {token!r} appears twice")
            if rank in seen_ranks:
                raise ValueError(f"{path}, line {number}: rank {rank} appears twice")
            ranks[token] = rank
            seen_ranks.add(rank)
    if not ranks:
        raise ValueError(f"{path} contains no tokens; expected lines of '<base64 token> <rank>'")
    return ranks


def parse_line(line, number, path):
    """Return ``(token, rank)`` from one rank-file line, or raise ValueError naming the line."""
    fields = line.split()
    if len(fields) != 2:
        raise ValueError(
            f"{path}, line {number}: expected '<base64 token> <rank>', got {shown(line.rstrip())}"
        )
    try:
        token = base64.b64decode(fields[0], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{path}, line {number}: invalid base64 {shown(fields[0])}") from None
    try:
        rank = int(fields[1])
    except ValueError:
        raise ValueError(f"{path}, line {number}: invalid rank {shown(fields[1])}") from None
    if rank < 0:
        raise ValueError(f"{path}, line {number}: rank must be >= 0, got {rank}")
    return token, rank


def shown(field):
    """Return a rank-file field (bytes) as a quoted str of at most 80 characters."""
    return repr(field[:80].decode("utf-8", "replace"))


def write_ranks(path, ranks):
    """Write `ranks` (a dict from token bytes to rank) as a rank file, in rank order."""
    with open(path, "wb") as file:
        for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
            file.write(base64.b64encode(token) + b" " + str(rank).encode() + b"\n")


def side_path(path):
    """Return the path of the side file that goes with the rank file at `path`."""
    return Path(os.fspath(path) + ".json")


def write_side(path, pattern, special_tokens):
    """Write the pattern and special tokens of the rank file at `path` to its side file."""
    meta = {
        "format": SIDE_FORMAT,
        "version": SIDE_VERSION,
        "pattern": pattern,
        "special_tokens": dict(special_tokens),
    }
    side_path(path).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", "utf-8")


def read_side(path):
    """Return ``(pattern, special_tokens)`` from the side file of the rank file at `path`."""
    side = side_path(path)
    try:
        meta = json.loads(side.read_text("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{side} not found: Tokenizer.load reads a rank file saved by Tokenizer.save together "
            "with its side file; for a bare tiktoken rank file use Tokenizer.from_tiktoken_file"
        ) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{side} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != SIDE_FORMAT:
        raise ValueError(f"{side} is not a fastml BPE side file (no \"format\": \"{SIDE_FORMAT}\")")
    if meta.get("version") != SIDE_VERSION:
        raise ValueError(f"{side} has version {meta.get('version')!r}; this fastml reads {SIDE_VERSION}")
    return meta.get("pattern"), meta.get("special_tokens", {})


def rank_file_path(name):
    """Return the path of the fetched rank file `name` ("gpt2" or "cl100k").

    Raises FileNotFoundError with the command that fetches it when it is missing.
    """
    if name not in RANK_FILES:
        raise ValueError(f"unknown rank file {name!r}; expected one of {sorted(RANK_FILES)}")
    root = os.environ.get(DATA_DIR_ENV)
    directory = Path(root) if root else Path(__file__).resolve().parents[2] / "data" / "bpe"
    path = directory / RANK_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; fetch it with `python scripts/fetch_bpe_data.py` (or set "
            f"{DATA_DIR_ENV} to the directory that holds {RANK_FILES[name]})"
        )
    return path

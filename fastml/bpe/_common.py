"""Pieces shared by the compiled backends: the pair-rank table that drives fast encoding."""

import numpy as np


def pair_ranks(ranks):
    """Return ``(keys, values)``: every pair of tokens whose concatenation is a token, and its rank.

    A key is ``left_rank << 32 | right_rank``. This is tiktoken's merge rule restated on ids:
    two adjacent tokens merge with the rank of their concatenated bytes. Each pair occurs once,
    because a pair fixes its concatenation and the split point.
    """
    keys = []
    values = []
    for token, rank in ranks.items():
        for split in range(1, len(token)):
            left = ranks.get(token[:split])
            right = ranks.get(token[split:])
            if left is not None and right is not None:
                keys.append((left << 32) | right)
                values.append(rank)
    return np.array(keys, dtype=np.int64), np.array(values, dtype=np.int64)


def byte_ranks(ranks):
    """Return the ranks of the 256 single-byte tokens as an int64 array indexed by byte value."""
    return np.array([ranks[bytes([b])] for b in range(256)], dtype=np.int64)


def pack_pieces(pieces):
    """Concatenate `pieces` (bytes) into ``(data, offsets)``: uint8 bytes and int64 bounds."""
    data = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum([len(piece) for piece in pieces], out=offsets[1:])
    return data, offsets


def split_ids(ids, id_offsets):
    """Split the flat int64 `ids` into one list per piece at `id_offsets`."""
    flat = ids.tolist()
    bounds = id_offsets.tolist()
    return [flat[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]

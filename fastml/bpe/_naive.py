"""Byte-level BPE in plain Python: the whiteboard algorithms, and the oracle for the fast backends.

Training is the classic recount loop: count every adjacent pair over the distinct pre-tokens
(weighted by how often each occurs), merge the best pair everywhere, repeat. With W distinct
pre-tokens of total length L, each merge costs O(L) time, so M merges cost O(M * L). Memory is
O(L + P) for P distinct pairs.

Encoding a pre-token of n bytes repeatedly merges the adjacent pair of lowest rank, the leftmost
one among equal ranks, in O(n^2) time: each of up to n - 1 merges rescans the whole piece.

Tie rules, shared with every backend: training merges the pair of highest count and, among equal
counts, the smallest pair of token ids (compared as tuples). Training stops early when no pair
is left or the best count is below min_frequency.
"""

import numpy as np


def train(words, offsets, counts, n_merges, min_frequency, progress):
    """Learn up to `n_merges` merges; return them as an int64 array of shape (n_done, 2).

    `words` contains the byte values of every distinct pre-token back to back, word i being
    ``words[offsets[i]:offsets[i + 1]]``, and `counts[i]` is how often it occurs. Merge k
    creates token 256 + k. `progress[0]` is set to the number of merges done so far.
    """
    sequences = [
        [int(b) for b in words[offsets[i]:offsets[i + 1]]] for i in range(len(counts))
    ]
    weights = [int(c) for c in counts]
    merges = []

    for k in range(n_merges):
        pair_counts = count_pairs(sequences, weights)
        if not pair_counts:
            break

        # Highest count first, then the smallest pair: min over (-count, pair).
        best = min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))
        if pair_counts[best] < min_frequency:
            break

        new_id = 256 + k
        sequences = [merge_pair(seq, best, new_id) for seq in sequences]
        merges.append(best)
        progress[0] = k + 1

    return np.array(merges, dtype=np.int64).reshape(-1, 2)


def count_pairs(sequences, weights):
    """Return a dict from each adjacent pair to its count, weighted by the sequence's weight."""
    pair_counts = {}
    for seq, weight in zip(sequences, weights):
        for pair in zip(seq, seq[1:]):
            pair_counts[pair] = pair_counts.get(pair, 0) + weight
    return pair_counts


def merge_pair(seq, pair, new_id):
    """Replace each occurrence of `pair` in `seq` with `new_id`, left to right, not overlapping."""
    merged = []
    i = 0
    while i < len(seq):
        if i + 1 < len(seq) and seq[i] == pair[0] and seq[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(seq[i])
            i += 1
    return merged


class Encoder:
    """Encodes pre-tokens with a rank table: a dict from token bytes to rank (the token id)."""

    def __init__(self, ranks):
        self.ranks = ranks

    def encode_pieces(self, pieces):
        """Return the token ids of each pre-token in `pieces` (a list of bytes)."""
        return [encode_piece(piece, self.ranks) for piece in pieces]


def encode_piece(piece, ranks):
    """Return the token ids of one pre-token (bytes) under `ranks`."""
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while len(parts) > 1:

        # The adjacent pair whose concatenation has the lowest rank; the leftmost wins ties
        # because only a strictly lower rank replaces the current best.
        best_rank, best_index = None, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, best_index = rank, i
        if best_index < 0:
            break

        parts[best_index:best_index + 2] = [parts[best_index] + parts[best_index + 1]]
    return [ranks[part] for part in parts]

"""Byte-level BPE in Numba: an incremental trainer and a heap-based encoder.

Training keeps, instead of recounting every pair after each merge (O(L) per merge for L bytes
over the distinct pre-tokens), four structures:

- a pair table: an open-addressing hash from the pair key ``a << 32 | b`` to a slot holding the
  pair's count;
- a postings list per slot: the words that contained the pair when it appeared, so a merge
  visits only those words (stale entries are skipped by rescanning the word);
- a binary max-heap of ``(count, key)`` with lazy invalidation: an entry whose count differs
  from the slot's current count is dropped when it reaches the top;
- in each affected word, the pairs are uncounted, the merge is applied in place, and the pairs
  are counted again. Only slots whose count changed get a new heap entry.

A merge then costs O(sum of the affected words' lengths + changed pairs * log H) for a heap of
H entries, instead of O(L). Memory is O(L) for the words, postings, slots and heap. Ties match
the naive backend: the heap orders by count, then by the smaller key, that is the smaller pair
of token ids.

The initial pair count runs on one thread: it is a single pass over the distinct pre-tokens
and costs little next to the merge loop, which is sequential by nature.

Encoding a pre-token of n bytes keeps its tokens in a doubly linked list and the rank of each
adjacent pair in a binary min-heap keyed by ``rank << 32 | position``, so the lowest rank wins
and, among equal ranks, the leftmost pair. A merge updates two neighbours, so a piece costs
O(n log n) where the classic rescan costs O(n^2) (a character repeated a million times).
Pair ranks come from an open-addressing table built once per rank table: for every token and
every split of it into two tokens, the pair maps to the token's rank, which is exactly
tiktoken's rule (the rank of the concatenated bytes).

ASCII text under the GPT-2 or GPT-4 pattern skips the `regex` package: hand-written scanners
split it, a hash table keyed by byte strings counts its pre-tokens, and encoding looks each
pre-token up whole among the tokens before merging. These are the Cython backend's algorithms.
"""

import numpy as np
from numba import njit

from fastml.bpe._common import byte_ranks, pack_pieces, pair_ranks, split_ids

EMPTY = -1
# Fibonacci hashing: the top bits of key * 2^64 / phi spread consecutive pair keys evenly.
HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


# ---- open-addressing table from a pair key to a slot -------------------------------------------

@njit(cache=True, nogil=True, inline="always")
def _pair_key(a, b):
    return (np.int64(a) << 32) | np.int64(b)


@njit(cache=True, nogil=True, inline="always")
def _probe(table, slot_key, key, bits):
    """Return the table index of `key`, or of the empty cell where it would go."""
    mask = (np.int64(1) << bits) - 1
    index = np.int64((np.uint64(key) * HASH_MULTIPLIER) >> np.uint64(64 - bits))
    while True:
        slot = table[index]
        if slot == EMPTY or slot_key[slot] == key:
            return index
        index = (index + 1) & mask


@njit(cache=True, nogil=True)
def _build_table(slot_key, n_slots, bits):
    """Return a table of 2**bits cells that maps each of the first `n_slots` keys to its slot."""
    table = np.full(np.int64(1) << bits, EMPTY, dtype=np.int64)
    for slot in range(n_slots):
        table[_probe(table, slot_key, slot_key[slot], bits)] = slot
    return table


@njit(cache=True, nogil=True)
def _table_bits(n_slots):
    """Return log2 of a table size that keeps the load factor at or below one half."""
    bits = 4
    while (np.int64(1) << bits) < 2 * n_slots:
        bits += 1
    return bits


@njit(cache=True, nogil=True)
def _grown(array, needed):
    """Return `array` itself if it has room for `needed` items, else a copy at least twice as big."""
    if needed <= array.size:
        return array
    bigger = np.empty(max(needed, 2 * array.size), dtype=array.dtype)
    bigger[:array.size] = array
    return bigger


# ---- binary max-heap of (count, key): higher count first, then smaller key ---------------------

@njit(cache=True, nogil=True, inline="always")
def _before(count_a, key_a, count_b, key_b):
    return count_a > count_b or (count_a == count_b and key_a < key_b)


@njit(cache=True, nogil=True)
def _heap_push(heap_count, heap_key, size, count, key):
    """Insert ``(count, key)`` into a heap of `size` entries (room assumed); return the new size."""
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if not _before(count, key, heap_count[parent], heap_key[parent]):
            break
        heap_count[i] = heap_count[parent]
        heap_key[i] = heap_key[parent]
        i = parent
    heap_count[i] = count
    heap_key[i] = key
    return size + 1


@njit(cache=True, nogil=True)
def _heap_pop(heap_count, heap_key, size):
    """Remove the top of a non-empty heap; return ``(count, key, new size)``."""
    top_count, top_key = heap_count[0], heap_key[0]
    size -= 1
    count, key = heap_count[size], heap_key[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and _before(
            heap_count[child + 1], heap_key[child + 1], heap_count[child], heap_key[child]
        ):
            child += 1
        if not _before(heap_count[child], heap_key[child], count, key):
            break
        heap_count[i] = heap_count[child]
        heap_key[i] = heap_key[child]
        i = child
    heap_count[i] = count
    heap_key[i] = key
    return top_count, top_key, size


# ---- training -----------------------------------------------------------------------------------

def train(words, offsets, counts, n_merges, min_frequency, progress):
    """Learn up to `n_merges` merges; return them as an int64 array of shape (n_done, 2).

    Same arguments and result as the naive backend's ``train``; `progress[0]` counts merges.
    """
    return _train(words, offsets, counts, n_merges, min_frequency, progress)


@njit(cache=True, nogil=True)
def _train(words, offsets, counts, n_merges, min_frequency, progress):
    tokens = words.copy()
    n_words = counts.size
    lengths = offsets[1:] - offsets[:-1]
    capacity = max(16, tokens.size)

    # Slots: one per distinct pair ever seen; the table maps a pair key to its slot.
    slot_key = np.empty(capacity, dtype=np.int64)
    slot_count = np.zeros(capacity, dtype=np.int64)
    slot_head = np.full(capacity, EMPTY, dtype=np.int64)
    slot_stamp = np.full(capacity, EMPTY, dtype=np.int64)
    n_slots = 0
    bits = _table_bits(capacity)
    table = np.full(np.int64(1) << bits, EMPTY, dtype=np.int64)

    # Postings: singly linked lists of words, one list per slot, newest first.
    post_word = np.empty(capacity, dtype=np.int64)
    post_next = np.empty(capacity, dtype=np.int64)
    n_posts = 0

    # Initial counts, with one posting per (pair, word).
    for w in range(n_words):
        start = offsets[w]
        for i in range(start, start + lengths[w] - 1):
            key = _pair_key(tokens[i], tokens[i + 1])
            cell = _probe(table, slot_key, key, bits)
            slot = table[cell]
            if slot == EMPTY:
                slot = n_slots
                n_slots += 1
                slot_key[slot] = key
                table[cell] = slot
            slot_count[slot] += counts[w]
            if slot_head[slot] == EMPTY or post_word[slot_head[slot]] != w:
                post_word[n_posts] = w
                post_next[n_posts] = slot_head[slot]
                slot_head[slot] = n_posts
                n_posts += 1

    heap_count = np.empty(max(16, 2 * n_slots), dtype=np.int64)
    heap_key = np.empty(heap_count.size, dtype=np.int64)
    heap_size = 0
    for slot in range(n_slots):
        heap_size = _heap_push(heap_count, heap_key, heap_size, slot_count[slot], slot_key[slot])

    merges = np.empty((n_merges, 2), dtype=np.int64)
    word_stamp = np.full(n_words, EMPTY, dtype=np.int64)
    touched = np.empty(16, dtype=np.int64)
    touched_old = np.empty(16, dtype=np.int64)
    n_done = 0

    while n_done < n_merges:

        # The best pair: pop entries until one still carries its slot's current count.
        best_slot = EMPTY
        best_count = 0
        while heap_size > 0:
            best_count, best_key, heap_size = _heap_pop(heap_count, heap_key, heap_size)
            slot = table[_probe(table, slot_key, best_key, bits)]
            if slot_count[slot] == best_count:
                best_slot = slot
                break
        if best_slot == EMPTY or best_count < min_frequency:
            break

        a = slot_key[best_slot] >> 32
        b = slot_key[best_slot] & 0xFFFFFFFF
        new_id = 256 + n_done
        merges[n_done, 0] = a
        merges[n_done, 1] = b
        stamp = n_done
        n_touched = 0

        # Visit each word of the pair's postings once.
        post = slot_head[best_slot]
        while post != EMPTY:
            w = post_word[post]
            post = post_next[post]
            if word_stamp[w] == stamp:
                continue
            word_stamp[w] = stamp
            start = offsets[w]
            length = lengths[w]
            if not _contains(tokens, start, length, a, b):
                continue

            # Room for every pair of this word as a new slot, posting and touched slot.
            needed = n_slots + length
            if needed > slot_key.size:
                old = slot_key.size
                slot_key = _grown(slot_key, needed)
                slot_count = _grown(slot_count, needed)
                slot_count[old:] = 0
                slot_head = _grown(slot_head, needed)
                slot_head[old:] = EMPTY
                slot_stamp = _grown(slot_stamp, needed)
                slot_stamp[old:] = EMPTY
            if 2 * needed > table.size:
                bits = _table_bits(needed)
                table = _build_table(slot_key, n_slots, bits)
            # Checked here rather than in _grown: each call passes arrays by reference count.
            if n_posts + length > post_word.size:
                post_word = _grown(post_word, n_posts + length)
                post_next = _grown(post_next, n_posts + length)
            if n_touched + 2 * length > touched.size:
                touched = _grown(touched, n_touched + 2 * length)
                touched_old = _grown(touched_old, n_touched + 2 * length)

            weight = counts[w]

            # Uncount the word's pairs, merge in place, count the new pairs.
            for i in range(start, start + length - 1):
                slot = table[_probe(table, slot_key, _pair_key(tokens[i], tokens[i + 1]), bits)]
                if slot_stamp[slot] != stamp:
                    slot_stamp[slot] = stamp
                    touched[n_touched] = slot
                    touched_old[n_touched] = slot_count[slot]
                    n_touched += 1
                slot_count[slot] -= weight

            length = _merge_in_place(tokens, start, length, a, b, new_id)
            lengths[w] = length

            for i in range(start, start + length - 1):
                key = _pair_key(tokens[i], tokens[i + 1])
                cell = _probe(table, slot_key, key, bits)
                slot = table[cell]
                if slot == EMPTY:
                    slot = n_slots
                    n_slots += 1
                    slot_key[slot] = key
                    table[cell] = slot
                if slot_stamp[slot] != stamp:
                    slot_stamp[slot] = stamp
                    touched[n_touched] = slot
                    touched_old[n_touched] = slot_count[slot]
                    n_touched += 1
                slot_count[slot] += weight

                # Only pairs with the new token are new to this word and need a posting.
                if tokens[i] == new_id or tokens[i + 1] == new_id:
                    if slot_head[slot] == EMPTY or post_word[slot_head[slot]] != w:
                        post_word[n_posts] = w
                        post_next[n_posts] = slot_head[slot]
                        slot_head[slot] = n_posts
                        n_posts += 1

        # New heap entries for the pairs whose count changed.
        if heap_size + n_touched > heap_count.size:
            heap_count = _grown(heap_count, heap_size + n_touched)
            heap_key = _grown(heap_key, heap_size + n_touched)
        for t in range(n_touched):
            slot = touched[t]
            if slot_count[slot] != touched_old[t] and slot_count[slot] > 0:
                heap_size = _heap_push(
                    heap_count, heap_key, heap_size, slot_count[slot], slot_key[slot]
                )

        n_done += 1
        progress[0] = n_done

    return merges[:n_done].copy()


@njit(cache=True, nogil=True)
def _contains(tokens, start, length, a, b):
    for i in range(start, start + length - 1):
        if tokens[i] == a and tokens[i + 1] == b:
            return True
    return False


@njit(cache=True, nogil=True)
def _merge_in_place(tokens, start, length, a, b, new_id):
    """Replace each (a, b) in the word, left to right, not overlapping; return the new length."""
    end = start + length
    read = start
    write = start
    while read < end:
        if read + 1 < end and tokens[read] == a and tokens[read + 1] == b:
            tokens[write] = new_id
            read += 2
        else:
            tokens[write] = tokens[read]
            read += 1
        write += 1
    return write - start


# ---- encoding -----------------------------------------------------------------------------------

class Encoder:
    """Encodes pre-tokens with a rank table (a dict from token bytes to rank)."""

    def __init__(self, ranks):
        self.byte_rank = byte_ranks(ranks)
        self.pair_key, self.pair_rank = pair_ranks(ranks)
        self.bits = _table_bits(max(1, self.pair_key.size))
        self.table = _build_table(self.pair_key, self.pair_key.size, self.bits)

        # Whole-token lookup for encode_ascii: every token's bytes, back to back, hashed.
        self.token_buffer = np.frombuffer(b"".join(ranks), dtype=np.uint8)
        self.token_length = np.fromiter(map(len, ranks), dtype=np.int64, count=len(ranks))
        self.token_start = np.concatenate(([0], np.cumsum(self.token_length)[:-1])).astype(np.int64)
        self.token_rank = np.fromiter(ranks.values(), dtype=np.int64, count=len(ranks))
        self.token_bits = _table_bits(len(ranks))
        self.token_cells = _fill_cells(
            self.token_bits, self.token_buffer, self.token_start, self.token_length, len(ranks)
        )

    def encode_pieces(self, pieces):
        """Return the token ids of each pre-token in `pieces` (a list of bytes)."""
        if not pieces:
            return []
        data, offsets = pack_pieces(pieces)
        ids, id_offsets = _encode(
            self.table, self.pair_key, self.pair_rank, self.bits, self.byte_rank, data, offsets
        )
        return split_ids(ids, id_offsets)

    def encode_ascii(self, data, gpt4):
        """Pre-tokenize ASCII `data` (bytes) with GPT-4's (or GPT-2's) pattern and encode it.

        Returns the ids as an int64 array. A pre-token that is a token is found in the bytes
        table at once; the others go through the heap merge.
        """
        return _encode_ascii(
            np.frombuffer(data, dtype=np.uint8), gpt4, CLASSES, self.token_buffer,
            self.token_start, self.token_length, self.token_rank, self.token_cells,
            self.token_bits, self.table, self.pair_key, self.pair_rank, self.bits, self.byte_rank,
        )


@njit(cache=True, nogil=True)
def _encode(table, pair_key, pair_rank, bits, byte_rank, data, offsets):
    n_pieces = offsets.size - 1
    max_length = 1
    for p in range(n_pieces):
        max_length = max(max_length, offsets[p + 1] - offsets[p])

    # Work arrays sized once for the longest piece; a heap contains at most 3n entries per piece.
    token = np.empty(max_length, dtype=np.int64)
    next_ = np.empty(max_length, dtype=np.int64)
    prev = np.empty(max_length, dtype=np.int64)
    pair_at = np.empty(max_length, dtype=np.int64)
    heap = np.empty(3 * max_length, dtype=np.int64)

    ids = np.empty(data.size, dtype=np.int64)
    id_offsets = np.zeros(n_pieces + 1, dtype=np.int64)
    n_ids = 0
    for p in range(n_pieces):
        id_offsets[p + 1] = n_ids
        if offsets[p + 1] == offsets[p]:
            continue
        _merge_piece(
            data[offsets[p]:offsets[p + 1]], table, pair_key, pair_rank, bits, byte_rank,
            token, next_, prev, pair_at, heap,
        )
        i = 0
        while i != EMPTY:
            ids[n_ids] = token[i]
            n_ids += 1
            i = next_[i]
        id_offsets[p + 1] = n_ids
    return ids[:n_ids], id_offsets


@njit(cache=True, nogil=True)
def _lookup_rank(table, pair_key, pair_rank, bits, a, b):
    slot = table[_probe(table, pair_key, _pair_key(a, b), bits)]
    return EMPTY if slot == EMPTY else pair_rank[slot]


@njit(cache=True, nogil=True)
def _merge_piece(piece, table, pair_key, pair_rank, bits, byte_rank, token, next_, prev, pair_at, heap):
    """Merge one piece into tokens; the result is the list starting at node 0 (via `next_`)."""
    n = piece.size
    for i in range(n):
        token[i] = byte_rank[piece[i]]
        next_[i] = i + 1 if i + 1 < n else EMPTY
        prev[i] = i - 1

    # Node i stands for the pair (i, next_[i]); pair_at[i] is its current rank or EMPTY.
    size = 0
    for i in range(n - 1):
        pair_at[i] = _lookup_rank(table, pair_key, pair_rank, bits, token[i], token[i + 1])
        if pair_at[i] != EMPTY:
            size = _min_heap_push(heap, size, (pair_at[i] << 32) | i)
    pair_at[n - 1] = EMPTY

    while size > 0:
        entry, size = _min_heap_pop(heap, size)
        rank = entry >> 32
        i = entry & 0xFFFFFFFF
        if pair_at[i] != rank:
            continue

        # Merge node i with its successor j; the merged token's id is the pair's rank.
        j = next_[i]
        token[i] = rank
        next_[i] = next_[j]
        if next_[j] != EMPTY:
            prev[next_[j]] = i
        pair_at[j] = EMPTY

        pair_at[i] = EMPTY
        if next_[i] != EMPTY:
            pair_at[i] = _lookup_rank(table, pair_key, pair_rank, bits, token[i], token[next_[i]])
            if pair_at[i] != EMPTY:
                size = _min_heap_push(heap, size, (pair_at[i] << 32) | i)
        left = prev[i]
        if left != EMPTY:
            pair_at[left] = _lookup_rank(table, pair_key, pair_rank, bits, token[left], token[i])
            if pair_at[left] != EMPTY:
                size = _min_heap_push(heap, size, (pair_at[left] << 32) | left)


@njit(cache=True, nogil=True)
def _min_heap_push(heap, size, value):
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if heap[parent] <= value:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = value
    return size + 1


@njit(cache=True, nogil=True)
def _min_heap_pop(heap, size):
    top = heap[0]
    size -= 1
    value = heap[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= value:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = value
    return top, size


# ---- pre-tokenization of ASCII text with the GPT-2 and GPT-4 patterns --------------------------
#
# As in the Cython backend: the `regex` package spends most of the time of training and
# encoding, so ASCII text is split by scanners that follow the alternatives of GPT2_PATTERN and
# GPT4_PATTERN in order. The character classes come from the regex package at import time.

OTHER, LETTER, DIGIT, SPACE = 0, 1, 2, 3


def _character_classes():
    import regex

    classes = np.empty(128, dtype=np.uint8)
    for code in range(128):
        char = chr(code)
        if regex.match(r"\p{L}", char):
            classes[code] = LETTER
        elif regex.match(r"\p{N}", char):
            classes[code] = DIGIT
        elif regex.match(r"\s", char):
            classes[code] = SPACE
        else:
            classes[code] = OTHER
    return classes


CLASSES = _character_classes()


@njit(cache=True, nogil=True, inline="always")
def _run_end(s, i, n, cls, classes):
    while i < n and classes[s[i]] == cls:
        i += 1
    return i


@njit(cache=True, nogil=True, inline="always")
def _is_newline(c):
    return c == 10 or c == 13


@njit(cache=True, nogil=True, inline="always")
def _lower(c, ignore_case):
    return c + 32 if ignore_case and 65 <= c <= 90 else c


@njit(cache=True, nogil=True)
def _contraction_end(s, i, n, ignore_case):
    """End of 's, 'd, 'm, 't, 'll, 've or 're at i (s[i] is the apostrophe), or 0."""
    if i + 1 >= n:
        return 0
    a = _lower(s[i + 1], ignore_case)
    if a == 115 or a == 100 or a == 109 or a == 116:  # s d m t
        return i + 2
    if i + 2 >= n:
        return 0
    b = _lower(s[i + 2], ignore_case)
    if (a == 108 and b == 108) or (a == 118 and b == 101) or (a == 114 and b == 101):  # ll ve re
        return i + 3
    return 0


@njit(cache=True, nogil=True)
def _whitespace_end(s, i, n, gpt4, classes):
    """End of the piece at whitespace s[i]: \\s++$, (GPT-4) \\s*[\\r\\n], \\s+(?!\\S), \\s."""
    j = _run_end(s, i, n, SPACE, classes)
    if j == n:
        return n
    if gpt4:
        p = j - 1
        while p >= i and not _is_newline(s[p]):
            p -= 1
        if p >= i:
            return p + 1
    if j - 1 > i:
        return j - 1
    return i + 1


@njit(cache=True, nogil=True)
def _piece_end_gpt4(s, i, n, classes):
    c = s[i]
    cls = classes[c]
    if c == 39:  # apostrophe
        j = _contraction_end(s, i, n, True)
        if j:
            return j
    # [^\r\n\p{L}\p{N}]?+\p{L}++
    if cls == LETTER:
        return _run_end(s, i, n, LETTER, classes)
    if cls != DIGIT and not _is_newline(c) and i + 1 < n and classes[s[i + 1]] == LETTER:
        return _run_end(s, i + 1, n, LETTER, classes)
    # \p{N}{1,3}+
    if cls == DIGIT:
        j = i + 1
        while j < n and j < i + 3 and classes[s[j]] == DIGIT:
            j += 1
        return j
    # ' ?[^\s\p{L}\p{N}]++[\r\n]*+'
    if c == 32 and i + 1 < n and classes[s[i + 1]] == OTHER:
        j = _run_end(s, i + 1, n, OTHER, classes)
    elif cls == OTHER:
        j = _run_end(s, i, n, OTHER, classes)
    else:
        return _whitespace_end(s, i, n, True, classes)
    while j < n and _is_newline(s[j]):
        j += 1
    return j


@njit(cache=True, nogil=True)
def _piece_end_gpt2(s, i, n, classes):
    c = s[i]
    cls = classes[c]
    if c == 39:  # apostrophe
        j = _contraction_end(s, i, n, False)
        if j:
            return j
    # ' ?\p{L}++', ' ?\p{N}++', ' ?[^\s\p{L}\p{N}]++'
    if c == 32 and i + 1 < n and classes[s[i + 1]] != SPACE:
        return _run_end(s, i + 1, n, classes[s[i + 1]], classes)
    if cls != SPACE:
        return _run_end(s, i, n, cls, classes)
    return _whitespace_end(s, i, n, False, classes)


@njit(cache=True, nogil=True)
def _piece_end(s, i, n, gpt4, classes):
    if gpt4:
        return _piece_end_gpt4(s, i, n, classes)
    return _piece_end_gpt2(s, i, n, classes)


def split_ascii(data, gpt4):
    """Return the pre-token boundaries of ASCII `data` (bytes) as an int64 array (for tests)."""
    return _split_ascii(np.frombuffer(data, dtype=np.uint8), gpt4, CLASSES)


@njit(cache=True, nogil=True)
def _split_ascii(s, gpt4, classes):
    n = s.size
    bounds = np.zeros(n + 1, dtype=np.int64)
    count = 0
    i = 0
    while i < n:
        i = _piece_end(s, i, n, gpt4, classes)
        count += 1
        bounds[count] = i
    return bounds[:count + 1].copy()


# ---- a hash table keyed by byte strings (slices of one buffer) ---------------------------------

@njit(cache=True, nogil=True)
def _hash_bytes(s, start, n):
    # FNV-1a, then a multiply so that the top bits (the cell index) mix well.
    h = np.uint64(0xCBF29CE484222325)
    for k in range(start, start + n):
        h = (h ^ np.uint64(s[k])) * np.uint64(0x100000001B3)
    return h * HASH_MULTIPLIER


@njit(cache=True, nogil=True)
def _find_bytes(cells, bits, buffer, starts, lengths, key, key_start, n):
    """Return the cell of key[key_start:key_start + n], or of the empty cell where it would go."""
    mask = (np.int64(1) << bits) - 1
    index = np.int64(_hash_bytes(key, key_start, n) >> np.uint64(64 - bits))
    while True:
        entry = cells[index]
        if entry == EMPTY:
            return index
        if lengths[entry] == n:
            base = starts[entry]
            k = 0
            while k < n and buffer[base + k] == key[key_start + k]:
                k += 1
            if k == n:
                return index
        index = (index + 1) & mask


@njit(cache=True, nogil=True)
def _fill_cells(bits, buffer, starts, lengths, size):
    cells = np.full(np.int64(1) << bits, EMPTY, dtype=np.int64)
    for entry in range(size):
        cells[_find_bytes(cells, bits, buffer, starts, lengths, buffer, starts[entry], lengths[entry])] = entry
    return cells


def count_ascii_pretokens(data, gpt4):
    """Count the pre-tokens of ASCII `data` (bytes) under GPT-4's (or GPT-2's) pattern.

    Returns a dict from pre-token bytes to count, the same as counting the regex's matches.
    """
    starts, lengths, counts = _count_ascii(np.frombuffer(data, dtype=np.uint8), gpt4, CLASSES)
    return {
        data[start:start + length]: count
        for start, length, count in zip(starts.tolist(), lengths.tolist(), counts.tolist())
    }


@njit(cache=True, nogil=True)
def _count_ascii(s, gpt4, classes):
    n = s.size
    capacity = 1024
    starts = np.empty(capacity, dtype=np.int64)
    lengths = np.empty(capacity, dtype=np.int64)
    counts = np.zeros(capacity, dtype=np.int64)
    size = 0
    bits = _table_bits(capacity)
    cells = np.full(np.int64(1) << bits, EMPTY, dtype=np.int64)

    i = 0
    while i < n:
        end = _piece_end(s, i, n, gpt4, classes)
        if 2 * (size + 1) > cells.size:
            bits += 1
            cells = _fill_cells(bits, s, starts, lengths, size)
        cell = _find_bytes(cells, bits, s, starts, lengths, s, i, end - i)
        entry = cells[cell]
        if entry == EMPTY:
            if size == starts.size:
                starts = _grown(starts, size + 1)
                lengths = _grown(lengths, size + 1)
                old = counts.size
                counts = _grown(counts, size + 1)
                counts[old:] = 0
            entry = size
            size += 1
            starts[entry] = i
            lengths[entry] = end - i
            cells[cell] = entry
        counts[entry] += 1
        i = end
    return starts[:size].copy(), lengths[:size].copy(), counts[:size].copy()


@njit(cache=True, nogil=True)
def _encode_ascii(s, gpt4, classes, token_buffer, token_start, token_length, token_rank,
                  token_cells, token_bits, table, pair_key, pair_rank, bits, byte_rank):
    n = s.size

    # The work arrays are sized by the longest piece, which a first pass finds.
    max_length = 1
    i = 0
    while i < n:
        end = _piece_end(s, i, n, gpt4, classes)
        max_length = max(max_length, end - i)
        i = end
    token = np.empty(max_length, dtype=np.int64)
    next_ = np.empty(max_length, dtype=np.int64)
    prev = np.empty(max_length, dtype=np.int64)
    pair_at = np.empty(max_length, dtype=np.int64)
    heap = np.empty(3 * max_length, dtype=np.int64)

    ids = np.empty(n, dtype=np.int64)
    n_ids = 0
    i = 0
    while i < n:
        end = _piece_end(s, i, n, gpt4, classes)
        cell = _find_bytes(token_cells, token_bits, token_buffer, token_start, token_length,
                           s, i, end - i)
        entry = token_cells[cell]
        if entry != EMPTY:
            ids[n_ids] = token_rank[entry]
            n_ids += 1
        else:
            _merge_piece(s[i:end], table, pair_key, pair_rank, bits, byte_rank,
                         token, next_, prev, pair_at, heap)
            node = 0
            while node != EMPTY:
                ids[n_ids] = token[node]
                n_ids += 1
                node = next_[node]
        i = end
    return ids[:n_ids].copy()

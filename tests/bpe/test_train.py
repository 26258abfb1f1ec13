from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastml.bpe import _pretokenize, train
from fastml.bpe._naive import count_pairs, merge_pair
from fastml.bpe._pretokenize import count_pretokens, resolve_pattern

from .conftest import BACKENDS, FAST_BACKENDS


def test_train_small_case_by_hand(backend):
    # "aaabdaaabac": (a, a) occurs 4 times. Then (aa, a) and (a, b) both occur twice, and the
    # smaller pair of ids, (97, 98), wins the tie. Then (aa, ab) occurs twice.
    tokenizer = train("aaabdaaabac", 259, pattern=None, min_frequency=1, backend=backend,
                      progress=False)
    assert tokenizer.merges == [(97, 97), (97, 98), (256, 257)]
    assert tokenizer.ranks[b"aaab"] == 258
    assert tokenizer.encode("aaabdaaabac") == [258, 100, 258, 97, 99]


def test_train_overlapping_pair_merges_left_to_right(backend):
    # "aaaaa" contains (a, a) at four positions but only two merge, left to right, leaving
    # [aa, aa, a]. Then (aa, aa) and (aa, a) tie at 1 and the smaller pair wins.
    tokenizer = train(["aaaaa"], 258, pattern=None, min_frequency=1, backend=backend,
                      progress=False)
    assert tokenizer.merges == [(97, 97), (256, 97)]
    assert tokenizer.encode("aaaaa") == [256, 257]


def test_train_stops_when_no_pair_left(backend):
    tokenizer = train("ab", 1000, pattern=None, min_frequency=1, backend=backend, progress=False)
    assert tokenizer.merges == [(97, 98)]
    assert tokenizer.n_vocab == 257


def test_train_min_frequency_stops_early(backend):
    tokenizer = train("ab ab cd", 1000, pattern="gpt2", min_frequency=2, backend=backend,
                      progress=False)
    # " ab" occurs once and "ab" once, so only (97, 98) reaches 2.
    assert tokenizer.merges == [(97, 98)]


def test_train_empty_corpus_gives_bytes_only(backend):
    tokenizer = train([], 300, backend=backend, progress=False)
    assert tokenizer.merges == []
    assert tokenizer.n_vocab == 256


def test_train_special_tokens_not_trained(backend):
    corpus = "<|eot|>hello<|eot|>hello<|eot|>"
    tokenizer = train(corpus, 300, special_tokens=["<|eot|>"], min_frequency=1,
                      backend=backend, progress=False)
    assert all(b"<" not in token and b"|" not in token for token in tokenizer.ranks
               if len(token) > 1)
    assert tokenizer.special_tokens == {"<|eot|>": 256 + len(tokenizer.merges)}
    ids = tokenizer.encode(corpus, allowed_special="all")
    assert ids.count(tokenizer.special_tokens["<|eot|>"]) == 3
    assert tokenizer.decode(ids) == corpus


def test_train_keeps_invalid_utf8_bytes(backend):
    corpus = [b"\xff\xfe\xff\xfe abc", b"\xff\xfe\xff\xfe"]
    tokenizer = train(corpus, 258, pattern="gpt2", min_frequency=1, backend=backend,
                      progress=False)
    assert tokenizer.merges[0] == (0xFF, 0xFE)
    assert tokenizer.ranks[b"\xff\xfe\xff\xfe"] == 257


def test_train_file_stream_equals_text(tmp_path, monkeypatch, kjv_slice, fast_backend):
    path = tmp_path / "kjv.txt"
    path.write_text(kjv_slice, encoding="utf-8")
    # Small blocks so the file is cut many times.
    monkeypatch.setattr(_pretokenize, "READ_BLOCK", 4096)
    from_file = train([path], 1000, backend=fast_backend, progress=False)
    from_text = train(kjv_slice, 1000, backend=fast_backend, progress=False)
    assert from_file.merges == from_text.merges


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_safe_cut_keeps_pretokens(pattern, kjv_slice):
    text = kjv_slice + "  trailing  \n\n x!\n  y"
    whole = count_pretokens(text, resolve_pattern(pattern), [])
    data = text.encode()
    cut = _pretokenize.safe_cut(data[: len(data) // 2])
    parts = [data[:cut], data[cut:]]
    assert 0 < cut
    assert count_pretokens(parts, resolve_pattern(pattern), []) == whole


# ---- fast == naive ----------------------------------------------------------------------------

def assert_backends_agree(corpus, vocab_size, pattern, min_frequency):
    merges = {
        backend: train(corpus, vocab_size, pattern=pattern, min_frequency=min_frequency,
                       backend=backend, progress=False).merges
        for backend in BACKENDS
    }
    for backend in FAST_BACKENDS:
        assert merges[backend] == merges["naive"], backend


repetitive_text = st.lists(st.sampled_from(["a", "b", "ab", " ", "\n", "aa", "ba "]),
                           max_size=120).map("".join)
unicode_text = st.text(max_size=300)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    corpus=st.one_of(repetitive_text, unicode_text, st.lists(unicode_text, max_size=5)),
    vocab_size=st.integers(256, 420),
    pattern=st.sampled_from(["gpt2", "gpt4", None]),
    min_frequency=st.integers(1, 3),
)
def test_fast_merges_equal_naive_random(corpus, vocab_size, pattern, min_frequency):
    assert_backends_agree(corpus, vocab_size, pattern, min_frequency)


def test_fast_merges_equal_naive_kjv(kjv_slice):
    assert_backends_agree(kjv_slice, 256 + 300, "gpt4", 2)


def test_fast_merges_equal_naive_mixed_text(kjv_slice):
    # Non-ASCII words every few hundred bytes: the compiled backends count the ASCII stretches
    # with their scanners and the rest with the regex, the naive backend all with the regex.
    corpus = [kjv_slice[:100_000].replace("LORD", "Łörd").replace("God", "Gott 神"),
              kjv_slice[100_000:120_000].encode() + b"\xff\xfe broken \xc3"]
    assert_backends_agree(corpus, 256 + 200, "gpt2", 2)
    assert_backends_agree(corpus, 256 + 200, "gpt4", 2)


def test_fast_merges_equal_each_other_kjv(kjv):
    if len(FAST_BACKENDS) < 2:
        pytest.skip(f"only {FAST_BACKENDS} available")
    results = [train(kjv, 8192, backend=b, progress=False).merges for b in FAST_BACKENDS]
    assert len(results[0]) > 7000
    assert all(result == results[0] for result in results)


# ---- reference: Hugging Face tokenizers ---------------------------------------------------------

def gpt2_byte_alphabet():
    """GPT-2's byte -> printable character table, rebuilt from its definition."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def untied_prefix_length(corpus, n_merges):
    """Return how many of the first merges have a best count that no other pair shares."""
    counts = count_pretokens(corpus, resolve_pattern("gpt2"), [])
    sequences = [list(word) for word in counts]
    weights = list(counts.values())
    for k in range(n_merges):
        pair_counts = count_pairs(sequences, weights)
        ordered = sorted(pair_counts.values(), reverse=True)
        if len(ordered) > 1 and ordered[0] == ordered[1]:
            return k
        best = max(pair_counts, key=pair_counts.get)
        sequences = [merge_pair(seq, best, 256 + k) for seq in sequences]
    return n_merges


def test_early_merges_equal_hf_tokenizers(kjv_slice):
    tokenizers = pytest.importorskip("tokenizers")
    corpus = kjv_slice[:50_000]
    n_merges = 200

    hf = tokenizers.Tokenizer(tokenizers.models.BPE())
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=256 + n_merges, min_frequency=2, show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    hf.train_from_iterator([corpus], trainer)
    import json
    hf_merges = json.loads(hf.to_str())["model"]["merges"]
    char_to_byte = {c: b for b, c in gpt2_byte_alphabet().items()}

    def to_bytes(piece):
        return bytes(char_to_byte[c] for c in piece)

    ours = train(corpus, 256 + n_merges, pattern="gpt2", backend="auto", progress=False)
    tokens = {rank: token for token, rank in ours.ranks.items()}
    ours_as_bytes = [(tokens[a], tokens[b]) for a, b in ours.merges]
    hf_as_bytes = [tuple(map(to_bytes, m if isinstance(m, list) else m.split(" ")))
                   for m in hf_merges]

    agree = untied_prefix_length(corpus, n_merges)
    assert agree >= 20, "too few untied merges to compare"
    assert ours_as_bytes[:agree] == hf_as_bytes[:agree]


def test_progress_bar_counts_every_merge(monkeypatch, kjv_slice, backend):
    tqdm = pytest.importorskip("tqdm")
    import io

    from fastml.bpe import _api

    bars = []

    def make_bar(n_merges, progress):
        bars.append(tqdm.tqdm(total=n_merges, file=io.StringIO(), disable=False))
        return bars[-1]

    monkeypatch.setattr(_api, "make_progress_bar", make_bar)
    tokenizer = train(kjv_slice[:20_000], 400, backend=backend)
    assert bars[0].n == len(tokenizer.merges) == 144


def test_progress_off_without_terminal(capsys, backend):
    train("abc abc abd", 260, backend=backend, progress=True)
    assert capsys.readouterr().err == ""


def test_parallel_counting_equals_serial(monkeypatch, kjv_slice, fast_backend):
    from fastml import num_threads

    with num_threads(1):
        serial = train(kjv_slice, 800, backend=fast_backend, progress=False)
    # Small blocks, so the 200 kB slice is counted in about fifty blocks on two threads.
    monkeypatch.setattr(_pretokenize, "READ_BLOCK", 4096)
    monkeypatch.setattr(_pretokenize, "PARALLEL_MIN_BYTES", 8192)
    with num_threads(2):
        parallel = train(kjv_slice, 800, backend=fast_backend, progress=False)
    assert parallel.merges == serial.merges


def test_ascii_blocks_cover_data(kjv_slice):
    data = kjv_slice.encode()
    blocks = list(_pretokenize.ascii_blocks(data, 1000))
    assert b"".join(blocks) == data
    assert len(blocks) > 150
    assert all(block.startswith(b" ") for block in blocks[1:])


def test_vocabulary_equals_rustbpe(kjv, fast_backend):
    # rustbpe 0.1 (GPT-4 pattern, merges while any pair is left) breaks ties the same way, so
    # the whole vocabulary agrees, rank for rank.
    rustbpe = pytest.importorskip("rustbpe")
    reference = rustbpe.Tokenizer()
    reference.train_from_iterator(iter([kjv]), 8192)
    ranks = {bytes(token): rank for token, rank in reference.get_mergeable_ranks()}
    ours = train(kjv, 8192, min_frequency=1, backend=fast_backend, progress=False)
    assert len(ours.ranks) == 8192
    assert ours.ranks == ranks

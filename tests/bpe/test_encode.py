import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastml.bpe import Tokenizer, train

from .conftest import FAST_BACKENDS, fastml_tokenizer, tiktoken_encoding

RANK_FILES = ("gpt2", "cl100k")


# ---- hand-computed and pathological cases ------------------------------------------------------

def test_encode_lowest_rank_first_leftmost_on_ties(backend):
    ranks = {bytes([b]): b for b in range(256)}
    ranks[b"bc"] = 256
    ranks[b"ab"] = 257
    ranks[b"aa"] = 258
    tokenizer = Tokenizer(ranks, pattern=None, backend=backend)
    # "abc": (b, c) has the lower rank although (a, b) comes first.
    assert tokenizer.encode("abc") == [97, 256]
    # "aaa": both (a, a) pairs have rank 258 and the leftmost merges.
    assert tokenizer.encode("aaa") == [258, 97]


def test_encode_empty_text(backend):
    tokenizer = train("hello hello", 300, backend=backend, progress=False)
    assert tokenizer.encode("") == []
    assert tokenizer.decode([]) == ""


@pytest.mark.parametrize("name", RANK_FILES)
def test_encode_hello_world(name, backend):
    expected = {"gpt2": [15496, 11, 995, 0], "cl100k": [9906, 11, 1917, 0]}[name]
    assert fastml_tokenizer(name, backend).encode("Hello, world!") == expected


@pytest.mark.parametrize("name", RANK_FILES)
def test_encode_repeated_character_equals_tiktoken(name, fast_backend):
    # One 20,000-byte pre-token: the heap merge keeps it near-linear.
    text = "a" * 20_000
    ids = fastml_tokenizer(name, fast_backend).encode(text)
    assert ids == tiktoken_encoding(name).encode(text)


def test_encode_lone_surrogate_replaced(backend):
    tokenizer = fastml_tokenizer("cl100k", backend)
    text = "a\ud800b"
    assert tokenizer.encode(text) == tiktoken_encoding("cl100k").encode(text)
    assert tokenizer.decode(tokenizer.encode(text)) == "a\ufffdb"


# ---- equality with tiktoken ---------------------------------------------------------------------

@pytest.mark.parametrize("name", RANK_FILES)
def test_encode_kjv_equals_tiktoken(name, backend, kjv):
    reference = tiktoken_encoding(name).encode_ordinary(kjv)
    tokenizer = fastml_tokenizer(name, backend)
    tokenizer._cache.clear()
    assert tokenizer.encode(kjv) == reference


# Characters assigned in the Unicode version of Python's unicodedata (14.0 in Python 3.11). The
# regex package and tiktoken's Rust regex follow different, newer Unicode versions, and a
# character assigned in only one of them (U+0558 is a letter for regex 2026.12.2, and not for
# tiktoken 0.14) splits differently.
assigned_text = st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=200)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=assigned_text, name=st.sampled_from(RANK_FILES))
def test_encode_random_unicode_equals_tiktoken(text, name):
    reference = tiktoken_encoding(name).encode_ordinary(text)
    for backend in ("naive", *FAST_BACKENDS):
        assert fastml_tokenizer(name, backend).encode_ordinary(text) == reference, backend


mixed_script = st.lists(
    st.sampled_from(["héllo", "世界", "👍🏽", "e\u0301", "🇫🇷", " ", "\n", "123", "'s", "!!"]),
    max_size=40,
).map("".join)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(max_size=200), mixed_script))
def test_decode_inverts_encode(text):
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    for backend in ("naive", *FAST_BACKENDS):
        for name in RANK_FILES:
            tokenizer = fastml_tokenizer(name, backend)
            ids = tokenizer.encode(text)
            assert tokenizer.decode(ids) == text
            assert tokenizer.decode_bytes(ids) == text.encode("utf-8")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(max_size=200), mixed_script))
def test_trained_tokenizer_round_trip(text, trained_on_mixed):
    ids = trained_on_mixed.encode(text)
    assert trained_on_mixed.decode(ids) == text.encode("utf-16", "surrogatepass").decode(
        "utf-16", "replace")


@pytest.fixture(scope="module")
def trained_on_mixed():
    corpus = ["héllo 世界 👍🏽 e\u0301 🇫🇷 123 it's!!\n" * 20, "naïve café 日本語 " * 10]
    return train(corpus, 400, min_frequency=1, progress=False)


def test_decode_invalid_utf8_replaced(backend):
    tokenizer = fastml_tokenizer("gpt2", backend)
    # The first byte of "€" (E2 82 AC) alone is not valid UTF-8.
    ids = [tokenizer.ranks[b"a"], tokenizer.ranks[b"\xe2"], tokenizer.ranks[b"b"]]
    assert tokenizer.decode_bytes(ids) == b"a\xe2b"
    assert tokenizer.decode(ids) == "a\ufffdb"


def test_decode_invalid_id_raises():
    tokenizer = fastml_tokenizer("gpt2", "naive")
    with pytest.raises(ValueError, match=r"invalid token id 50257 at position 1"):
        tokenizer.decode([0, 50257])
    with pytest.raises(ValueError, match=r"invalid token id 'a' at position 0"):
        tokenizer.decode(["a"])


def test_encode_batch_matches_encode(backend):
    tokenizer = fastml_tokenizer("cl100k", backend)
    texts = ["Hello, world!", "", "日本語 text\n\n  x"]
    assert tokenizer.encode_batch(texts) == [tokenizer.encode(t) for t in texts]


def test_cache_bounded(backend):
    tokenizer = Tokenizer(fastml_tokenizer("gpt2", "naive").ranks, pattern="gpt2",
                          backend=backend, cache_size=10)
    text = " ".join(f"zq{i}xv" for i in range(100))
    first = tokenizer.encode(text)
    assert len(tokenizer._cache) <= 10
    assert tokenizer.encode(text) == first == tiktoken_encoding("gpt2").encode(text)


# ---- special tokens ------------------------------------------------------------------------------

def test_special_disallowed_raises_with_ways_out():
    tokenizer = fastml_tokenizer("cl100k", "naive")
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>'.*allowed_special.*"
                                         r"disallowed_special=\(\)"):
        tokenizer.encode("a <|endoftext|> b")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"allowed_special": "all"},
        {"allowed_special": {"<|endoftext|>"}},
        {"disallowed_special": ()},
        {"allowed_special": {"<|fim_prefix|>"}, "disallowed_special": ()},
        {"allowed_special": {"<|fim_prefix|>"}, "disallowed_special": {"<|fim_prefix|>"}},
    ],
)
def test_special_semantics_equal_tiktoken(kwargs, backend):
    text = "x<|endoftext|>y <|fim_prefix|>z<|endofprompt|>"
    tokenizer = fastml_tokenizer("cl100k", backend)
    encoding = tiktoken_encoding("cl100k")
    try:
        expected = encoding.encode(text, **kwargs)
    except ValueError:
        with pytest.raises(ValueError, match="disallowed"):
            tokenizer.encode(text, **kwargs)
        return
    assert tokenizer.encode(text, **kwargs) == expected


def test_special_unknown_in_allowed_raises():
    tokenizer = fastml_tokenizer("gpt2", "naive")
    with pytest.raises(ValueError, match=r"allowed_special contains \['<\|nope\|>'\]"):
        tokenizer.encode("x", allowed_special={"<|nope|>"})


def test_encode_rejects_bytes():
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        fastml_tokenizer("gpt2", "naive").encode(b"abc")


def test_encode_batch_threads_match_serial(backend):
    from fastml import num_threads

    tokenizer = fastml_tokenizer("gpt2", backend)
    texts = [f"text {i} naïve {'x' * i}" for i in range(50)] + ["plain ascii"] * 20
    with num_threads(1):
        serial = tokenizer.encode_batch(texts)
    with num_threads(2):
        threaded = tokenizer.encode_batch(texts)
    assert threaded == serial == tiktoken_encoding("gpt2").encode_batch(texts)


mostly_ascii = st.lists(
    st.one_of(
        st.sampled_from(["the", " ", "  ", "\n", "x!", "'s", "12345", "é", "日本", "👍", " ö"]),
        st.text(st.characters(exclude_categories=("Cs", "Cn")), max_size=3),
    ),
    max_size=60,
).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=mostly_ascii, name=st.sampled_from(RANK_FILES))
def test_encode_mixed_ascii_equals_tiktoken(text, name):
    # ASCII stretches take the compiled scanners, the rest the regex; the cuts must not show.
    reference = tiktoken_encoding(name).encode_ordinary(text)
    for backend in ("naive", *FAST_BACKENDS):
        assert fastml_tokenizer(name, backend).encode_ordinary(text) == reference, backend


@settings(max_examples=200, deadline=None)
@given(text=mostly_ascii)
def test_ascii_segments_rejoin(text):
    from fastml.bpe._pretokenize import ascii_segments

    segments = list(ascii_segments(text))
    assert "".join(segment for segment, _ in segments) == text
    assert all(segment.isascii() for segment, is_ascii in segments if is_ascii)

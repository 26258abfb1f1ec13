"""The ``fastml`` command (``python -m fastml`` runs the same).

Subcommands:
  compare   time the backends of a primitive, and peer libraries, on built-in data; print a
            table and optionally draw a log-log plot
  generate  continue a prompt with SmolLM2-135M-Instruct on fastml's kernels (fastml.llm)

Each subcommand is one ``add_<name>_command(subparsers)`` function that adds its parser and
sets two defaults on it: ``command_parser``, the parser itself, and ``handler``. ``main`` calls
``handler(args, command_parser)``, which returns the exit status and reports an invalid request
with ``command_parser.error`` (exit status 2). ``SUBCOMMANDS`` lists the functions in the order
of the help text.
"""

import argparse
import importlib.util
import re
import sys
from pathlib import Path

# Size suffixes accepted on the command line: 10k = 10,000 and 1M = 1,000,000.
SIZE_SUFFIXES = {"": 1, "k": 1_000, "m": 1_000_000}


def main(argv=None):
    """Run the command line `argv` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args, args.command_parser)


def build_parser():
    """Return the parser of the ``fastml`` command, with one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="fastml", description="Core ML primitives written four times, compared side by side."
    )
    from fastml import __version__

    parser.add_argument("--version", action="version", version=f"fastml {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add_command in SUBCOMMANDS:
        add_command(subparsers)
    return parser


# ---- fastml compare ---------------------------------------------------------------------------

def add_compare_command(subparsers):
    from fastml.compare import CASES

    parser = subparsers.add_parser(
        "compare",
        help="time the backends and peer libraries of a primitive on built-in data",
        description=(
            "Time every backend of a primitive, and the peer libraries that are installed, on\n"
            "built-in data at each size. Print a table of the best time per call, the speedup\n"
            "over the naive backend and the ratio to the fastest peer, and optionally draw time\n"
            "over size on log-log axes with each backend's fitted exponent. The naive backend\n"
            "runs only up to a size cap per primitive, and the table says where it was skipped."
        ),
        epilog="primitives and their default sizes:\n" + "\n".join(
            f"  {case.name:<11} {case.size_name}: {' '.join(f'{s:,}' for s in case.sizes)}"
            f"  (naive up to {case.naive_cap:,})"
            for case in CASES.values()
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "primitive", nargs="?", metavar="PRIMITIVE", type=parse_primitive,
        help=f"one of: {', '.join(CASES)} ('_' may replace '-'; 'bpe' is bpe-train)",
    )
    parser.add_argument(
        "--all", action="store_true",
        help="compare every primitive at one quick size each (about 30 seconds on 2 cores)",
    )
    parser.add_argument(
        "--sizes", nargs="+", type=parse_size, metavar="SIZE",
        help="input sizes to run, such as 1000 10k 1M (default: the primitive's ladder)",
    )
    parser.add_argument(
        "--backends", nargs="+", metavar="NAME",
        help="fastml backends and peers to run, by name (default: all of the primitive's)",
    )
    parser.add_argument(
        "--threads", type=parse_positive_int, metavar="N",
        help="threads for fastml and the peers (default: all CPUs, or FASTML_NUM_THREADS)",
    )
    parser.add_argument(
        "--plot", type=Path, metavar="FILE",
        help="write a log-log plot of time over size to FILE (.png, .svg or .pdf; needs matplotlib)",
    )
    parser.add_argument(
        "--repeat", type=parse_positive_int, default=5, metavar="R",
        help="samples per measurement; the best one is reported (default: 5)",
    )
    parser.add_argument(
        "--max-time", type=float, default=2.0, metavar="SECONDS",
        help="start no new sample of a measurement after this many seconds (default: 2)",
    )
    parser.add_argument("--no-progress", action="store_true", help="show no progress bar")
    parser.set_defaults(handler=run_compare, command_parser=parser)


def parse_primitive(text):
    from fastml.compare import get_case

    try:
        return get_case(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_size(text):
    """Parse a positive size such as 2000, 2_000, 10k or 1M."""
    match = re.fullmatch(r"(\d[\d_]*)([kKmM]?)", text.strip())
    if match is None or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}; expected a positive integer such as 2000, 10k or 1M"
        )
    return int(match[1]) * SIZE_SUFFIXES[match[2].lower()]


def parse_positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}; expected an integer >= 1")
    return value


def run_compare(args, parser):
    """Check the request, then time and print every requested case; return the exit status."""
    requests = compare_requests(args, parser)
    check_plot_file(args, parser)
    if not args.max_time > 0:
        parser.error(f"invalid --max-time {args.max_time}; expected a number of seconds > 0")

    from fastml import compare

    total = sum(len(sizes) * len(names) for _, sizes, names in requests)
    progress = ProgressBar(total, enabled=not args.no_progress)
    try:
        for case, sizes, names in requests:
            case, measurements = compare.run(
                case.name, sizes, names, threads=args.threads, repeat=args.repeat,
                max_time=args.max_time, progress=progress.update,
            )
            progress.write(compare.format_table(case, measurements, args.threads) + "\n")
            if args.plot is not None:
                compare.plot(case, measurements, args.plot, args.threads)
                progress.write(f"plot written to {args.plot}")
    finally:
        progress.close()
    return 0


def compare_requests(args, parser):
    """Return ``[(case, sizes, backends)]`` to run; exit with status 2 on an invalid request."""
    from fastml.compare import CASES, check_backends, check_sizes

    if args.all == (args.primitive is not None):
        parser.error("give either a PRIMITIVE or --all")
    if args.all and args.sizes:
        parser.error("--sizes needs one PRIMITIVE, because sizes differ per primitive; "
                     "--all runs each primitive at one quick size")
    if args.all and args.plot:
        parser.error("--plot needs one PRIMITIVE and several --sizes; --all runs one size each")

    names = split_names(args.backends)
    try:
        if not args.all:
            case = CASES[args.primitive]
            sizes = check_sizes(case, args.sizes or case.sizes)
            return [(case, sizes, case.backends() if names is None else check_backends(case, names))]
        return all_requests(names)
    except ValueError as exc:
        parser.error(str(exc))


def split_names(values):
    """Return the names of --backends, which may also be separated by commas, or None."""
    if values is None:
        return None
    return [name for value in values for name in value.split(",") if name]


def all_requests(names):
    """Return the requests of --all: every case at its quick size, with the `names` it has."""
    from fastml.compare import CASES

    if names is not None:
        known = {name for case in CASES.values() for name in case.backends()}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(
                f"unknown backend {unknown[0]!r}; expected any of: {', '.join(sorted(known))}"
            )
    requests = []
    for case in CASES.values():
        chosen = case.backends() if names is None else tuple(
            name for name in case.backends() if name in names
        )
        if chosen:
            requests.append((case, (case.quick_size,), chosen))
    return requests


def check_plot_file(args, parser):
    """Exit with status 2 before any timing if the plot cannot be written."""
    if args.plot is None:
        return
    if importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib; install it with `pip install matplotlib`")
    from fastml.compare._report import PLOT_FORMATS

    extension = args.plot.suffix.lstrip(".").lower()
    if extension not in PLOT_FORMATS:
        expected = ", ".join(f".{name}" for name in PLOT_FORMATS)
        parser.error(f"invalid --plot {str(args.plot)!r}: expected a file name ending in {expected}")
    directory = args.plot.resolve().parent
    if not directory.is_dir():
        parser.error(f"invalid --plot {str(args.plot)!r}: directory {str(directory)!r} not found")


class ProgressBar:
    """A tqdm bar over measurements on stderr, or one line per measurement without tqdm."""

    def __init__(self, total, enabled=True):
        self.bar = None
        self.enabled = enabled
        if enabled and importlib.util.find_spec("tqdm") is not None:
            from tqdm import tqdm

            # disable=None turns the bar off when stderr is not a terminal.
            self.bar = tqdm(total=total, unit="run", leave=False, dynamic_ncols=True, disable=None)

    def update(self, measurement):
        from fastml.compare._report import format_seconds

        m = measurement
        result = "skipped" if m.skipped else format_seconds(m.seconds)
        text = f"{m.case} {m.backend} {m.size:,}: {result}"
        if self.bar is not None:
            self.bar.set_description(text)
            self.bar.update()
        elif self.enabled:
            print(text, file=sys.stderr, flush=True)

    def write(self, text):
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ---- fastml generate --------------------------------------------------------------------------

def add_generate_command(subparsers):
    from fastml.llm._cli import add_generate_command as add_to

    add_to(subparsers)


# The subcommands of ``fastml``, in the order of the help text. A new subcommand adds its
# ``add_<name>_command`` function here.
SUBCOMMANDS = (add_compare_command, add_generate_command)


if __name__ == "__main__":
    sys.exit(main())

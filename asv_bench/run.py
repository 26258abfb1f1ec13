"""Run the asv benchmark suite on the current commit and publish the HTML report.

``make bench`` calls this after installing the ``bench`` extra and the real data into .venv.
asv builds the commit checked out at HEAD (not uncommitted changes to fastml/) in a virtualenv
of its own under asv_bench/env, from the packages listed in asv_bench/asv.conf.json, runs the
benchmarks in asv_bench/benchmarks, then writes the report to asv_bench/html.

    python asv_bench/run.py                  # the real measurement
    python asv_bench/run.py --quick          # every benchmark once: checks the suite, measures nothing
    python asv_bench/run.py --bench KMeansFit

``FASTML_BENCH_QUICK=1`` in the environment selects the quick run too
(``make bench FASTML_BENCH_QUICK=1``). A quick run's numbers are single unwarmed samples: do not
quote them.
"""

import argparse
import ast
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "asv_bench" / "asv.conf.json"
HTML = ROOT / "asv_bench" / "html"
RESULTS = ROOT / "asv_bench" / "results"
# A 1-minute load average above this, before the run starts, means other work competes for CPUs.
BUSY_LOAD = 0.5


def main(argv=None):
    args = _parse_args(argv)
    _warn_if_busy()
    started = time.monotonic()

    # Records this machine's description under its host name, answering asv's questions with
    # the detected defaults. The questions it prints are noise, so they are shown only on failure.
    _asv("machine", "--yes", quiet=True)
    run = ["run", "HEAD^!", "--show-stderr"]
    if args.quick:
        run.append("--quick")
    if args.bench:
        run += ["--bench", args.bench]
    status = _asv(*run, check=False)
    _asv("publish")
    _print_summary(_head_commit())

    minutes = (time.monotonic() - started) / 60
    print(f"\nasv finished in {minutes:.1f} min{' (quick run: no timing is valid)' if args.quick else ''}.")
    print(f"Report: {HTML / 'index.html'}")
    print("Open it through a local web server (the page loads its data with requests that")
    print("browsers refuse for file:// addresses):")
    print(f"    {_shown(Path(sys.executable))} -m http.server --bind 127.0.0.1 --directory {_shown(HTML)} 8080")
    print("then browse http://127.0.0.1:8080/")
    if status != 0:
        print(f"asv run exited with status {status}: some benchmarks failed (see the log above).")
    return status


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("FASTML_BENCH_QUICK", "") not in ("", "0"),
        help="run every benchmark once, without warm-up or repeats, to check that the suite "
        "works (also set by FASTML_BENCH_QUICK=1); its timings are not measurements",
    )
    parser.add_argument(
        "--bench",
        metavar="REGEX",
        help="run only the benchmarks whose name matches REGEX (passed to `asv run --bench`)",
    )
    return parser.parse_args(argv)


def _asv(*args, check=True, quiet=False):
    command = [sys.executable, "-m", "asv", *args, "--config", str(CONFIG)]
    print("+ " + " ".join(command[1:]), flush=True)
    output = subprocess.PIPE if quiet else None
    result = subprocess.run(command, cwd=ROOT, stdout=output, stderr=output, text=True)
    if check and result.returncode != 0:
        if quiet:
            print(result.stdout + result.stderr)
        raise SystemExit(f"`asv {args[0]}` failed with exit status {result.returncode}")
    return result.returncode


def _head_commit():
    command = ["git", "rev-parse", "HEAD"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def _print_summary(commit):
    """Print which backends have results in each benchmark, and time ratios to the peers.

    Reads the newest results file of `commit` and the parameter names from the published
    index. A ratio is the best fastml backend's time divided by the peer's, per combination of
    the other parameters, so a value below 1 means fastml is faster.
    """
    from fastml.backends import backends, primitives

    files = sorted(RESULTS.glob(f"*/{commit[:8]}-*.json"), key=lambda path: path.stat().st_mtime)
    if not files:
        print(f"No results for commit {commit[:8]} under {_shown(RESULTS)}.")
        return
    results = json.loads(files[-1].read_text())
    index = json.loads((HTML / "index.json").read_text())["benchmarks"]
    ours = {name for primitive in primitives() for name in backends(primitive)}

    print(f"\nResults of {commit[:8]} ({_shown(files[-1])}):")
    for name, row in sorted(results["results"].items()):
        entry = dict(zip(results["result_columns"], row))
        names = index.get(name, {}).get("param_names", [])
        if "backend" not in names or not entry["result"]:
            continue
        table = _by_backend(entry, names)
        measured = [backend for backend, rows in table.items() if any(rows.values())]
        missing = [backend for backend in table if backend not in measured]
        print(f"  {name}: results for {', '.join(measured)}"
              + (f"; none for {', '.join(missing)}" if missing else ""))
        if name.split(".")[-1].startswith("time_"):
            _print_ratios(table, ours)


def _by_backend(entry, names):
    """Return {backend: {other parameter values: time or None}} from one results entry."""
    position = names.index("backend")
    table = {}
    for combination, value in zip(itertools.product(*entry["params"]), entry["result"]):
        values = [_parameter_value(item) for item in combination]
        backend = values.pop(position)
        valid = value is not None and not math.isnan(value)
        table.setdefault(backend, {})[tuple(values)] = value if valid else None
    return table


def _parameter_value(text):
    # asv stores each parameter value as its repr: "'naive'", "16".
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _print_ratios(table, ours):
    # Keys in parameter order, as asv lists them.
    others = dict.fromkeys(key for rows in table.values() for key in rows)
    for key in others:
        times = {backend: rows.get(key) for backend, rows in table.items() if rows.get(key)}
        fastml = {backend: t for backend, t in times.items() if backend in ours}
        peers = {backend: t for backend, t in times.items() if backend not in ours}
        if not fastml or not peers:
            continue
        best = min(fastml, key=fastml.get)
        ratios = ", ".join(
            f"{peer} {_ms(t)} (ratio {fastml[best] / t:.2f})" for peer, t in peers.items()
        )
        print(f"    {', '.join(map(str, key))}: best fastml {best} {_ms(fastml[best])}; {ratios}")


def _ms(seconds):
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms"


def _warn_if_busy():
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    print(f"1-minute load average before the run: {load:.2f} on {os.cpu_count()} CPUs")
    if load > BUSY_LOAD:
        print(
            "WARNING: other processes are using the CPUs; multi-threaded timings taken now can be "
            "several times slower than on a quiet machine. Do not record them in docs/benchmarks.md."
        )


def _shown(path):
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


if __name__ == "__main__":
    sys.exit(main())

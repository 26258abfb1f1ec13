"""The library behind ``fastml compare``: timing, cases, table and plot."""

import dataclasses
import importlib.util
import math
import os
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastml import compare
from fastml._threads import get_num_threads
from fastml.compare import CASES, Measurement
from fastml.compare._cases import Peer, SkipMeasurement
from fastml.compare._report import format_ratio, format_seconds, loglog_slope, table_rows
from fastml.compare._run import best_time, measure, measure_all, plan


def installed(module):
    return importlib.util.find_spec(module) is not None


# ---- timing -----------------------------------------------------------------------------------

def test_best_time_skips_warm_up_call():
    calls = []

    def func():
        # The first call is slow, as a Numba compilation would be.
        time.sleep(0.05 if not calls else 0.0)
        calls.append(None)

    assert best_time(func, repeat=3) < 0.01
    assert len(calls) > 3


def test_best_time_naive_counts_first_call():
    calls = []

    def func():
        time.sleep(0.02)
        calls.append(None)

    seconds = best_time(func, repeat=1, first_call_counts=True)
    assert len(calls) == 1
    assert seconds >= 0.02


def test_best_time_stops_after_max_time():
    calls = []

    def func():
        time.sleep(0.03)
        calls.append(None)

    best_time(func, repeat=100, max_time=0.05)
    # The warm-up, then samples until 0.05 s have been spent: 2 or 3 calls of 0.03 s.
    assert len(calls) <= 3


def test_best_time_groups_short_calls():
    calls = []
    best_time(lambda: calls.append(None), repeat=2)
    # Each sample lasts at least 10 ms, far more than two calls of an append.
    assert len(calls) > 100


# ---- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "alias, name",
    [("kv_cache", "kv-cache"), ("kv-cache", "kv-cache"), ("bpe", "bpe-train"),
     ("bpe_encode", "bpe-encode")],
)
def test_get_case_aliases(alias, name):
    assert compare.get_case(alias).name == name


def test_get_case_unknown():
    with pytest.raises(ValueError, match=r"unknown primitive 'svm'; expected one of: kmeans, knn"):
        compare.get_case("svm")


def test_check_sizes_sorts_and_deduplicates():
    assert compare.check_sizes(CASES["knn"], [300, 100, 300]) == (100, 300)


@pytest.mark.parametrize(
    "sizes, error, message",
    [
        ([5], ValueError, r"invalid size 5 for kmeans: n_samples must be between 100 and 10,000,000"),
        ([20_000_000], ValueError, r"invalid size 20,000,000 for kmeans"),
        ([], ValueError, r"no sizes given for kmeans; give at least one n_samples"),
        ([100.0], TypeError, r"sizes must be ints, got 100.0 of type float"),
        ([True], TypeError, r"sizes must be ints, got True of type bool"),
    ],
)
def test_check_sizes_rejects(sizes, error, message):
    with pytest.raises(error, match=message):
        compare.check_sizes(CASES["kmeans"], sizes)


def test_check_backends_keeps_case_order():
    assert compare.check_backends(CASES["kmeans"], ["sklearn", "naive", "numba"]) == (
        "numba", "naive", "sklearn",
    )


def test_check_backends_rejects_unknown():
    with pytest.raises(ValueError, match=r"unknown backend 'numpy' for bpe-train; expected any of: "
                                         r"cython, numba, naive, rustbpe, tokenizers"):
        compare.check_backends(CASES["bpe-train"], ["numba", "numpy"])


def test_check_backends_rejects_empty():
    with pytest.raises(ValueError, match=r"no backends given for mlp"):
        compare.check_backends(CASES["mlp"], [])


def test_case_sizes_within_limits():
    for case in CASES.values():
        assert compare.check_sizes(case, case.sizes) == case.sizes
        assert case.min_size <= case.quick_size <= case.naive_cap
        # At least two sizes under the naive cap, so the naive backend gets an exponent too.
        assert sum(size <= case.naive_cap for size in case.sizes) >= 2
        # The ladder spans at least a decade, so the fitted exponent means something.
        assert case.sizes[-1] >= 10 * case.sizes[0]


# ---- measurements -----------------------------------------------------------------------------

def test_measure_skips_naive_above_cap():
    case = CASES["attention"]
    result = measure(case, "naive", case.naive_cap + 1)
    assert math.isnan(result.seconds)
    assert result.skipped == f"naive runs up to seq_len={case.naive_cap}"


def test_measure_skips_missing_peer():
    case = dataclasses.replace(
        CASES["mlp"], peers={"nopeer": Peer("fastml_no_such_module", "pip install nopeer")}
    )
    result = measure(case, "nopeer", 16)
    assert result.skipped == "nopeer is not installed (pip install nopeer)"


def test_measure_reports_skip_from_build():
    def build(backend, size):
        raise SkipMeasurement("the data set is missing; apt-get install it")

    case = dataclasses.replace(CASES["mlp"], build=build)
    assert measure(case, "numpy", 16).skipped == "the data set is missing; apt-get install it"


def test_measure_applies_threads():
    from threadpoolctl import threadpool_info

    seen = []
    pool_sizes = []

    def build(backend, size):
        seen.append(get_num_threads())
        return lambda: pool_sizes.append({pool["num_threads"] for pool in threadpool_info()})

    case = dataclasses.replace(CASES["mlp"], build=build)
    measure(case, "numpy", 16, threads=1, repeat=1)
    assert seen == [1]
    # Every BLAS and OpenMP pool loaded in this process runs one thread while timed.
    assert pool_sizes and all(sizes == {1} for sizes in pool_sizes)


def test_measure_all_table_order():
    calls = []

    def build(backend, size):
        calls.append((size, backend))
        return lambda: None

    case = dataclasses.replace(CASES["mlp"], build=build)
    results = measure_all(case, ("numpy", "naive"), (16, 32), repeat=1)
    # Sizes run in the outer loop, so a size's input is built once for all backends.
    assert calls == [(16, "numpy"), (16, "naive"), (32, "numpy"), (32, "naive")]
    assert [(m.size, m.backend) for m in results] == calls
    assert all(m.seconds >= 0 and not m.skipped for m in results)


def test_kmeans_case_fixed_work():
    from fastml.compare._cases import KMEANS_ITERATIONS

    case = CASES["kmeans"]
    for size in (case.min_size, case.sizes[0]):
        # tol=0 stops only at convergence, which would cut the work short of the peers'.
        assert case.build("numpy", size)().n_iter == KMEANS_ITERATIONS


def test_plan_isolates_faiss():
    assert plan(CASES["knn"], ("numba", "faiss", "sklearn")) == (["numba", "sklearn"], ["faiss"])


def test_plan_isolates_rayon_peers():
    names = CASES["bpe-train"].backends()
    assert plan(CASES["bpe-train"], names) == (["cython", "numba", "naive"], ["rustbpe", "tokenizers"])


@pytest.mark.skipif(not installed("rustbpe"), reason="rustbpe is not installed")
def test_rustbpe_runs_in_child_process(monkeypatch):
    monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    _, results = compare.run("bpe-train", [10_000], ["rustbpe"], threads=1, repeat=1, max_time=0.1)

    if results[0].skipped:
        pytest.skip(results[0].skipped)
    assert results[0].seconds > 0
    # The thread count was set in the child's environment, not in this one.
    assert "RAYON_NUM_THREADS" not in os.environ


@pytest.mark.parametrize("name", list(CASES))
def test_case_runs_every_backend(name):
    case = CASES[name]
    size = max(case.min_size, min(case.sizes[0], 2_000))
    names = [n for n in case.backends() if n not in case.isolated_peers]
    _, results = compare.run(name, [size], names, repeat=1, max_time=0.1)

    assert [m.backend for m in results] == names
    for m in results:
        if m.skipped:
            # Only an optional peer or missing real data may be absent.
            assert m.backend in case.peers or "bible-kjv" in m.skipped or "fetch" in m.skipped
        else:
            assert 0 < m.seconds < 60


@pytest.mark.skipif(not installed("faiss"), reason="faiss-cpu is not installed")
def test_faiss_runs_in_child_process():
    loaded_before = "faiss" in sys.modules
    _, results = compare.run("knn", [200], ["numpy", "faiss"], repeat=1, max_time=0.1)

    assert [m.backend for m in results] == ["numpy", "faiss"]
    assert results[1].seconds > 0
    if not loaded_before:
        assert "faiss" not in sys.modules


# ---- table and plot ---------------------------------------------------------------------------

def fake_measurements():
    return [
        Measurement("kmeans", "numba", 100, 0.001),
        Measurement("kmeans", "naive", 100, 0.5),
        Measurement("kmeans", "sklearn", 100, 0.004),
        Measurement("kmeans", "faiss", 100, 0.002),
        Measurement("kmeans", "numba", 1000, 0.01),
        Measurement("kmeans", "naive", 1000, skipped="naive runs up to n_samples=100"),
        Measurement("kmeans", "sklearn", 1000, skipped="sklearn is not installed"),
        Measurement("kmeans", "faiss", 1000, 0.02),
    ]


def test_table_speedup_and_peer_ratio():
    rows = table_rows(CASES["kmeans"], fake_measurements())
    assert rows[0] == ["n_samples", "backend", "time", "speedup vs naive", "time / best peer", "note"]
    by_key = {(row[0], row[1]): row[2:] for row in rows[1:]}

    # naive / numba = 0.5 / 0.001; numba / best peer (faiss) = 0.001 / 0.002.
    assert by_key["100", "numba"] == ["1 ms", "500x", "0.5", ""]
    assert by_key["100", "naive"] == ["500 ms", "1x", "250", ""]
    assert by_key["100", "sklearn"] == ["4 ms", "125x", "2", ""]
    assert by_key["1,000", "numba"] == ["10 ms", "-", "0.5", ""]
    assert by_key["1,000", "naive"] == ["-", "-", "-", "skipped: naive runs up to n_samples=100"]
    assert by_key["1,000", "sklearn"][3] == "skipped: sklearn is not installed"


def test_format_table_lists_exponents():
    text = compare.format_table(CASES["kmeans"], fake_measurements(), threads=1)
    lines = text.splitlines()
    assert lines[0].startswith("kmeans: 5 Lloyd iterations")
    assert lines[0].endswith("; 1 thread")
    # numba: 10x the time for 10x the size; faiss: 10x for 10x; naive and sklearn: one point.
    assert lines[-1] == "fitted exponent of n_samples: numba 1.00, faiss 1.00"


@given(
    exponent=st.floats(-1.0, 3.0),
    scale=st.floats(1e-9, 1e3),
    sizes=st.lists(st.integers(1, 10**7), min_size=2, max_size=6, unique=True),
)
def test_loglog_slope_recovers_power_law(exponent, scale, sizes):
    times = [scale * size**exponent for size in sizes]
    assert loglog_slope(sizes, times) == pytest.approx(exponent, abs=1e-6)


def test_loglog_slope():
    sizes = [100, 200, 400, 800]
    assert loglog_slope(sizes, [3e-9 * n**2 for n in sizes]) == pytest.approx(2.0)
    assert math.isnan(loglog_slope([100], [1.0]))


@pytest.mark.parametrize(
    "seconds, text", [(2.5, "2.5 s"), (0.0123, "12.3 ms"), (4.56e-5, "45.6 µs"), (2e-8, "20 ns")]
)
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_format_ratio():
    assert format_ratio(1234.6) == "1,235"
    assert format_ratio(0.01234) == "0.0123"


@pytest.mark.skipif(not installed("matplotlib"), reason="matplotlib is not installed")
def test_figure_legend_has_exponents():
    figure = compare.make_figure(CASES["kmeans"], fake_measurements(), threads=2)
    axes = figure.axes[0]
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert labels == ["numba (exponent 1.00)", "naive", "sklearn", "faiss (exponent 1.00)"]
    assert axes.get_xscale() == "log"
    assert axes.get_yscale() == "log"
    assert axes.get_xlabel() == "n_samples"

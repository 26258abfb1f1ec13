"""The benchmark report: the summary table, the offline asv page, and its rendering in Chromium.

The table is built from results files synthesized here. The rendering test builds a real asv
report of a two-benchmark suite (asv run on this interpreter, --quick), vendors its assets and
loads it in headless Chromium served from 127.0.0.1.
"""

import importlib.util
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_module(relative_path):
    """Import a script of the repository (they are not in a package) as a module."""
    path = ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_summary = load_module("scripts/bench_summary.py")
asv_offline = load_module("scripts/asv_offline.py")
screenshot_report = load_module("scripts/screenshot_report.py")


# ---- the summary table, on synthesized asv results ---------------------------------------------

OURS = {"naive", "numpy", "numba", "cython"}
NAN = float("nan")


def results_file(entries):
    """Return an asv results dict: `entries` maps a benchmark to (parameter lists, results)."""
    results = {}
    for name, (params, values) in entries.items():
        results[name] = [values, [[repr(v) for v in axis] for axis in params], "version"]
    return {"result_columns": ["result", "params", "version"], "results": results}


# Times of kmeans.KMeansFit.time_fit in the order of itertools.product(backends, cases).
FIT_BACKENDS = ("naive", "numpy", "numba", "cython", "sklearn", "faiss")
FIT_TIMES = {
    "small": {"naive": 8.0, "numpy": 0.4, "numba": 0.1, "cython": 0.2, "sklearn": 0.2, "faiss": 0.05},
    "large": {"naive": NAN, "numpy": 4.0, "numba": 1.0, "cython": 0.5, "sklearn": 1.0, "faiss": 2.0},
}
MLP_SIZES = (32, 64, 256)
MLP_EXPONENT = 1.5
MLP_SPEEDUP = 40.0


def mlp_time(batch_size):
    return 1e-3 * (batch_size / 32) ** MLP_EXPONENT


@pytest.fixture
def synthesized():
    fit_values = [FIT_TIMES[case][b] for b in FIT_BACKENDS for case in ("small", "large")]
    results = results_file({
        "kmeans.KMeansFit.time_fit": ((FIT_BACKENDS, ("small", "large")), fit_values),
        "kmeans.KMeansScaling.track_exponent_in_n": ((("numba", "cython"),), [1.1, 0.9]),
        "kmeans.KMeansSpeedup.track_time_ratio_to_naive": ((("numba",),), [0.01]),
        "kmeans.Unparametrized.time_other": (((),), [1.0]),
        "mlp.MLPForward.time_forward": (
            (("numpy", "torch"), MLP_SIZES),
            [mlp_time(n) for n in MLP_SIZES] + [2 * mlp_time(n) for n in MLP_SIZES],
        ),
        "mlp.MLPSpeedup.track_speedup_over_naive": ((("numpy",),), [MLP_SPEEDUP]),
        "knn.KNNSpeedup.track_time_ratio_to_naive": (
            (("numba", "cython"), ("l2", "cosine")), [0.01, 0.02, 0.02, 0.04]),
        "sampling.Sample.time_sample": ((("numpy", "torch"),), [None, 1.0]),
    })
    benchmarks = {
        "kmeans.KMeansFit.time_fit": {"param_names": ["backend", "case"], "type": "time"},
        "kmeans.KMeansScaling.track_exponent_in_n": {
            "param_names": ["backend"], "type": "track", "unit": "exponent of n"},
        "kmeans.KMeansSpeedup.track_time_ratio_to_naive": {
            "param_names": ["backend"], "type": "track", "unit": "time / naive time"},
        "kmeans.Unparametrized.time_other": {"param_names": [], "type": "time"},
        "mlp.MLPForward.time_forward": {"param_names": ["backend", "batch_size"], "type": "time"},
        "mlp.MLPSpeedup.track_speedup_over_naive": {
            "param_names": ["backend"], "type": "track", "unit": "naive time / time"},
        "knn.KNNSpeedup.track_time_ratio_to_naive": {
            "param_names": ["backend", "metric"], "type": "track", "unit": "time / naive time"},
        "sampling.Sample.time_sample": {"param_names": ["backend"], "type": "time"},
    }
    return {row["primitive"]: row for row in bench_summary.summary_rows(results, benchmarks, OURS)}


def test_summary_one_row_per_module(synthesized):
    assert list(synthesized) == ["kmeans", "knn", "mlp", "sampling"]


def test_summary_best_backend_tie_goes_first(synthesized):
    # numba is fastest on "small" and cython on "large", each by 2x: equal geometric means.
    assert synthesized["kmeans"]["backend"] == "numba"


def test_summary_speedup_uses_common_cases(synthesized):
    small = FIT_TIMES["small"]
    assert synthesized["kmeans"]["speedup"] == pytest.approx(small["naive"] / small["numba"])


def test_summary_peer_ratio_against_fastest_peer(synthesized):
    small, large = FIT_TIMES["small"], FIT_TIMES["large"]
    expected = math.sqrt(small["numba"] / small["faiss"] * large["numba"] / large["sklearn"])
    assert synthesized["kmeans"]["peer_ratio"] == pytest.approx(expected)
    assert synthesized["kmeans"]["peers"] == ["faiss", "sklearn"]


def test_summary_exponent_from_track(synthesized):
    assert synthesized["kmeans"]["exponent"] == pytest.approx(1.1)
    assert synthesized["kmeans"]["exponent_of"] == "n"


def test_summary_exponent_fitted_without_track(synthesized):
    mlp = synthesized["mlp"]
    assert mlp["backend"] == "numpy"
    assert mlp["peer_ratio"] == pytest.approx(0.5)
    assert mlp["exponent"] == pytest.approx(MLP_EXPONENT)
    assert mlp["exponent_of"] == "batch_size (fit)"


def test_summary_speedup_from_track(synthesized):
    assert synthesized["mlp"]["speedup"] == pytest.approx(MLP_SPEEDUP)


def test_summary_best_backend_from_track(synthesized):
    # No time_ benchmark ran, so the track benchmark's time ratios to naive decide.
    knn = synthesized["knn"]
    assert knn["backend"] == "numba"
    assert knn["speedup"] == pytest.approx(1 / math.sqrt(0.01 * 0.02))
    assert knn["peer_ratio"] is None
    assert knn["exponent"] is None


def test_summary_failed_backend_has_no_row_values(synthesized):
    assert synthesized["sampling"]["backend"] is None
    assert synthesized["sampling"]["speedup"] is None


def test_summary_markdown_table(synthesized):
    text = bench_summary.format_markdown(list(synthesized.values()), "0123456789abcdef", "x.json")
    lines = text.splitlines()
    assert "commit 01234567" in lines[0]
    assert "| kmeans | numba | 80.0× | 1.41 (faiss, sklearn) | 1.10 in n |" in lines
    assert "| knn | numba | 70.7× | – | – |" in lines
    assert "| mlp | numpy | 40.0× | 0.50 (torch) | 1.50 in batch_size (fit) |" in lines
    assert "| sampling | – | – | – | – |" in lines


def test_summary_newest_results_file(tmp_path):
    machine = tmp_path / "box"
    machine.mkdir()
    older = machine / "0123abcd-env-a.json"
    newer = machine / "0123abcd-env-b.json"
    older.write_text("{}")
    newer.write_text("{}")
    os.utime(older, (1, 1))
    assert bench_summary.newest_results_file(tmp_path, "0123abcd" + "0" * 32) == newer
    assert bench_summary.newest_results_file(tmp_path, "ffffffff" + "0" * 32) is None


# ---- commit selection of asv_bench/run.py ------------------------------------------------------

def git(*args):
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def run_py():
    return load_module("asv_bench/run.py")


def test_commits_count(run_py):
    assert run_py._commits("2") == git("rev-list", "--first-parent", "--max-count=2", "HEAD").split()


def test_commits_range(run_py):
    assert run_py._commits("HEAD~1..HEAD") == [git("rev-parse", "HEAD").strip()]


def test_commits_single(run_py):
    assert run_py._commits("HEAD") == [git("rev-parse", "HEAD").strip()]


@pytest.mark.parametrize("spec, message", [
    ("0", "a count must be at least 1"),
    ("HEAD..HEAD", "names no commit"),
    ("no-such-branch", "names no commit"),
])
def test_commits_rejects(run_py, spec, message):
    with pytest.raises(SystemExit, match=message):
        run_py._commits(spec)


# ---- vendoring the page's assets ---------------------------------------------------------------

ASV_PAGE = None
try:
    import asv

    ASV_PAGE = Path(asv.__file__).parent / "www" / "index.html"
except ImportError:
    pass


@pytest.fixture(scope="module")
def assets():
    """Download (once) and return the cache of the report's JavaScript and CSS packages."""
    if shutil.which("npm") is None:
        pytest.skip("npm not found: the report's assets come from npm packages (Debian: nodejs)")
    try:
        asv_offline.fetch_assets()
    except SystemExit as error:
        # The script exits with its message; inside pytest that would end the whole session.
        pytest.fail(f"fetching the report's assets failed: {error}")
    return asv_offline.CACHE


@pytest.fixture
def asv_page(tmp_path, assets):
    if ASV_PAGE is None:
        pytest.skip("asv is not installed (the bench extra installs it)")
    # What asv publish writes besides the results: the page and its own scripts.
    shutil.copytree(ASV_PAGE.parent, tmp_path, dirs_exist_ok=True)
    return tmp_path


def loaded_urls(html):
    """Return the src of every script and the href of every stylesheet of `html`."""
    urls = []
    for match in asv_offline.TAG.finditer(html):
        url = asv_offline.URL_ATTRIBUTE.search(match.group(0))
        if url and asv_offline._loads_resource(match.group(0)):
            urls.append((url.group(2), match.group(0)))
    return urls


def test_offline_page_loads_nothing_remote(asv_page):
    replaced = asv_offline.make_offline(asv_page)
    urls = loaded_urls((asv_page / "index.html").read_text())
    assert replaced == len(asv_offline.ASSETS)
    for url, tag in urls:
        assert not url.startswith(("http:", "https:", "//")), tag
        assert (asv_page / url).is_file(), tag


def test_offline_page_integrity_kept_when_identical(asv_page):
    asv_offline.make_offline(asv_page)
    tags = dict(loaded_urls((asv_page / "index.html").read_text()))
    assert 'integrity="sha256-' in tags["vendor/jquery/jquery.min.js"]
    assert 'integrity="sha256-' in tags["vendor/bootstrap/css/bootstrap.min.css"]
    # The CDN serves its own minified flot; the local file is the unminified release.
    assert "integrity" not in tags["vendor/flot/jquery.flot.js"]
    assert "integrity" not in tags["vendor/stupidtable/stupidtable.min.js"]
    assert all("crossorigin" not in tag for tag in tags.values())


def test_offline_page_second_run_changes_nothing(asv_page):
    asv_offline.make_offline(asv_page)
    first = (asv_page / "index.html").read_text()
    assert asv_offline.make_offline(asv_page) == 0
    assert (asv_page / "index.html").read_text() == first


def test_offline_rejects_unknown_cdn_asset(tmp_path):
    page = '<script src="https://cdn.example.invalid/lib.js"></script>'
    with pytest.raises(SystemExit, match=r"does not vendor.*https://cdn\.example\.invalid/lib\.js"):
        asv_offline.rewrite_page(page, tmp_path)


def test_offline_keeps_plain_links(tmp_path):
    page = '<link rel="alternate" href="https://example.invalid/feed.xml">'
    assert asv_offline.rewrite_page(page, tmp_path) == (page, 0)


def test_offline_integrity_mismatch_rejected():
    with pytest.raises(SystemExit, match="does not match the pinned"):
        asv_offline.check_integrity(b"other bytes", asv_offline.PACKAGES["jquery@3.3.1"][0], "jquery")


# ---- a real report in headless Chromium --------------------------------------------------------

SUITE = '''
    """A two-benchmark suite for rendering tests: k-means on 300 points, naive against NumPy."""
    import time

    import numpy as np

    from fastml import kmeans

    X = np.random.default_rng(0).random((300, 2))


    def fit(backend, n_samples=300):
        return kmeans.fit(X[:n_samples], 3, n_init=1, max_iter=5, random_state=0, backend=backend)


    class KMeansFit:
        params = (("naive", "numpy"), (100, 300))
        param_names = ("backend", "n_samples")

        def setup(self, backend, n_samples):
            fit(backend, n_samples)

        def time_fit(self, backend, n_samples):
            fit(backend, n_samples)


    class KMeansSpeedup:
        params = (("naive", "numpy"),)
        param_names = ("backend",)

        def setup(self, backend):
            fit(backend)
            fit("naive")

        def track_time_ratio_to_naive(self, backend):
            start = time.perf_counter()
            fit(backend)
            middle = time.perf_counter()
            fit("naive")
            return (middle - start) / (time.perf_counter() - middle)
'''
GRID_NAMES = ("KMeansFit.time_fit", "KMeansSpeedup.track_time_ratio_to_naive")
SPEEDUP_PAGE = "kmeans.KMeansSpeedup.track_time_ratio_to_naive?x-axis=backend"
# Text of asv's error.html, shown when a JavaScript library failed to load.
ERROR_PAGE_TEXT = "failed to load"


def asv(directory, *args):
    # HOME points into the test directory: asv keeps its machine description in ~/.asv-machine.json.
    env = dict(os.environ, HOME=str(directory))
    command = [sys.executable, "-m", "asv", *args, "--config", str(directory / "asv.conf.json")]
    result = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def chromium():
    path = screenshot_report.find_chromium()
    if path is None:
        pytest.skip("chromium not found: install the Debian package chromium (make test-data as root)")
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory, chromium, assets):
    """Build, publish and vendor an asv report of SUITE for the current commit; return html/."""
    pytest.importorskip("asv", reason="asv is not installed (the bench extra installs it)")
    directory = tmp_path_factory.mktemp("report")
    (directory / "benchmarks").mkdir()
    (directory / "benchmarks" / "__init__.py").write_text("")
    (directory / "benchmarks" / "kmeans.py").write_text(textwrap.dedent(SUITE))
    config = {
        "version": 1, "project": "fastml", "repo": str(ROOT), "dvcs": "git",
        "branches": [git("rev-parse", "--abbrev-ref", "HEAD").strip()],
        "environment_type": "existing", "benchmark_dir": "benchmarks",
        "results_dir": "results", "html_dir": "html", "env_dir": "env",
    }
    (directory / "asv.conf.json").write_text(json.dumps(config))

    asv(directory, "machine", "--yes", "--machine", "fastml-test")
    asv(directory, "run", "--python=same", "--quick", "--machine", "fastml-test",
        "--set-commit-hash", git("rev-parse", "HEAD").strip())
    asv(directory, "publish")
    asv_offline.make_offline(directory / "html")
    return directory / "html"


def test_report_grid_shows_benchmark_names(report, chromium):
    with screenshot_report.serve(report) as base_url:
        dom = screenshot_report.dump_dom(chromium, f"{base_url}/index.html#/")
    assert ERROR_PAGE_TEXT not in dom
    for name in GRID_NAMES:
        assert f">{name}</div>" in dom


def test_report_list_shows_every_benchmark(report, chromium):
    with screenshot_report.serve(report) as base_url:
        dom = screenshot_report.dump_dom(chromium, f"{base_url}/index.html#/summarylist")
    assert ERROR_PAGE_TEXT not in dom
    # One row per parameter combination: the benchmark's link, then its parameters in a <span>.
    assert ">kmeans.KMeansSpeedup.track_time_ratio_to_naive<" in dom
    for backend in ("naive", "numpy"):
        assert f"?p-backend='{backend}'" in dom
        assert f"> ('{backend}')<" in dom


def test_report_missing_asset_shows_error_page(report, chromium, tmp_path):
    # The control for the two tests above: without jQuery, asv sends the browser to error.html.
    broken = tmp_path / "html"
    shutil.copytree(report, broken)
    (broken / "vendor" / "jquery" / "jquery.min.js").unlink()
    with screenshot_report.serve(broken) as base_url:
        dom = screenshot_report.dump_dom(chromium, f"{base_url}/index.html#/")
    assert ERROR_PAGE_TEXT in dom


def test_screenshot_script_draws_graph(report, chromium, tmp_path):
    status = screenshot_report.main(
        [str(report), "--out", str(tmp_path), "--page", SPEEDUP_PAGE, "--dump-dom",
         "--window-size", "1200,800"]
    )
    png = tmp_path / "kmeans.KMeansSpeedup.track_time_ratio_to_naive.png"
    dom = (tmp_path / "kmeans.KMeansSpeedup.track_time_ratio_to_naive.html").read_text()
    assert status == 0
    assert png_size(png) == (1200, 800)
    # flot drew the plot: its canvas and one x-axis label per backend.
    assert 'class="flot-base"' in dom
    for backend in ("naive", "numpy"):
        assert f">{backend}</div>" in dom


def test_default_pages_cover_speedup_graphs(report):
    pages = screenshot_report.default_pages(report)
    assert pages[:2] == ["", "summarylist"]
    # One commit only, so the graph plots the backends on the x-axis.
    assert SPEEDUP_PAGE in pages
    assert not any(page.startswith("kmeans.KMeansFit.") for page in pages)


def png_size(path):
    """Return (width, height) from a PNG file's header."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG file"
    return struct.unpack(">II", data[16:24])

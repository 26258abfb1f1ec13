"""The Sphinx site: the API reference lists every public name, and the plot directive works.

`make docs` builds the real site with warnings as errors. These tests build a copy of `docs/`, so
that they can add and leave out plot files without touching the working tree.
"""

import importlib
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
API_MODULES = (
    "fastml",
    "fastml.kmeans",
    "fastml.knn",
    "fastml.attention",
    "fastml.sampling",
    "fastml.bpe",
    "fastml.mlp",
    "fastml.llm",
    "fastml.distributed",
    "fastml.datasets",
    "fastml.backends",
)
# Names of the package root that have pages of their own (the subpackages) or that only
# re-export a module's function documented there.
ROOT_NAMES_DOCUMENTED_ELSEWHERE = {
    "attention", "bpe", "datasets", "kmeans", "knn", "llm", "mlp", "sampling",
}


def _api_page(module):
    return DOCS / "api" / f"{module.removeprefix('fastml.') or 'fastml'}.rst"


def _documented_names(page):
    """Return the names an API page documents: its autosummary entries and ``.. data::`` items."""
    text = page.read_text()
    names = set(re.findall(r"^\.\. data:: ([A-Za-z_]\w*)$", text, re.MULTILINE))

    in_directive = False
    for line in text.splitlines():
        if line.startswith(".. autosummary::"):
            in_directive = True
        elif in_directive and re.fullmatch(r"   [A-Za-z_][A-Za-z0-9_]*", line):
            names.add(line.strip())
        elif in_directive and line and not line.startswith("   "):
            in_directive = False
    return names


def _public_names(module_name):
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pytest.skip(f"{module_name} needs an optional dependency: {exc}")
    if hasattr(module, "__all__"):
        return set(module.__all__)
    return {
        name for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module_name
    }


@pytest.mark.parametrize("module_name", API_MODULES)
def test_api_page_lists_public_names(module_name):
    page = _api_page(module_name)
    assert page.is_file(), f"no API page {page} for {module_name}"

    listed = _documented_names(page)
    expected = _public_names(module_name)
    if module_name == "fastml":
        expected -= ROOT_NAMES_DOCUMENTED_ELSEWHERE
    missing = sorted(expected - listed)
    assert not missing, f"{page.name} does not document {missing}; add them to its autosummary"


def test_api_index_lists_every_page():
    index = (DOCS / "api" / "index.rst").read_text()
    for module_name in API_MODULES:
        stem = _api_page(module_name).stem
        assert re.search(rf"^   {re.escape(stem)}$", index, re.MULTILINE), stem


def _write_png(path, width=4, height=3):
    """Write a small valid grey PNG, without depending on an imaging library."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    """Build a copy of docs/ with the k-means plot, no kNN plot and an extra top-level page.

    Return the HTML folder.
    """
    pytest.importorskip("sphinx")
    pytest.importorskip("pydata_sphinx_theme")
    pytest.importorskip("numpydoc")
    pytest.importorskip("myst_parser")

    root = tmp_path_factory.mktemp("docs")
    source = root / "docs"
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns("_build", "generated"))
    plots = source / "_static" / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    (plots / "knn.png").unlink(missing_ok=True)
    _write_png(plots / "kmeans.png")
    (source / "extra-page-for-test.md").write_text("# Extra page\n\nA page no toctree names.\n")

    html = root / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
               str(source), str(html)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return html


def test_docs_build_without_warnings(built_site):
    for page in ("index", "getting-started", "kmeans", "api/index"):
        assert (built_site / f"{page}.html").is_file(), page
    assert (built_site / "api" / "generated" / "fastml.kmeans.fit.html").is_file()


def test_new_page_joins_navigation(built_site):
    # A page missing from every toctree is a warning, so the build above would have failed.
    index = (built_site / "index.html").read_text()
    assert 'href="extra-page-for-test.html"' in index


def test_plot_shown_when_present(built_site):
    page = (built_site / "kmeans.html").read_text()
    assert re.search(r'<img[^>]+src="_images/kmeans\.png"', page)
    assert (built_site / "_images" / "kmeans.png").is_file()


def test_plot_missing_gives_command(built_site):
    page = (built_site / "knn.html").read_text()
    assert not [src for src in re.findall(r'<img[^>]+src="([^"]+)"', page) if "knn" in src]

    # Sphinx wraps each word of inline code in a span of its own.
    text = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    assert "fastml compare knn --plot docs/_static/plots/knn.png" in text


def test_site_loads_nothing_remote(built_site):
    remote = []
    for page in built_site.rglob("*.html"):
        text = page.read_text()
        remote += re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?://[^"]+)"', text)
    assert not remote, sorted(set(remote))

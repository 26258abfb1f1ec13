"""Serve an asv HTML report on 127.0.0.1 and take screenshots of it with headless Chromium.

The screenshots show whether the page renders its benchmarks (offline, once
scripts/asv_offline.py has vendored the assets) or asv's error page.

    python scripts/screenshot_report.py                           # asv_bench/html -> asv_bench/screenshots
    python scripts/screenshot_report.py HTML_DIR --out DIR --dump-dom
    python scripts/screenshot_report.py --page summarylist --page 'kmeans.KMeansScaling.track_exponent_in_n'

Without ``--page`` it captures the benchmark grid, the benchmark list, and the graph of every
``track_`` benchmark with results whose name contains "speedup", "ratio_to_naive" or
"exponent". A page is
what follows ``#/`` in the report's address: "" (the grid), "summarylist", "regressions", or a
benchmark name with optional ``?key=value`` settings. When the report holds one commit only, a
graph page plots the benchmark's parameter ``backend`` on the x-axis (one bar per backend),
since a commit axis would show single points.

The report is served by Python's http.server on a port the system picks, because asv's page
loads its data with requests that browsers refuse for file:// addresses. Chromium runs with a
new empty profile and with its background network services off, so it contacts nothing but the
local server. ``--dump-dom`` also writes the page's DOM after its scripts ran (PAGE.html).
"""

import argparse
import contextlib
import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
HTML = REPO_ROOT / "asv_bench" / "html"
OUT = REPO_ROOT / "asv_bench" / "screenshots"
GRAPH_PATTERN = re.compile(r"speedup|ratio_to_naive|exponent")
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
# Page time that Chromium lets pass before it captures: asv fetches index.json and then each
# graph's data, and flot draws after that. Virtual time runs ahead when the page is idle.
VIRTUAL_TIME_MS = 20_000
TIMEOUT_S = 120


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html_dir", nargs="?", type=Path, default=HTML,
                        help=f"the directory asv publish wrote (default: {HTML})")
    parser.add_argument("--out", type=Path, default=OUT,
                        help=f"where the PNG files go (default: {OUT})")
    parser.add_argument("--page", action="append", dest="pages", metavar="PAGE",
                        help="a page to capture, as written after '#/' (repeatable)")
    parser.add_argument("--dump-dom", action="store_true",
                        help="also write each page's DOM after its scripts ran, as PAGE.html")
    parser.add_argument("--window-size", default="1400,900", metavar="W,H",
                        help="browser window size in pixels (default: 1400,900)")
    args = parser.parse_args(argv)

    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("chromium not found: install the Debian package chromium "
                         "(apt-get install chromium) and run again")
    if not (args.html_dir / "index.html").is_file():
        raise SystemExit(f"{args.html_dir / 'index.html'} not found: publish the report first "
                         "(make bench, or asv publish)")
    pages = args.pages if args.pages is not None else default_pages(args.html_dir)
    args.out.mkdir(parents=True, exist_ok=True)

    with serve(args.html_dir) as base_url:
        for page in pages:
            url = f"{base_url}/index.html#/{page}"
            png = args.out / f"{file_stem(page)}.png"
            screenshot(chromium, url, png, args.window_size)
            print(f"{png}  <-  {url}")
            if args.dump_dom:
                dom = args.out / f"{file_stem(page)}.html"
                dom.write_text(dump_dom(chromium, url, args.window_size), encoding="utf-8")
                print(f"{dom}")
    return 0


def find_chromium():
    """Return the path of the Chromium executable, or None."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def default_pages(html_dir):
    """Return the grid, the list, and the speedup and exponent graphs that have results."""
    index = json.loads((Path(html_dir) / "index.json").read_text())
    single_commit = len(index.get("revision_to_hash", {})) <= 1
    # asv publish writes graphs/summary/NAME.json only for a benchmark with results.
    with_results = {path.stem for path in (Path(html_dir) / "graphs" / "summary").glob("*.json")}
    pages = ["", "summarylist"]
    for name, info in sorted(index["benchmarks"].items()):
        method = name.split(".")[-1]
        if name in with_results and method.startswith("track_") and GRAPH_PATTERN.search(method):
            axis = single_commit and "backend" in info.get("param_names", [])
            pages.append(name + ("?x-axis=backend" if axis else ""))
    return pages


def file_stem(page):
    """Return a file name for `page`: "grid" for the grid, else the page with unsafe characters replaced."""
    name = page.split("?")[0]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "grid"


@contextlib.contextmanager
def serve(directory):
    """Serve `directory` over HTTP on 127.0.0.1 and a free port; yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        # One line per request would bury the script's own output; errors still reach the browser.
        pass


def screenshot(chromium, url, png, window_size="1400,900"):
    """Load `url` in headless Chromium and save a screenshot of the window to `png`."""
    _chromium(chromium, [f"--screenshot={png}", f"--window-size={window_size}", url])
    if not png.is_file():
        raise SystemExit(f"chromium wrote no screenshot for {url}")


def dump_dom(chromium, url, window_size="1400,900"):
    """Load `url` in headless Chromium and return its DOM after the scripts ran, as HTML."""
    return _chromium(chromium, ["--dump-dom", f"--window-size={window_size}", url])


def _chromium(chromium, arguments):
    # A new empty profile each time: nothing from an earlier run (cache, cookies) changes the page.
    with tempfile.TemporaryDirectory(prefix="fastml-chromium-") as profile:
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                   f"--virtual-time-budget={VIRTUAL_TIME_MS}", *arguments]
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S)
    if result.returncode != 0:
        raise SystemExit(f"chromium failed with exit status {result.returncode}:\n{result.stderr}")
    return result.stdout


if __name__ == "__main__":
    sys.exit(main())

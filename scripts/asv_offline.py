"""Make an asv HTML report render without internet: vendor its CDN assets and rewrite the page.

``asv publish`` (asv 0.6.6) writes an index.html that loads jQuery, flot and four flot plugins,
stupidtable, blueimp-md5 and Bootstrap from public CDNs, each with an integrity hash. Offline,
the first failed load sends the browser to asv's error.html. This script copies the same
libraries from npm packages into ``vendor/`` beside the report and points the page at them:

    python scripts/asv_offline.py HTML_DIR        # vendor the assets into HTML_DIR, rewrite the page
    python scripts/asv_offline.py --fetch-only    # only download and check the packages

The packages are downloaded once with ``npm pack`` (no install, no Node.js code runs), checked
against the tarball hashes pinned in PACKAGES, and unpacked into ``data/asv_assets``.

Where the local file is byte-identical to the CDN file, the page keeps the integrity attribute,
so the browser still verifies it. That holds for jQuery, flot-orderbars, blueimp-md5 and
Bootstrap. The integrity attribute is dropped for the other five, because:

- flot 0.8.3 (the version asv requests): the CDN serves its own minified build, and the npm
  package ships the unminified source of the same release;
- stupidtable: asv requests 1.0.1, which npm does not have, so 1.1.3 is used. asv calls only
  ``stupidtable()`` and ``stupidsort(direction)``, which 1.1.3 keeps.

A CDN script or stylesheet that this table does not know (a newer asv) is an error, so the page
is never left half offline.
"""

import argparse
import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE = REPO_ROOT / "data" / "asv_assets"
VENDOR = "vendor"

# npm spec -> (npm's SHA-512 integrity of the tarball, {file in the tarball: path under vendor/})
PACKAGES = {
    "jquery@3.3.1": (
        "sha512-Ubldcmxp5np52/ENotGxlLe6aGMvmF4R8S6tZjsP6Knsaxd/xp3Zrh50cG93lR6nPXyUFwzN3ZSOQI0wRJNdGg==",
        {"package/dist/jquery.min.js": "jquery/jquery.min.js"},
    ),
    "flot@0.8.3": (
        "sha512-xg2otcTJDvS+ERK+my4wxG/ASq90QURXtoM4LhacCq0jQW2jbyjdttbRNqU2cPykrpMvJ6b2uSp6SAgYAzj9tQ==",
        {
            "package/jquery.flot.js": "flot/jquery.flot.js",
            "package/jquery.flot.time.js": "flot/jquery.flot.time.js",
            "package/jquery.flot.selection.js": "flot/jquery.flot.selection.js",
            "package/jquery.flot.categories.js": "flot/jquery.flot.categories.js",
            "package/LICENSE.txt": "flot/LICENSE.txt",
        },
    ),
    "flot-orderbars@1.0.0": (
        "sha512-Jv51fvzevUjNXEeozpwEKfPjhiZhfiJddv0WHjduUTCmSF+7T5K7C9c9Y1wIVmUhDBv5fLMjgbwKecT0GIKPZA==",
        {"package/js/jquery.flot.orderBars.js": "flot/jquery.flot.orderBars.js"},
    ),
    "stupid-table-plugin@1.1.3": (
        "sha512-2Vk7XouQPxUQPRe9w0Fu7ZZ8kHLK7rDoLMsCgtKxRNJ7f4dSOGvW9CkHsq5wD6QsaEnWoyLBYH3xOEsrK3yWBg==",
        {
            "package/stupidtable.min.js": "stupidtable/stupidtable.min.js",
            "package/LICENSE": "stupidtable/LICENSE",
        },
    ),
    "blueimp-md5@2.19.0": (
        "sha512-DRQrD6gJyy8FbiE4s+bDoXS9hiW3Vbx5uCdwvcCf3zLHL+Iv7LtGHLpr+GZV8rHG8tK766FGYBwRbu8pELTt+w==",
        {
            "package/js/md5.min.js": "blueimp-md5/md5.min.js",
            "package/LICENSE.txt": "blueimp-md5/LICENSE.txt",
        },
    ),
    "bootstrap@3.1.1": (
        "sha512-TAzqS8E/ISpVHP29gYhy+1NSV+FJwApDVQhDfgLYsIuUDJiqJzH2DfORN5tiu+Ie2iBLrzEG34t4Rf465cigqg==",
        {
            "package/dist/js/bootstrap.min.js": "bootstrap/js/bootstrap.min.js",
            "package/dist/css/bootstrap.min.css": "bootstrap/css/bootstrap.min.css",
            # bootstrap.min.css refers to the glyph font as ../fonts/glyphicons-halflings-regular.*
            **{
                f"package/dist/fonts/glyphicons-halflings-regular.{ext}":
                    f"bootstrap/fonts/glyphicons-halflings-regular.{ext}"
                for ext in ("eot", "svg", "ttf", "woff")
            },
            "package/LICENSE": "bootstrap/LICENSE",
        },
    ),
}

# CDN address in asv 0.6.6's index.html -> path under vendor/
ASSETS = {
    "https://code.jquery.com/jquery-3.3.1.min.js": "jquery/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.min.js": "flot/jquery.flot.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.time.min.js":
        "flot/jquery.flot.time.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.selection.min.js":
        "flot/jquery.flot.selection.js",
    "https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot.categories.min.js":
        "flot/jquery.flot.categories.js",
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js":
        "flot/jquery.flot.orderBars.js",
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js":
        "stupidtable/stupidtable.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js":
        "blueimp-md5/md5.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js":
        "bootstrap/js/bootstrap.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css":
        "bootstrap/css/bootstrap.min.css",
}

# A <script> or <link> start tag, and the attributes of it that this script reads or removes.
TAG = re.compile(r"<(script|link)\b[^>]*>", re.IGNORECASE)
URL_ATTRIBUTE = re.compile(r'\b(src|href)="([^"]*)"')
INTEGRITY = re.compile(r'\s+integrity="([^"]*)"')
# Only meaningful for a cross-origin CDN request; a same-origin file needs neither.
CDN_ONLY = re.compile(r'\s+(crossorigin|referrerpolicy)="[^"]*"')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html_dir", nargs="?", type=Path, help="the directory asv publish wrote")
    parser.add_argument("--fetch-only", action="store_true",
                        help="download and check the packages into the cache, then stop")
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help=f"where the unpacked packages are kept (default: {CACHE})")
    args = parser.parse_args(argv)
    if args.html_dir is None and not args.fetch_only:
        parser.error("give HTML_DIR (the directory asv publish wrote) or --fetch-only")

    fetch_assets(args.cache)
    if args.fetch_only:
        print(f"asv report assets are in {args.cache}")
        return 0
    replaced = make_offline(args.html_dir, args.cache)
    print(f"{args.html_dir / 'index.html'}: {replaced} CDN assets now load from {VENDOR}/")
    return 0


# ---- the packages ------------------------------------------------------------------------------

def fetch_assets(cache=CACHE):
    """Download and unpack every package of PACKAGES into `cache` unless its files are there."""
    for spec, (integrity, files) in PACKAGES.items():
        if all((cache / VENDOR / path).is_file() for path in files.values()):
            continue
        with tempfile.TemporaryDirectory() as scratch:
            tarball = npm_pack(spec, Path(scratch))
            check_integrity(tarball.read_bytes(), integrity, spec)
            unpack(tarball, files, cache / VENDOR)


def npm_pack(spec, directory):
    """Download the tarball of npm package `spec` into `directory` and return its path."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(
            "npm not found: the asv report's JavaScript and CSS come from npm packages; "
            "install Node.js (Debian package nodejs, or npm) and run again"
        )
    command = [npm, "pack", spec, "--json", "--pack-destination", str(directory)]
    result = subprocess.run(command, cwd=directory, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"`npm pack {spec}` failed with exit status {result.returncode}:\n"
                         + result.stderr)
    return directory / json.loads(result.stdout)[0]["filename"]


def check_integrity(data, integrity, name):
    """Raise unless `data` has the subresource-integrity hash `integrity` ("sha512-<base64>")."""
    algorithm, _, expected = integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if actual != expected:
        raise SystemExit(f"{name}: {algorithm} hash {actual} does not match the pinned {expected}; "
                         "the package changed or the download is corrupt")


def unpack(tarball, files, destination):
    """Copy the members `files` (member -> relative path) of `tarball` under `destination`."""
    with tarfile.open(tarball) as archive:
        for member, path in files.items():
            target = destination / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.extractfile(member).read())


# ---- the page ----------------------------------------------------------------------------------

def make_offline(html_dir, cache=CACHE):
    """Copy the assets into `html_dir`/vendor and rewrite its index.html; return how many changed.

    Running it again on a rewritten page changes nothing and returns 0.
    """
    html_dir = Path(html_dir)
    shutil.copytree(cache / VENDOR, html_dir / VENDOR, dirs_exist_ok=True)
    page = html_dir / "index.html"
    text, replaced = rewrite_page(page.read_text(encoding="utf-8"), html_dir)
    page.write_text(text, encoding="utf-8")
    return replaced


def rewrite_page(text, html_dir):
    """Return `text` with every known CDN asset pointed at vendor/, and the number replaced.

    Raises SystemExit naming any script or stylesheet still loaded from another host.
    """
    replaced = 0
    unknown = []

    def rewrite_tag(match):
        nonlocal replaced
        tag = match.group(0)
        url = URL_ATTRIBUTE.search(tag)
        if url is None or not url.group(2).startswith(("http://", "https://", "//")):
            return tag
        if url.group(2) not in ASSETS:
            if _loads_resource(tag):
                unknown.append(url.group(2))
            return tag
        replaced += 1
        return _point_at_local(tag, url, ASSETS[url.group(2)], html_dir)

    text = TAG.sub(rewrite_tag, text)
    if unknown:
        raise SystemExit(
            "the asv page loads assets that scripts/asv_offline.py does not vendor (a newer "
            "asv?): " + ", ".join(unknown) + "; add them to PACKAGES and ASSETS"
        )
    return text, replaced


def _loads_resource(tag):
    # A <link> loads something only as a stylesheet (or icon); rel="alternate" is a plain link.
    return tag.lower().startswith("<script") or 'rel="stylesheet"' in tag.lower()


def _point_at_local(tag, url, path, html_dir):
    """Return `tag` loading vendor/`path`, keeping its integrity only if the local file matches."""
    tag = tag[: url.start(2)] + f"{VENDOR}/{path}" + tag[url.end(2):]
    integrity = INTEGRITY.search(tag)
    if integrity and not _matches(html_dir / VENDOR / path, integrity.group(1)):
        tag = INTEGRITY.sub("", tag)
    return CDN_ONLY.sub("", tag)


def _matches(path, integrity):
    algorithm, _, expected = integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, path.read_bytes()).digest()).decode()
    return actual == expected


if __name__ == "__main__":
    sys.exit(main())

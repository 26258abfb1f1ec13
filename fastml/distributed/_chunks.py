"""Row-sharded Dask arrays: conversion, the per-chunk checks, and .npy files read by memory map."""

import contextlib
import uuid
import warnings

import numpy as np
import dask
import dask.array as da

from fastml._validation import FLOAT_DTYPES, check_array, check_int

# Target size of a chunk when a NumPy array is split for the workers.
DEFAULT_CHUNK_BYTES = 64 << 20


def read_npy(path, chunk_rows):
    """Open a 2-D .npy file as a Dask array of `chunk_rows` rows per chunk, read by memory map.

    Each chunk is a task that maps the file (``np.load(mmap_mode="r")``) and copies its rows,
    so a worker keeps in memory the chunks of the tasks it runs, not the whole file. The
    workers must see the file at the same path.
    """
    chunk_rows = check_int(chunk_rows, "chunk_rows", min_value=1)
    header = np.load(path, mmap_mode="r")
    if header.ndim != 2:
        raise ValueError(f"{path} contains an array of shape {header.shape}; expected 2-D")
    n_rows, n_features = header.shape
    path = str(path)

    chunks = []
    for start in range(0, n_rows, chunk_rows):
        stop = min(start + chunk_rows, n_rows)
        rows = dask.delayed(_load_rows, pure=True)(path, start, stop)
        chunks.append(da.from_delayed(rows, shape=(stop - start, n_features), dtype=header.dtype))
    return da.concatenate(chunks, axis=0)


def _load_rows(path, start, stop):
    return np.array(np.load(path, mmap_mode="r")[start:stop])


def as_row_chunks(X, name, chunk_rows=None):
    """Return `X` as a 2-D float Dask array with one chunk along the features.

    A NumPy array (or any array-like) is validated as on a single machine and split into chunks
    of `chunk_rows` rows, about DEFAULT_CHUNK_BYTES each by default. A Dask array keeps its
    chunks; its values are checked later, chunk by chunk, in the tasks (`check_chunk`).
    """
    if not isinstance(X, da.Array):
        X = check_array(X, name)
        if chunk_rows is None:
            chunk_rows = max(1, DEFAULT_CHUNK_BYTES // (X.shape[1] * X.itemsize))
        return split_rows(X, check_int(chunk_rows, "chunk_rows", min_value=1))

    if X.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (n_samples, n_features), got shape {X.shape}"
        )
    if any(np.isnan(size) for size in X.shape):
        raise ValueError(
            f"{name} has unknown chunk sizes {X.chunks}; call {name}.compute_chunk_sizes() first"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(
            f"{name} has shape {X.shape}; it needs at least one sample and one feature"
        )
    if X.numblocks[1] != 1:
        raise ValueError(
            f"{name} is split along the features into chunks {X.chunks[1]}; every chunk must "
            f"contain whole rows: rechunk with {name}.rechunk({{1: -1}})"
        )
    if X.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {X.dtype}")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"{name} must contain numbers, got dtype {X.dtype}")
    if X.dtype not in FLOAT_DTYPES:
        X = X.astype(np.float64)
    if chunk_rows is not None:
        X = X.rechunk((check_int(chunk_rows, "chunk_rows", min_value=1), -1))
    return X


def split_rows(X, chunk_rows):
    """Return the in-memory array `X` as a Dask array whose chunks are slices of `X`.

    Each slice is a literal of the graph, so a worker receives only its own chunks, and the
    scheduler can send a chunk again when a worker dies. ``da.from_array`` would instead send
    the whole array to every worker that reads a chunk. The keys are random, so that no array
    is hashed and two calls never share keys.
    """
    prefix = f"fastml-rows-{uuid.uuid4().hex}"
    chunks = []
    for index, start in enumerate(range(0, X.shape[0], chunk_rows)):
        rows = X[start : start + chunk_rows]
        piece = dask.delayed(rows, name=f"{prefix}-{index}")
        chunks.append(da.from_delayed(piece, shape=rows.shape, dtype=X.dtype))
    return da.concatenate(chunks, axis=0)


@contextlib.contextmanager
def large_graph_allowed():
    """Silence distributed's "Sending large graph" warning inside the block.

    A NumPy input travels inside the task graph on purpose: the scheduler then keeps the recipe
    of every chunk, so a chunk lost with a worker is rebuilt. Data scattered to the workers
    (``Client.scatter``) would be lost with them.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        yield


def row_offsets(X):
    """Return the first global row index of each chunk of `X`, and the total after the last."""
    return np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(np.int64)


def row_blocks(X):
    """Return the chunks of `X` as a list of Delayed objects, one per row chunk."""
    return list(X.to_delayed()[:, 0])


def check_chunk(block, name, index, offset, dtype):
    """Raise ``ValueError`` if a computed chunk breaks the contract that its array declares.

    Returns the chunk C-contiguous. Dask takes the dtype from the array's metadata, so a chunk
    built by ``from_delayed`` or ``map_blocks`` can have another one. The kernels would then
    compile or round differently on that chunk.
    """
    rows = f"{name} chunk {index} (rows {offset}:{offset + block.shape[0]})"
    if block.dtype != dtype:
        raise ValueError(
            f"{rows} has dtype {block.dtype}, but {name} declares {dtype}; every chunk must have "
            f"the declared dtype: cast each chunk, e.g. with "
            f"{name}.map_blocks(lambda chunk: chunk.astype({str(dtype)!r}))"
        )
    finite = np.isfinite(block)
    if not finite.all():
        row, column = (int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"{name} contains NaN or infinity (first at index {(offset + row, column)}: "
            f"{block[row, column]}); remove or impute non-finite values first"
        )
    return np.ascontiguousarray(block)

"""Brute-force kNN over a training set sharded by rows, the single-machine search in each task.

Each task searches one training chunk for the k' = min(k, chunk rows) nearest rows of every
query with the backend's ``kneighbors`` (its distances are the reference formula's, bit for bit,
whatever the chunk), and shifts the indices by the chunk's first global row. The per-chunk
lists are merged pairwise in a tree of tasks: concatenate, sort each query's row by (distance,
global index), keep k. Because the distances of a pair do not depend on the chunk, the merged
result equals the single-machine one, ties in ascending global index included.

Cost: O(n_query n_train d / workers) in the search tasks, O(n_query k log k) per merge, and each
task keeps one training chunk, all queries and (n_query, k) results in memory.
"""

import dask
import numpy as np

from fastml import backends
from fastml._threads import blas_threads, numba_threads
from fastml._validation import check_array, check_int, check_option
from fastml.distributed._chunks import (
    as_row_chunks,
    check_chunk,
    large_graph_allowed,
    row_blocks,
    row_offsets,
)
from fastml.distributed._client import connect
from fastml.knn._api import METRICS, check_magnitude

SEARCH_BACKENDS = ("auto", "numpy", "numba", "cython")
# Partial results merged by one task of the reduction tree.
MERGE_FAN_IN = 8


def kneighbors(
    X_train, X_query, k, *, metric="euclidean", chunk_rows=None, backend="auto", client=None
):
    """Find the k nearest rows of a row-sharded `X_train` for every row of `X_query`.

    Returns what ``fastml.knn.kneighbors`` returns on the same data: ``(distances, indices)``,
    NumPy arrays of shape (n_query, k), equal distances in ascending global training index.

    Parameters
    ----------
    X_train : dask.array.Array or array-like of shape (n_train, n_features)
        Chunked by rows only; a NumPy array is split into `chunk_rows` rows per chunk.
    X_query : array-like of shape (n_query, n_features)
        In memory; sent once to the workers. If its dtype differs from X_train's, both are
        computed in float64, as on a single machine.
    k, metric
        As in ``fastml.knn.kneighbors``.
    backend : {"auto", "numpy", "numba", "cython"}
    client : None, distributed.Client or str
        See ``fastml.distributed.connect``.
    """
    X_train = as_row_chunks(X_train, "X_train", chunk_rows)
    X_query = check_array(X_query, "X_query", min_samples=0)
    n_train, n_features = X_train.shape
    if X_query.shape[1] != n_features:
        raise ValueError(
            f"X_query has {X_query.shape[1]} features but X_train has {n_features}; they must match"
        )
    k = check_int(k, "k", min_value=1)
    if k > n_train:
        raise ValueError(
            f"k={k} is greater than the number of training rows n_train={n_train}; "
            f"k must be between 1 and {n_train}"
        )
    check_option(metric, "metric", METRICS)
    check_magnitude(X_query, "X_query", metric)
    backend = _check_backend(backend)

    train_dtype = X_train.dtype
    work_dtype = train_dtype if X_query.dtype == train_dtype else np.dtype(np.float64)
    X_query = X_query.astype(work_dtype, copy=False)
    if X_query.shape[0] == 0:
        return np.empty((0, k), dtype=work_dtype), np.empty((0, k), dtype=np.intp)

    with connect(client) as dask_client:
        # A key of its own (hash=False). With a content hash, a second call on the same
        # queries could depend on the key that the first call is releasing, and fail with
        # "lost dependencies".
        queries = dask_client.scatter(X_query, broadcast=True, hash=False)
        offsets = row_offsets(X_train)
        partial = [
            dask.delayed(_search_chunk, pure=True)(
                block, queries, k, metric, backend, index, int(offsets[index]), train_dtype
            )
            for index, block in enumerate(row_blocks(X_train))
        ]
        merged = _merge_tree(partial, k)
        with large_graph_allowed():
            distances, indices = dask_client.compute(merged).result()
    return distances, indices


def _check_backend(backend):
    if backend not in SEARCH_BACKENDS:
        raise ValueError(
            f"invalid backend={backend!r} for distributed kNN; expected one of "
            f"{list(SEARCH_BACKENDS)} (the naive backend is too slow to shard)"
        )
    return backends.resolve("knn", backend)


def _merge_tree(partial, k):
    """Reduce the per-chunk results in chunk order, MERGE_FAN_IN at a time, to one Delayed."""
    while len(partial) > 1:
        partial = [
            dask.delayed(_merge, pure=True)(partial[start : start + MERGE_FAN_IN], k)
            for start in range(0, len(partial), MERGE_FAN_IN)
        ]
    return partial[0]


def _search_chunk(block, queries, k, metric, backend, index, offset, dtype):
    """Return the chunk's nearest rows of every query, with global indices (int64)."""
    block = check_chunk(block, "X_train", index, offset, dtype)
    check_magnitude(block, "X_train", metric)
    block = block.astype(queries.dtype, copy=False)

    module = backends.load("knn", backend)
    with blas_threads(1), numba_threads(1):
        distances, indices = module.kneighbors(block, queries, min(k, block.shape[0]), metric, 1)
    return distances, indices.astype(np.int64) + offset


def _merge(results, k):
    """Merge per-chunk ``(distances, indices)`` into the k best per query by (distance, index)."""
    distances = np.concatenate([result[0] for result in results], axis=1)
    indices = np.concatenate([result[1] for result in results], axis=1)
    # lexsort sorts by the last key first: distance, then global index.
    order = np.lexsort((indices, distances), axis=1)[:, :k]
    return (
        np.take_along_axis(distances, order, axis=1),
        np.take_along_axis(indices, order, axis=1).astype(np.intp),
    )

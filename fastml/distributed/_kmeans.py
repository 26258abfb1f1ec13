"""k-means on a Dask array sharded by rows, with the single-machine kernels inside each task.

One Lloyd iteration is one pass of tasks, one per row chunk. A task calls the backend's
``accumulate`` kernel (Numba or Cython release the GIL) on its chunk and returns the chunk's
float64 weighted sums (k x d), weights (k) and a 128-bit BLAKE2b digest of its labels. The client
adds the partial sums in chunk order and runs the O(k d) steps of the single-machine loop
(``fastml.kmeans._lloyd``): empty-cluster relocation, center update, convergence test. The labels
never leave the workers until the final pass, so an iteration moves O(chunks k d) numbers, not
O(n). The labels "repeat" when every chunk's digest repeats; two different label arrays share a
digest with probability about 2^-128.

An empty cluster costs one more pass: each chunk returns its farthest samples (distance to their
center, ties by ascending global index), and the client merges them into the single-machine
order. Cost per iteration: O(n k d / workers) in the tasks, O(chunks k d) on the client.

Initialization: greedy k-means++ (the single-machine kernel) on a uniform sample of
`init_sample_size` rows, drawn from the same seed. k-means|| would read the whole data in about
five more passes and recluster its oversampled candidates; the sample costs one gather of m rows,
and when n_samples <= m it is the whole data set, so the centers equal the single-machine ones.
"""

import hashlib
from typing import NamedTuple

import dask
import dask.array as da
import numpy as np

from fastml import backends
from fastml._threads import blas_threads, numba_threads
from fastml._validation import check_float, check_int, check_random_state, check_sample_weight
from fastml.distributed._chunks import (
    as_row_chunks,
    check_chunk,
    large_graph_allowed,
    row_blocks,
    row_offsets,
)
from fastml.distributed._client import connect
from fastml.kmeans._api import KMeansResult, _check_init, _warn_if_degenerate, kmeans_plusplus
from fastml.kmeans._common import TIE_RTOL
from fastml.kmeans._lloyd import update_centers

# Backends with the per-chunk kernels ``accumulate`` and ``assign``. The naive backend keeps its
# own Lloyd loop (it is the oracle) and has no such kernel.
CHUNK_BACKENDS = ("auto", "numpy", "numba", "cython")

# Samples per cluster in the default k-means++ sample, and its smallest size.
SAMPLES_PER_CLUSTER = 100
MIN_INIT_SAMPLE = 10_000


class _Summary(NamedTuple):
    """Statistics of the checking pass: the input of the magnitude check and the scale of `tol`."""

    max_abs: float
    mean_variance: float  # mean over features of the per-feature variance, float64


def fit_kmeans(
    X,
    n_clusters,
    *,
    init="k-means++",
    n_init="auto",
    max_iter=300,
    tol=1e-4,
    sample_weight=None,
    random_state=None,
    init_sample_size=None,
    chunk_rows=None,
    backend="auto",
    client=None,
):
    """Cluster a row-sharded `X` into `n_clusters` groups with Lloyd's algorithm on Dask.

    The semantics are those of ``fastml.kmeans.fit``: the same tolerance, empty-cluster
    relocation, tie rule (the lower center index) and final labels. Given the same initial
    centers, the labels equal the single-machine ones wherever rounding does not decide them:
    the partial sums are added in chunk order, so the centers can differ in the last bits.

    Parameters
    ----------
    X : dask.array.Array or array-like of shape (n_samples, n_features)
        Chunked by rows only. A NumPy array is split into `chunk_rows` rows per chunk and kept
        in the workers' memory for the fit. A Dask array is used as it is: one built by
        ``read_npy`` is read again from its file in every pass, ``X.persist()`` keeps it in memory.
    n_clusters, n_init, max_iter, tol, random_state
        As in ``fastml.kmeans.fit``.
    init : {"k-means++", "random"} or array-like of shape (n_clusters, n_features)
        "k-means++" runs on a uniform sample of `init_sample_size` rows (see the module notes).
    sample_weight : dask.array.Array or array-like of shape (n_samples,), optional
    init_sample_size : int, optional
        Rows of the k-means++ sample; ``max(10000, 100 * n_clusters)`` by default.
    chunk_rows : int, optional
        Rows per chunk, to rechunk `X`.
    backend : {"auto", "numpy", "numba", "cython"}
        The kernel that each task runs, on one thread.
    client : None, distributed.Client or str
        See ``fastml.distributed.connect``.

    Returns
    -------
    KMeansResult
        ``(centers, labels, inertia, n_iter)``; the labels are a NumPy array.
    """
    is_dask = isinstance(X, da.Array)
    X = as_row_chunks(X, "X", chunk_rows)
    n_samples = X.shape[0]
    n_clusters = check_int(n_clusters, "n_clusters", min_value=1)
    if n_clusters > n_samples:
        raise ValueError(f"n_samples={n_samples} should be >= n_clusters={n_clusters}")
    init, n_init = _check_init(init, n_init, n_clusters, X)
    max_iter = check_int(max_iter, "max_iter", min_value=1)
    tol = check_float(tol, "tol", min_value=0.0)
    rng = check_random_state(random_state)
    if init_sample_size is None:
        init_sample_size = max(MIN_INIT_SAMPLE, SAMPLES_PER_CLUSTER * n_clusters)
    init_sample_size = check_int(init_sample_size, "init_sample_size", min_value=n_clusters)
    backend = _check_backend(backend)
    weights = _weight_chunks(sample_weight, X)

    with connect(client) as dask_client:
        # In-memory inputs are sent once, rather than with the graph of every pass.
        with large_graph_allowed():
            if not is_dask:
                X = dask_client.persist(X)
            if weights is not None and not isinstance(sample_weight, da.Array):
                weights = dask_client.persist(weights)
        summary = _summarize(dask_client, X, weights)
        _check_magnitude(summary.max_abs, X)
        scaled_tol = summary.mean_variance * tol if tol > 0 else 0.0

        best = None
        for _ in range(n_init):
            centers = _initial_centers(
                dask_client, X, weights, n_clusters, init, rng, init_sample_size, backend
            )
            run = _lloyd(dask_client, X, weights, centers, max_iter, scaled_tol, backend)
            # A later run must be lower by more than rounding, as in the single-machine fit.
            if best is None or run.inertia * (1 + TIE_RTOL) < best.inertia:
                best = run

    _warn_if_degenerate(best.labels, n_clusters)
    return best


def _check_backend(backend):
    if backend not in CHUNK_BACKENDS:
        raise ValueError(
            f"invalid backend={backend!r} for distributed k-means; expected one of "
            f"{list(CHUNK_BACKENDS)} (the naive backend has no per-chunk kernel)"
        )
    # Resolved here, so that a backend missing on this machine fails before any task runs.
    return backends.resolve("kmeans", backend)


def _weight_chunks(sample_weight, X):
    """Return the weights as a Dask array chunked like the rows of `X`, or None for unit weights."""
    if sample_weight is None:
        return None
    n_samples = X.shape[0]
    if not isinstance(sample_weight, da.Array):
        weights = check_sample_weight(sample_weight, n_samples, X.dtype)
        return da.from_array(weights, chunks=(X.chunks[0],), name=False)
    if sample_weight.shape != (n_samples,):
        raise ValueError(
            f"sample_weight has shape {sample_weight.shape}; expected ({n_samples},) to match X"
        )
    return sample_weight.astype(X.dtype).rechunk((X.chunks[0],))


def _parts(X, weights):
    """Return one ``(block, weight_block, index, offset)`` tuple per row chunk."""
    blocks = row_blocks(X)
    weight_blocks = [None] * len(blocks) if weights is None else list(weights.to_delayed())
    offsets = row_offsets(X)
    return [
        (block, weight, index, int(offsets[index]))
        for index, (block, weight) in enumerate(zip(blocks, weight_blocks))
    ]


def _compute(client, tasks):
    return client.gather(client.compute(tasks))


# ---- one pass of checks and statistics --------------------------------------------------------

def _summarize(client, X, weights):
    tasks = [
        dask.delayed(_summarize_chunk, pure=True)(block, weight, index, offset, X.dtype)
        for block, weight, index, offset in _parts(X, weights)
    ]
    results = _compute(client, tasks)

    # Chan, Golub and LeVeque's pairwise update: combine (count, mean, M2) chunk by chunk.
    count, mean, m2 = 0, np.zeros(X.shape[1]), np.zeros(X.shape[1])
    positive = 0
    for chunk_count, chunk_mean, chunk_m2, _, chunk_positive in results:
        total = count + chunk_count
        delta = chunk_mean - mean
        mean = mean + delta * (chunk_count / total)
        m2 = m2 + chunk_m2 + delta * delta * (count * chunk_count / total)
        count = total
        positive += chunk_positive
    if positive == 0:
        raise ValueError("sample_weight must contain at least one positive weight; all are zero")
    max_abs = max(result[3] for result in results)
    return _Summary(max_abs=max_abs, mean_variance=float(np.mean(m2 / count)))


def _summarize_chunk(block, weight, index, offset, dtype):
    """Check one chunk and return its statistics.

    They are the row count, the float64 mean and M2 per feature, the largest |x| and the count
    of positive weights.
    """
    block = check_chunk(block, "X", index, offset, dtype)
    positive = block.shape[0]
    if weight is not None:
        _check_weight_chunk(weight, offset)
        positive = int(np.count_nonzero(weight > 0))
    mean = block.mean(axis=0, dtype=np.float64)
    centered = block - mean
    m2 = np.einsum("ij,ij->j", centered, centered)
    return block.shape[0], mean, m2, float(np.abs(block).max()), positive


def _check_weight_chunk(weight, offset):
    bad = np.flatnonzero(~np.isfinite(weight) | (weight < 0))
    if bad.size:
        index = int(bad[0])
        raise ValueError(
            f"sample_weight must be finite and non-negative, got {weight[index]} at index "
            f"{offset + index}"
        )


def _check_magnitude(max_abs, X):
    """Reject values whose squared norms overflow the dtype, as the single-machine fit does."""
    limit = np.sqrt(np.finfo(X.dtype).max / (4 * X.shape[1]))
    if max_abs > limit:
        raise ValueError(
            f"X contains values up to {max_abs:.3g}, too large for {X.dtype} distances (limit "
            f"{limit:.3g} for {X.shape[1]} features); rescale X or use float64"
        )


# ---- initialization ---------------------------------------------------------------------------

def _initial_centers(client, X, weights, n_clusters, init, rng, sample_size, backend):
    """Return the initial centers.

    When n_samples <= `sample_size`, `rng` is consumed as the single-machine fit consumes it.
    """
    if isinstance(init, np.ndarray):
        return init.copy()

    n_samples = X.shape[0]
    if init == "random":
        rows = np.sort(_choose_rows(client, weights, n_samples, n_clusters, rng, init))
        return _take_rows(client, X, rows)

    if n_samples <= sample_size:
        sample = _compute(client, [X])[0]
        sample_weight = None if weights is None else _compute(client, [weights])[0]
    else:
        rows = np.sort(_choose_rows(client, weights, n_samples, sample_size, rng, init, True))
        sample = _take_rows(client, X, rows)
        sample_weight = None if weights is None else _take_rows(client, weights, rows)
    centers, _ = kmeans_plusplus(
        sample, n_clusters, sample_weight=sample_weight, random_state=rng, backend=backend
    )
    return centers


def _choose_rows(client, weights, n_samples, size, rng, init, allow_fewer=False):
    """Draw `size` distinct rows of positive weight, as ``rng.choice`` over the candidates.

    With `allow_fewer`, fewer candidates than `size` are all returned, and nothing is drawn.
    """
    if weights is None:
        # Same draws as rng.choice(np.arange(n_samples), ...) without the O(n) index array.
        return rng.choice(n_samples, size=size, replace=False)

    # NOTE: the candidate indices are gathered on the client, 8 bytes per positive weight.
    candidates = _compute(client, [da.flatnonzero(weights > 0)])[0]
    if candidates.size <= size and allow_fewer:
        return candidates
    if candidates.size < size:
        raise ValueError(
            f'init="{init}" needs n_clusters={size} samples of positive weight, but sample_weight '
            f'has {candidates.size}; use init="k-means++"'
        )
    return rng.choice(candidates, size=size, replace=False)


def _take_rows(client, X, rows):
    return _compute(client, [X[rows]])[0]


# ---- Lloyd iterations -------------------------------------------------------------------------

def _lloyd(client, X, weights, centers, max_iter, tol, backend):
    """Run Lloyd iterations from `centers`; return a KMeansResult (see fastml.kmeans._lloyd)."""
    parts = _parts(X, weights)
    n_clusters, n_features = centers.shape
    previous_digests = None

    for n_iter in range(1, max_iter + 1):
        tasks = [
            dask.delayed(_accumulate_chunk, pure=True)(block, weight, centers, backend)
            for block, weight, _, _ in parts
        ]
        results = _compute(client, tasks)

        # Partial sums in chunk order, so that the result does not depend on task timing.
        sums = np.zeros((n_clusters, n_features))
        cluster_weights = np.zeros(n_clusters)
        for chunk_sums, chunk_weights, _ in results:
            sums += chunk_sums
            cluster_weights += chunk_weights
        digests = [digest for _, _, digest in results]

        empty = np.flatnonzero(cluster_weights == 0)
        if empty.size:
            _relocate_empty_clusters(client, parts, centers, empty, sums, cluster_weights, backend)
        new_centers = update_centers(centers, sums, cluster_weights).astype(X.dtype)

        center_shift = float(np.sum((new_centers.astype(np.float64) - centers) ** 2))
        centers = new_centers
        if digests == previous_digests or center_shift <= tol:
            break
        previous_digests = digests

    labels, inertia = _assign(client, parts, centers, backend)
    return KMeansResult(centers, labels, inertia, n_iter)


def _assign(client, parts, centers, backend):
    tasks = [
        dask.delayed(_assign_chunk, pure=True)(block, weight, centers, backend)
        for block, weight, _, _ in parts
    ]
    results = _compute(client, tasks)
    labels = np.concatenate([chunk_labels for chunk_labels, _ in results])
    return labels, float(sum(chunk_inertia for _, chunk_inertia in results))


def _relocate_empty_clusters(client, parts, centers, empty, sums, cluster_weights, backend):
    """Move each empty cluster onto a farthest sample, in the order of the single-machine loop.

    Empty clusters, in ascending index, take the positive-weight samples in order of decreasing
    distance to their (old) center, equal distances in ascending global index. Each chunk returns
    its first len(empty) samples in that order, which contain the global first len(empty).
    """
    tasks = [
        dask.delayed(_farthest_chunk, pure=True)(
            block, weight, centers, offset, empty.size, backend
        )
        for block, weight, _, offset in parts
    ]
    results = _compute(client, tasks)
    distances, indices, points, weights, labels = (
        np.concatenate([result[field] for result in results]) for field in range(5)
    )
    order = np.lexsort((indices, -distances))[: empty.size]

    for cluster, candidate in zip(empty, order):
        weight = float(weights[candidate])
        point = points[candidate].astype(np.float64) * weight
        old = labels[candidate]
        sums[old] -= point
        cluster_weights[old] -= weight
        sums[cluster] = point
        cluster_weights[cluster] = weight


# ---- the tasks --------------------------------------------------------------------------------

def _unit_weights(block, weight):
    return np.ones(block.shape[0], dtype=block.dtype) if weight is None else weight


def _accumulate_chunk(block, weight, centers, backend):
    """Return the chunk's float64 sums (k, d), weights (k) and the digest of its labels."""
    block = np.ascontiguousarray(block)
    weight = _unit_weights(block, weight)
    labels = np.empty(block.shape[0], dtype=np.int32)
    sums = np.empty(centers.shape, dtype=np.float64)
    weights = np.empty(centers.shape[0], dtype=np.float64)

    # One thread per task: Dask runs the tasks side by side.
    module = backends.load("kmeans", backend)
    with blas_threads(1), numba_threads(1):
        module.accumulate(block, weight, centers, labels, sums, weights, 1)
    return sums, weights, hashlib.blake2b(labels.tobytes(), digest_size=16).digest()


def _assign_chunk(block, weight, centers, backend):
    block = np.ascontiguousarray(block)
    module = backends.load("kmeans", backend)
    with blas_threads(1), numba_threads(1):
        return module.assign(block, _unit_weights(block, weight), centers, 1)


def _farthest_chunk(block, weight, centers, offset, n_empty, backend):
    """Return the chunk's `n_empty` farthest positive-weight samples, with what relocation needs.

    The distances are those of the single-machine relocation: float64, to the sample's center.
    """
    block = np.ascontiguousarray(block)
    weight = _unit_weights(block, weight)
    labels, _ = _assign_chunk(block, weight, centers, backend)
    diff = block.astype(np.float64) - centers[labels]
    distances = np.einsum("ij,ij->i", diff, diff)

    candidates = np.flatnonzero(weight > 0)
    order = candidates[np.argsort(-distances[candidates], kind="stable")][:n_empty]
    return distances[order], order + offset, block[order], weight[order], labels[order]

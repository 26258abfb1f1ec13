"""fastml.distributed: the cost of Dask over the single-machine kernels, and out-of-core memory.

Runners: "single" is the single-machine function with its "auto" backend on all CPUs. "dask-1"
and "dask-2" run the fastml.distributed function on a LocalCluster of one or two worker
processes (one thread each) on 127.0.0.1. The cluster starts in ``setup`` and the data is
persisted in the workers there, so a timing contains the per-pass task overhead, not the start.
asv runs each parameter combination in its own process (see _util.py), so clusters never share
a process.

On one machine the distributed versions can only lose: the ratios here are the overhead that
buys scaling beyond one machine. Across machines, each extra worker adds its cores and memory,
while every pass pays one round of tasks (milliseconds) and moves O(chunks k d) numbers.

Out-of-core: ``OutOfCore`` writes a .npy file larger than any chunk, fits k-means on it through
``read_npy`` (a memory map per chunk) and reports the largest resident size (VmHWM) of the
worker processes, reset after the warm-up. It should follow the chunk size, not the file size.
"""

import atexit
import functools
import os
import pathlib
import sys
import tempfile

import numpy as np

from fastml import kmeans, knn
from fastml.datasets import make_blobs

from ._util import best_time, skip

RUNNERS = ("single", "dask-1", "dask-2")
SEED = 0

# k-means: fixed work, as in kmeans.py: fixed initial centers, tol=0, MAX_ITER iterations.
KMEANS_SHAPE = (400_000, 16, 16)  # n_samples, n_features, n_clusters
MAX_ITER = 10
# kNN: training rows, features, queries, k.
KNN_SHAPE = (200_000, 32, 1_000, 10)
# BPE counting: files and words per file (about 0.5 MB each).
BPE_FILES = (8, 80_000)
# Rows per chunk of the distributed runs.
CHUNK_ROWS = 50_000


@functools.cache
def cluster_client(n_workers):
    """Return a Client of a LocalCluster of `n_workers` one-thread processes, kept until exit."""
    import logging

    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    atexit.register(cluster.close)
    atexit.register(client.close)
    return client


def dask_or_skip():
    try:
        import dask.array as da
        import distributed  # noqa: F401
    except ImportError:
        skip("dask and distributed are not installed (the distributed extra)")
    return da


def workers_of(runner):
    return int(runner.partition("-")[2])


@functools.cache
def blobs(n_samples, n_features, n_centers):
    X, _ = make_blobs(n_samples, n_features, centers=n_centers, dtype=np.float32, random_state=SEED)
    return X


def kmeans_runner(runner):
    """Return a callable that runs MAX_ITER Lloyd iterations from fixed centers."""
    n_samples, n_features, n_clusters = KMEANS_SHAPE
    X = blobs(n_samples, n_features, n_clusters)
    init = X[np.sort(np.random.default_rng(SEED).choice(n_samples, n_clusters, replace=False))]
    options = dict(init=init, tol=0.0, max_iter=MAX_ITER)
    if runner == "single":
        return lambda: kmeans.fit(X, n_clusters, **options)

    da = dask_or_skip()
    from fastml.distributed import fit_kmeans
    from fastml.distributed._chunks import large_graph_allowed

    client = cluster_client(workers_of(runner))
    with large_graph_allowed():
        data = client.persist(da.from_array(X, chunks=(CHUNK_ROWS, -1)))
    return lambda: fit_kmeans(data, n_clusters, client=client, **options)


def knn_runner(runner):
    n_train, n_features, n_query, k = KNN_SHAPE
    X = blobs(n_train + n_query, n_features, 16)
    train, queries = X[:n_train].copy(), X[n_train:].copy()
    if runner == "single":
        return lambda: knn.kneighbors(train, queries, k)

    da = dask_or_skip()
    from fastml.distributed import kneighbors
    from fastml.distributed._chunks import large_graph_allowed

    client = cluster_client(workers_of(runner))
    with large_graph_allowed():
        data = client.persist(da.from_array(train, chunks=(CHUNK_ROWS, -1)))
    return lambda: kneighbors(data, queries, k, client=client)


@functools.cache
def bpe_files():
    """Write BPE_FILES seeded text files once per process; return their paths."""
    n_files, n_words = BPE_FILES
    rng = np.random.default_rng(SEED)
    words = np.array([f"w{i}" for i in range(5_000)] + ["the", "of", "and", "naïve", "東京"])
    folder = tempfile.mkdtemp(prefix="fastml-bench-bpe-")
    paths = []
    for index in range(n_files):
        path = pathlib.Path(folder) / f"part-{index}.txt"
        path.write_text(" ".join(rng.choice(words, size=n_words)), encoding="utf-8")
        paths.append(path)
    return paths


def bpe_count_runner(runner):
    from fastml import backends
    from fastml.bpe._pretokenize import GPT4_PATTERN, count_pretokens

    paths = bpe_files()
    if runner == "single":
        scanner = backends.load("bpe", "auto").count_ascii_pretokens
        return lambda: count_pretokens(paths, GPT4_PATTERN, [], scanner, n_threads=os.cpu_count())

    dask_or_skip()
    from fastml.distributed import count_pretokens as count_distributed

    client = cluster_client(workers_of(runner))
    return lambda: count_distributed(paths, client=client)


RUNNER_FACTORIES = {"kmeans": kmeans_runner, "knn": knn_runner, "bpe-count": bpe_count_runner}


class DistributedTime:
    """Wall time of one k-means fit, kNN search or BPE count, single machine against Dask."""

    params = (tuple(RUNNER_FACTORIES), RUNNERS)
    param_names = ("task", "runner")
    timeout = 600

    def setup(self, task, runner):
        self.run = RUNNER_FACTORIES[task](runner)
        # Warm-up: JIT compilation, worker imports and the first transfer stay out of the timing.
        self.run()

    def time_run(self, task, runner):
        self.run()


class DistributedOverhead:
    """Time on Dask over the single-machine time, both taken in one process (lower is better)."""

    params = (tuple(RUNNER_FACTORIES), ("dask-1", "dask-2"))
    param_names = ("task", "runner")
    rounds = 1
    timeout = 600

    def setup(self, task, runner):
        self.single = RUNNER_FACTORIES[task]("single")
        self.run = RUNNER_FACTORIES[task](runner)
        self.single()
        self.run()

    def track_time_ratio_to_single(self, task, runner):
        return best_time(self.run, repeat=3) / best_time(self.single, repeat=3)

    track_time_ratio_to_single.unit = "time / single-machine time"


class OutOfCore:
    """Largest worker resident size (MiB) while fitting k-means on a 256 MiB memory-mapped .npy.

    Two chunk sizes, 8 times apart; the data never sits whole in a worker.
    """

    params = ((16_384, 131_072),)
    param_names = ("chunk_rows",)
    rounds = 1
    timeout = 900
    # 2,097,152 rows x 16 float64 features = 256 MiB.
    shape = (2_097_152, 16)

    def setup(self, chunk_rows):
        dask_or_skip()
        from fastml.distributed import fit_kmeans, read_npy

        self.folder = tempfile.mkdtemp(prefix="fastml-bench-npy-")
        path = os.path.join(self.folder, "X.npy")
        file = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=self.shape)
        rng = np.random.default_rng(SEED)
        for start in range(0, self.shape[0], 262_144):
            file[start : start + 262_144] = rng.standard_normal((262_144, self.shape[1]))
        file.flush()
        del file

        _register_worker_functions()
        self.client = cluster_client(1)
        init = np.load(path, mmap_mode="r")[:16].copy()
        self.fit = lambda: fit_kmeans(
            read_npy(path, chunk_rows), 16, init=init, tol=0.0, max_iter=2, client=self.client
        )
        self.fit()
        if not all(self.client.run(_reset_peak_memory).values()):
            skip("resetting the peak memory needs Linux's /proc/self/clear_refs")

    def teardown(self, chunk_rows):
        os.remove(os.path.join(self.folder, "X.npy"))
        os.rmdir(self.folder)

    def track_worker_peak_memory(self, chunk_rows):
        self.fit()
        return max(self.client.run(_peak_resident_mib).values())

    track_worker_peak_memory.unit = "MiB"


# The workers run these two functions, but cannot import this module: asv puts the benchmark
# directory on sys.path of its own process only. cloudpickle sends them by value instead.
def _register_worker_functions():
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _reset_peak_memory():
    try:
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        return False
    return True


def _peak_resident_mib():
    """Return VmHWM, the process's peak resident set size since the last reset, in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")

"""k-means: the four fastml backends against scikit-learn and faiss, in one parametrization.

Every fit does the same fixed work on every backend and peer: the same initial centers (k
distinct rows drawn with a fixed seed), ``tol=0`` and ``MAX_ITER`` Lloyd iterations. The data is
chosen so that no run converges earlier, and each benchmark's warm-up call in ``setup`` checks
that. fastml and scikit-learn then label the data once more for the final centers, so they make
``MAX_ITER + 1`` assignment passes where faiss makes ``MAX_ITER``.

Processes and OpenMP runtimes. asv runs each parameter combination in a process of its own (see
_util.py), and peers are imported in ``setup`` only, so faiss is never measured in a process that
measures scikit-learn. That matters because both wheels vendor the same libgomp. fastml's own
Cython extension and Numba's "omp" threading layer link the system libgomp.so.1 instead, so they
keep a separate OpenMP runtime. With faiss-cpu 1.15.1 imported and run first, the Cython and
Numba backends still used both cores of two, and so did scikit-learn's KMeans, while
scikit-learn's brute-force kNN fell to one thread. ``import fastml.kmeans`` loads scikit-learn
(for the estimator's base classes) and so its libgomp into every process here, faiss's too, and
faiss kept both threads with it. Those thread counts come from the per-thread CPU time in
/proc/self/task, which does not depend on other load.

Threads: every backend and peer uses all CPUs of the machine (fastml reads FASTML_NUM_THREADS).
"""

import functools

import numpy as np

from fastml import kmeans
from fastml.datasets import load_glove, make_blobs

from ._util import best_time, import_peer, loglog_slope, reset_peak_memory, skip

BACKENDS = ("naive", "numpy", "numba", "cython")
PEERS = ("sklearn", "faiss")
FAST = ("numpy", "numba", "cython")

MAX_ITER = 10
SEED = 0

# case -> (source, n_samples, n_features, n_clusters); blobs have as many blob centers as clusters.
CASES = {
    "blobs n=10k d=16 k=16": ("blobs", 10_000, 16, 16),
    "blobs n=100k d=32 k=64": ("blobs", 100_000, 32, 64),
    "blobs n=1M d=16 k=16": ("blobs", 1_000_000, 16, 16),
    "glove n=100k d=50 k=64": ("glove", 100_000, 50, 64),
}
# The naive backend's only case: seconds per fit, against about two minutes (estimated) on the others.
NAIVE_CASE = "blobs n=10k d=16 k=16"


# ---- inputs, memoized per process -------------------------------------------------------------

@functools.cache
def blobs(n_samples, n_features, n_centers):
    """Return seeded float32 Gaussian blobs of shape (n_samples, n_features)."""
    X, _ = make_blobs(n_samples, n_features, centers=n_centers, dtype=np.float32, random_state=SEED)
    return X


@functools.cache
def case_data(case):
    """Return ``(X, init)`` of a case: the samples and the fixed initial centers."""
    source, n_samples, n_features, n_clusters = CASES[case]
    if source == "glove":
        X = load_glove(n_samples)
    else:
        X = blobs(n_samples, n_features, n_clusters)
    return X, initial_centers(X, n_clusters)


def initial_centers(X, n_clusters):
    """Return `n_clusters` distinct rows of `X` drawn with the fixed seed, in row order."""
    rows = np.random.default_rng(SEED).choice(X.shape[0], n_clusters, replace=False)
    return X[np.sort(rows)].copy()


# ---- one fixed-work fit per backend or peer ---------------------------------------------------

def lloyd_runner(backend, X, init, max_iter):
    """Return a callable that runs `max_iter` Lloyd iterations from `init` and returns n_iter."""
    if backend == "sklearn":
        KMeans = import_peer("sklearn.cluster").KMeans
        estimator = KMeans(
            init.shape[0], init=init, n_init=1, max_iter=max_iter, tol=0, algorithm="lloyd"
        )
        return lambda: estimator.fit(X).n_iter_
    if backend == "faiss":
        return functools.partial(_faiss_lloyd, import_peer("faiss"), X, init, max_iter)
    return lambda: kmeans.fit(
        X, init.shape[0], init=init, n_init=1, max_iter=max_iter, tol=0, backend=backend
    ).n_iter


def _faiss_lloyd(faiss, X, init, max_iter):
    n_samples, n_features = X.shape
    # max_points_per_centroid=n_samples: faiss would otherwise fit a random sample of 256 * k rows.
    model = faiss.Kmeans(
        n_features, init.shape[0], niter=max_iter, nredo=1, seed=SEED,
        max_points_per_centroid=n_samples, verbose=False,
    )
    model.train(X, init_centroids=init)
    # faiss has no convergence test: it always runs niter iterations.
    return max_iter


def warmed_up(run, max_iter, label):
    """Call `run` once (Numba compiles here, never in a timing); raise unless it ran max_iter iterations."""
    n_iter = run()
    if n_iter != max_iter:
        raise RuntimeError(
            f"{label} converged after {n_iter} of max_iter={max_iter} iterations, so the backends "
            "would not do the same work; use data that converges more slowly or a lower max_iter"
        )
    return run


@functools.cache
def case_runner(backend, case):
    """Return the warmed-up fixed-work fit of `backend` on `case`."""
    X, init = case_data(case)
    return warmed_up(lloyd_runner(backend, X, init, MAX_ITER), MAX_ITER, f"{backend} on {case}")


def skip_slow_naive(backend, case):
    if backend == "naive" and case != NAIVE_CASE:
        skip(f"the naive backend runs only on {NAIVE_CASE!r}")


# ---- benchmarks -------------------------------------------------------------------------------

class KMeansFit:
    """Fixed-work Lloyd fits: same init, tol=0 and MAX_ITER iterations for every backend and peer."""

    params = (BACKENDS + PEERS, tuple(CASES))
    param_names = ("backend", "case")
    timeout = 600

    def setup(self, backend, case):
        skip_slow_naive(backend, case)
        self.run = case_runner(backend, case)

    def time_fit(self, backend, case):
        self.run()


class KMeansFitMemory:
    """Peak memory of a 2-iteration fit on 1M x 16 float32 samples (61 MiB) as k grows 16-fold.

    Storing the n x k distance matrix would add 61 MiB at k=16 and 977 MiB at k=256, so a tiled
    backend shows almost the same peak for both k. The peak is reset at the end of setup:
    data generation and JIT compilation do not count, while what the warm-up fit left resident
    (the interpreter, the libraries, X, reusable heap) does.
    """

    params = (FAST + PEERS, (16, 256))
    param_names = ("backend", "n_clusters")
    rounds = 1
    timeout = 600

    def setup(self, backend, n_clusters):
        X = blobs(1_000_000, 16, 16)
        self.run = lloyd_runner(backend, X, initial_centers(X, n_clusters), max_iter=2)
        warmed_up(self.run, 2, f"{backend} with k={n_clusters}")
        if not reset_peak_memory():
            skip("resetting the peak memory needs Linux's /proc/self/clear_refs")

    def peakmem_fit(self, backend, n_clusters):
        self.run()


class KMeansSpeedup:
    """A backend's fit time divided by the naive backend's, on the naive case (lower is better)."""

    params = (FAST + PEERS,)
    param_names = ("backend",)
    rounds = 1
    timeout = 600

    def setup(self, backend):
        self.naive = case_runner("naive", NAIVE_CASE)
        self.run = case_runner(backend, NAIVE_CASE)

    def track_time_ratio_to_naive(self, backend):
        return best_time(self.run, repeat=10) / best_time(self.naive, repeat=2)

    track_time_ratio_to_naive.unit = "time / naive time"


class KMeansScaling:
    """Empirical complexity exponent: the slope of log(fit time) over log(n) on a ladder of n.

    Lloyd's algorithm costs O(n k d) per iteration, so a value near 1 is expected, and a smaller
    one means fixed overhead still weighs on the ladder. Blobs of 16 features and k=16, 5
    iterations. The naive backend climbs its own, smaller ladder.
    """

    params = (BACKENDS + PEERS,)
    param_names = ("backend",)
    rounds = 1
    timeout = 600
    LADDERS = {"naive": (1_000, 2_000, 4_000, 8_000)}
    LADDER = (125_000, 250_000, 500_000, 1_000_000)
    ITERATIONS = 5

    def setup(self, backend):
        self.sizes = self.LADDERS.get(backend, self.LADDER)
        X = blobs(self.sizes[-1], 16, 16)
        # Centers drawn from the smallest prefix are rows of every prefix.
        init = initial_centers(X[: self.sizes[0]], 16)
        self.runs = [
            warmed_up(lloyd_runner(backend, X[:n], init, self.ITERATIONS), self.ITERATIONS, f"n={n}")
            for n in self.sizes
        ]

    def track_exponent_in_n(self, backend):
        return loglog_slope(self.sizes, [best_time(run, repeat=3) for run in self.runs])

    track_exponent_in_n.unit = "exponent of n"


class KMeansPlusPlus:
    """Greedy k-means++ seeding (2 + floor(ln k) candidates per step), against scikit-learn's."""

    params = (BACKENDS + ("sklearn",), (NAIVE_CASE, "blobs n=100k d=32 k=64"))
    param_names = ("backend", "case")
    timeout = 600

    def setup(self, backend, case):
        skip_slow_naive(backend, case)
        self.run = plusplus_runner(backend, case)

    def time_kmeans_plusplus(self, backend, case):
        self.run()


@functools.cache
def plusplus_runner(backend, case):
    """Return the warmed-up k-means++ seeding of `backend` on `case`."""
    X, _ = case_data(case)
    n_clusters = CASES[case][3]
    if backend == "sklearn":
        kmeans_plusplus = import_peer("sklearn.cluster").kmeans_plusplus
        run = functools.partial(kmeans_plusplus, X, n_clusters, random_state=SEED)
    else:
        run = functools.partial(
            kmeans.kmeans_plusplus, X, n_clusters, random_state=SEED, backend=backend
        )
    run()
    return run

"""k-nearest neighbours: the four fastml backends against scikit-learn and faiss.

Every search finds the k=10 nearest training rows of every query in float32. The peers do the
same brute-force work: scikit-learn's ``NearestNeighbors(algorithm="brute")`` and faiss's flat
indexes (``IndexFlatL2`` for euclidean, ``IndexFlatIP`` on unit rows for cosine,
``IndexFlat(d, METRIC_L1)`` for manhattan). faiss returns squared Euclidean distances, and its
cosine search includes normalizing the queries. Building an index (``fit``, ``add``) happens in
setup and is not timed.

Processes: asv runs each parameter combination in a process of its own (see _util.py), and the
peers are imported in setup only, so faiss and scikit-learn never share a process and the
OpenMP runtime they both vendor.

Threads: every backend and peer uses all CPUs of the machine (fastml reads FASTML_NUM_THREADS).
"""

import functools

import numpy as np

from fastml import knn
from fastml.datasets import load_glove, make_blobs

from ._util import best_time, import_peer, loglog_slope, reset_peak_memory, skip

BACKENDS = ("naive", "numpy", "numba", "cython")
PEERS = ("sklearn", "faiss")
FAST = ("numpy", "numba", "cython")
METRICS = ("euclidean", "cosine", "manhattan")

K = 10
SEED = 0

# case -> (source, n_train, n_query, n_features)
CASES = {
    "blobs n=1k q=20 d=64": ("blobs", 1_000, 20, 64),
    "blobs n=10k q=10k d=64": ("blobs", 10_000, 10_000, 64),
    "blobs n=100k q=10k d=64": ("blobs", 100_000, 10_000, 64),
    "glove n=100k q=10k d=50": ("glove", 100_000, 10_000, 50),
}
# The naive backend takes about a second on this case and hours on the others.
NAIVE_CASE = "blobs n=1k q=20 d=64"
# The headline: 100,000 training rows of 64 float32 features, 10,000 queries, k=10.
HEADLINE_CASE = "blobs n=100k q=10k d=64"
# Manhattan has no matrix-product form; the NumPy backend needs minutes beyond this size.
MANHATTAN_CASES = ("blobs n=1k q=20 d=64", "blobs n=10k q=10k d=64")


# ---- inputs, memoized per process -------------------------------------------------------------

@functools.cache
def blobs(n_samples, n_features):
    """Return seeded float32 Gaussian blobs (64 centers) of shape (n_samples, n_features)."""
    X, _ = make_blobs(n_samples, n_features, centers=64, dtype=np.float32, random_state=SEED)
    return X


@functools.cache
def case_data(case):
    """Return ``(X_train, X_query)`` of a case: queries are the rows after the training rows."""
    source, n_train, n_query, n_features = CASES[case]
    if source == "glove":
        X = load_glove(n_train + n_query)
    else:
        X = blobs(n_train + n_query, n_features)
    return X[:n_train].copy(), X[n_train:].copy()


# ---- one search per backend or peer ------------------------------------------------------------

def search_runner(backend, X_train, X_query, metric):
    """Return a callable that finds the K nearest training rows of every query row."""
    if backend == "sklearn":
        neighbors = import_peer("sklearn.neighbors")
        model = neighbors.NearestNeighbors(n_neighbors=K, algorithm="brute", metric=metric)
        model.fit(X_train)
        return functools.partial(model.kneighbors, X_query)
    if backend == "faiss":
        return _faiss_runner(import_peer("faiss"), X_train, X_query, metric)
    return functools.partial(knn.kneighbors, X_train, X_query, K, metric=metric, backend=backend)


def _faiss_runner(faiss, X_train, X_query, metric):
    n_features = X_train.shape[1]
    if metric == "cosine":
        index = faiss.IndexFlatIP(n_features)
        index.add(_unit_rows(X_train))
        return lambda: index.search(_unit_rows(X_query), K)
    if metric == "manhattan":
        index = faiss.IndexFlat(n_features, faiss.METRIC_L1)
    else:
        index = faiss.IndexFlatL2(n_features)
    index.add(X_train)
    return functools.partial(index.search, X_query, K)


def _unit_rows(X):
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1).astype(X.dtype)


@functools.cache
def case_runner(backend, case, metric):
    """Return the search of `backend` on `case`, called once (Numba compiles here, never in a timing)."""
    X_train, X_query = case_data(case)
    run = search_runner(backend, X_train, X_query, metric)
    run()
    return run


def skip_unsupported(backend, case, metric):
    if backend == "naive" and case != NAIVE_CASE:
        skip(f"the naive backend runs only on {NAIVE_CASE!r}")
    if metric == "manhattan" and case not in MANHATTAN_CASES:
        skip(f"manhattan runs only on {MANHATTAN_CASES}")


# ---- benchmarks -------------------------------------------------------------------------------

class KNNSearch:
    """Brute-force k=10 search of every query, per backend, case and metric."""

    params = (BACKENDS + PEERS, tuple(CASES), METRICS)
    param_names = ("backend", "case", "metric")
    timeout = 600

    def setup(self, backend, case, metric):
        skip_unsupported(backend, case, metric)
        self.run = case_runner(backend, case, metric)

    def time_kneighbors(self, backend, case, metric):
        self.run()


class KNNThroughput:
    """Queries per second on the headline case (euclidean): the figure compared with faiss.

    Each backend and peer is measured in its own process; the ratios between them come from
    one run of the suite.
    """

    params = (FAST + PEERS,)
    param_names = ("backend",)
    rounds = 1
    timeout = 600

    def setup(self, backend):
        self.run = case_runner(backend, HEADLINE_CASE, "euclidean")
        self.n_query = CASES[HEADLINE_CASE][2]

    def track_queries_per_second(self, backend):
        return self.n_query / best_time(self.run, repeat=5)

    track_queries_per_second.unit = "queries/s"


class KNNSearchMemory:
    """Peak memory of a search of 100,000 x 64 float32 training rows as the queries grow 16-fold.

    A distance matrix would take 381 MiB for 1,000 queries and 6.0 GiB for 16,000. A tiled
    search adds only its tiles and the (n_query, k) output, so both peaks stay close to the
    resident data: 24 MiB of training rows, and 0.2 or 3.9 MiB of queries. The peak is reset at
    the end of setup: data generation and JIT compilation do not count, while what the warm-up
    search left resident (the interpreter, the libraries, the data, reusable heap) does.
    """

    params = (FAST + PEERS, (1_000, 16_000))
    param_names = ("backend", "n_query")
    rounds = 1
    timeout = 600

    def setup(self, backend, n_query):
        X = blobs(100_000 + n_query, 64)
        self.run = search_runner(backend, X[:100_000].copy(), X[100_000:].copy(), "euclidean")
        self.run()
        if not reset_peak_memory():
            skip("resetting the peak memory needs Linux's /proc/self/clear_refs")

    def peakmem_kneighbors(self, backend, n_query):
        self.run()


class KNNSpeedup:
    """A backend's search time divided by the naive backend's, on the naive case (lower is better)."""

    params = (FAST + PEERS, METRICS)
    param_names = ("backend", "metric")
    rounds = 1
    timeout = 600

    def setup(self, backend, metric):
        self.naive = case_runner("naive", NAIVE_CASE, metric)
        self.run = case_runner(backend, NAIVE_CASE, metric)

    def track_time_ratio_to_naive(self, backend, metric):
        return best_time(self.run, repeat=20) / best_time(self.naive, repeat=2)

    track_time_ratio_to_naive.unit = "time / naive time"


class KNNScaling:
    """Empirical complexity exponent: the slope of log(search time) over log(n_train).

    Brute force costs O(n_query n_train d), so a value near 1 is expected at a fixed number of
    queries, and a smaller one means fixed overhead still weighs on the ladder. 64 features,
    1,000 queries, euclidean. The naive backend climbs its own, smaller ladder with 10 queries.
    """

    params = (BACKENDS + PEERS,)
    param_names = ("backend",)
    rounds = 1
    timeout = 600
    LADDERS = {"naive": ((250, 500, 1_000, 2_000), 10)}
    LADDER = ((12_500, 25_000, 50_000, 100_000), 1_000)

    def setup(self, backend):
        self.sizes, n_query = self.LADDERS.get(backend, self.LADDER)
        X = blobs(self.sizes[-1] + n_query, 64)
        X_query = X[-n_query:].copy()
        self.runs = [search_runner(backend, X[:n].copy(), X_query, "euclidean") for n in self.sizes]
        for run in self.runs:
            run()

    def track_exponent_in_n_train(self, backend):
        return loglog_slope(self.sizes, [best_time(run, repeat=3) for run in self.runs])

    track_exponent_in_n_train.unit = "exponent of n_train"

"""The cases of ``fastml compare``: one workload per primitive, with one size that grows.

A case fixes every parameter of a workload but one size, such as the number of samples or the
sequence length. It builds its input from seeded synthetic data or installed real data, and
returns a callable that runs the workload once on a fastml backend or a peer library. Peers
are imported only inside those builders, so a peer that is not measured is never loaded. Every
builder returns the callable un-run: the timing loop makes the first call, which compiles the
Numba kernels, and does not count it.

The naive backend runs only up to the case's ``naive_cap``, a size where one call took up to
about two seconds (measured once on a 2-core x86-64 machine with the other core busy). Under
heavier load it took up to seven times as long.
"""

import functools
import importlib
import importlib.util
import math
import os
from dataclasses import dataclass, field

import numpy as np

from fastml import backends as registry
from fastml._threads import get_num_threads

SEED = 0


class SkipMeasurement(Exception):
    """A backend or peer cannot run at a size here; the message gives the reason and the fix."""


@dataclass(frozen=True)
class Peer:
    """A library compared with fastml: the module that must import, and how to install it."""

    module: str
    install: str


@dataclass(frozen=True)
class Case:
    """One workload of `primitive` (the registry's name) with one size that grows.

    `size_name` names the size in the table and on the plot's axis. `sizes` is the default
    ladder, `quick_size` the size of ``fastml compare --all``, and sizes outside
    [`min_size`, `max_size`] are rejected. `build(backend, size)` returns the callable to time.
    `peers` maps each peer's name to its Peer.
    """

    name: str
    primitive: str
    description: str
    size_name: str
    sizes: tuple
    quick_size: int
    naive_cap: int
    min_size: int
    max_size: int
    build: object = field(repr=False)
    peers: dict = field(default_factory=dict)
    # Peers measured in a child process of their own (see ``fastml.compare._run``).
    isolated_peers: tuple = ()

    def backends(self):
        """Return fastml's backends of this case (fastest first), then its peers."""
        return registry.backends(self.primitive) + tuple(self.peers)

    def check_peer(self, name):
        """Raise SkipMeasurement unless the module of peer `name` can be found."""
        peer = self.peers[name]
        if importlib.util.find_spec(peer.module.partition(".")[0]) is None:
            raise SkipMeasurement(f"{name} is not installed ({peer.install})")


# ---- k-means ----------------------------------------------------------------------------------

KMEANS_FEATURES = 16
KMEANS_CLUSTERS = 16
KMEANS_ITERATIONS = 5
KMEANS_MIN_SAMPLES = 100


@functools.lru_cache(maxsize=1)
def kmeans_data(n_samples):
    """Return float32 blobs (n_samples, 16) and 16 distinct rows as the fixed initial centers."""
    from fastml.datasets import make_blobs

    # Blobs that overlap (centers in a box of side 4, spread 1) keep Lloyd's algorithm moving
    # for more than KMEANS_ITERATIONS iterations, so every backend and peer does the same work.
    # Checked from KMEANS_MIN_SAMPLES to 1,000,000 samples; 16 samples converge at once.
    X, _ = make_blobs(
        n_samples, KMEANS_FEATURES, centers=KMEANS_CLUSTERS, center_box=(-2.0, 2.0),
        dtype=np.float32, random_state=SEED,
    )
    rows = np.random.default_rng(SEED).choice(n_samples, KMEANS_CLUSTERS, replace=False)
    return X, X[np.sort(rows)].copy()


def build_kmeans(backend, n_samples):
    X, init = kmeans_data(n_samples)
    if backend == "sklearn":
        from sklearn.cluster import KMeans

        model = KMeans(
            KMEANS_CLUSTERS, init=init, n_init=1, max_iter=KMEANS_ITERATIONS, tol=0,
            algorithm="lloyd",
        )
        return lambda: model.fit(X)
    if backend == "faiss":
        return functools.partial(_faiss_kmeans, importlib.import_module("faiss"), X, init)

    from fastml import kmeans

    return functools.partial(
        kmeans.fit, X, KMEANS_CLUSTERS, init=init, n_init=1, max_iter=KMEANS_ITERATIONS, tol=0,
        backend=backend,
    )


def _faiss_kmeans(faiss, X, init):
    faiss.omp_set_num_threads(get_num_threads())
    # max_points_per_centroid=n: faiss would otherwise fit a random sample of 256 rows per center.
    model = faiss.Kmeans(
        X.shape[1], KMEANS_CLUSTERS, niter=KMEANS_ITERATIONS, nredo=1, seed=SEED,
        max_points_per_centroid=X.shape[0], verbose=False,
    )
    model.train(X, init_centroids=init)
    return model


# ---- k-nearest neighbours ---------------------------------------------------------------------

KNN_FEATURES = 64
KNN_QUERIES = 100
KNN_K = 10


@functools.lru_cache(maxsize=1)
def knn_data(n_train):
    """Return float32 blobs: (n_train, 64) training rows and the 100 query rows after them."""
    from fastml.datasets import make_blobs

    X, _ = make_blobs(
        n_train + KNN_QUERIES, KNN_FEATURES, centers=64, dtype=np.float32, random_state=SEED
    )
    return X[:n_train].copy(), X[n_train:].copy()


def build_knn(backend, n_train):
    X_train, X_query = knn_data(n_train)
    if backend == "sklearn":
        from sklearn.neighbors import NearestNeighbors

        model = NearestNeighbors(n_neighbors=KNN_K, algorithm="brute").fit(X_train)
        return functools.partial(model.kneighbors, X_query)
    if backend == "faiss":
        faiss = importlib.import_module("faiss")
        faiss.omp_set_num_threads(get_num_threads())
        index = faiss.IndexFlatL2(KNN_FEATURES)
        index.add(X_train)
        return functools.partial(index.search, X_query, KNN_K)

    from fastml import knn

    return functools.partial(knn.kneighbors, X_train, X_query, KNN_K, backend=backend)


# ---- attention and the KV cache ---------------------------------------------------------------

N_HEADS = 4
HEAD_DIM = 64


@functools.lru_cache(maxsize=1)
def attention_inputs(n_tokens):
    """Return seeded float32 q, k, v of shape (1, 4, n_tokens, 64)."""
    rng = np.random.default_rng(SEED)
    shape = (1, N_HEADS, n_tokens, HEAD_DIM)
    return tuple(rng.standard_normal(shape, dtype=np.float32) for _ in range(3))


def import_torch():
    torch = importlib.import_module("torch")
    torch.set_num_threads(get_num_threads())
    return torch


def build_attention(backend, seq_len):
    q, k, v = attention_inputs(seq_len)
    if backend == "torch":
        torch = import_torch()
        tensors = [torch.from_numpy(a) for a in (q, k, v)]
        return functools.partial(_torch_sdpa, torch, tensors, True)

    from fastml.attention import scaled_dot_product_attention

    return functools.partial(scaled_dot_product_attention, q, k, v, is_causal=True, backend=backend)


def _torch_sdpa(torch, tensors, is_causal):
    with torch.no_grad():
        return torch.nn.functional.scaled_dot_product_attention(*tensors, is_causal=is_causal)


def build_kv_cache(backend, cache_len):
    q, k, v = attention_inputs(cache_len + 1)
    if backend == "torch":
        # torch has no cache to append to: one query against contiguous keys and values.
        torch = import_torch()
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in (q[:, :, -1:], k, v)]
        return functools.partial(_torch_sdpa, torch, tensors, False)

    from fastml.attention import KVCache, cached_attention

    cache = KVCache(1, N_HEADS, cache_len + 1, HEAD_DIM, dtype=np.float32)
    cache.append(k[:, :, :cache_len], v[:, :, :cache_len])
    new = [np.ascontiguousarray(a[:, :, cache_len:]) for a in (q, k, v)]

    def step():
        # Dropping the token the previous call appended makes every call the same step.
        cache.truncate(cache_len)
        return cached_attention(*new, cache, backend=backend)

    return step


# ---- sampling ---------------------------------------------------------------------------------

SAMPLING_BATCH = 8
TOP_P = 0.9


@functools.lru_cache(maxsize=1)
def sampling_logits(vocab_size):
    from fastml.sampling._synthetic import zipf_logits

    return zipf_logits(SAMPLING_BATCH, vocab_size, seed=SEED)


def build_sampling(backend, vocab_size):
    logits = sampling_logits(vocab_size)
    if backend == "torch":
        torch = import_torch()
        return functools.partial(
            _torch_top_p, torch, torch.from_numpy(logits), torch.Generator().manual_seed(SEED)
        )

    from fastml import sampling

    return functools.partial(sampling.sample, logits, top_p=TOP_P, rng=SEED, backend=backend)


def _torch_top_p(torch, scores, generator):
    # Hugging Face's TopPLogitsWarper: sort the whole row, drop the low tail of mass 1 - top_p.
    ascending, order = torch.sort(scores, dim=-1)
    remove = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - TOP_P
    remove[..., -1] = False
    filtered = scores.masked_fill(remove.scatter(-1, order, remove), -math.inf)
    return torch.multinomial(torch.softmax(filtered, dim=-1), 1, generator=generator)


# ---- byte-level BPE ---------------------------------------------------------------------------

BPE_VOCAB_SIZE = 1_024
# The shortest KJV prefix with pairs for all 768 merges: 5,000 bytes stop at 735 tokens.
BPE_MIN_CORPUS = 10_000


def bpe_text(n_bytes):
    """Return the first `n_bytes` characters of the King James Bible, repeated as needed."""
    from fastml.bpe._corpus import load_kjv

    try:
        text = load_kjv()
    except FileNotFoundError as exc:
        raise SkipMeasurement(str(exc)) from None
    return (text * math.ceil(n_bytes / len(text)))[:n_bytes]


def set_rayon_threads():
    """Size the Rayon thread pool of rustbpe and tokenizers to fastml's thread count.

    Rayon reads RAYON_NUM_THREADS once, when a process first uses its global pool, which is why
    these peers run in a child process of their own.
    """
    os.environ["RAYON_NUM_THREADS"] = str(get_num_threads())


def build_bpe_train(backend, n_bytes):
    corpus = bpe_text(n_bytes)
    if backend in ("rustbpe", "tokenizers"):
        set_rayon_threads()
    if backend == "rustbpe":
        rustbpe = importlib.import_module("rustbpe")

        def train():
            tokenizer = rustbpe.Tokenizer()
            tokenizer.train_from_iterator(iter([corpus]), BPE_VOCAB_SIZE)
            return tokenizer

        return train
    if backend == "tokenizers":
        return functools.partial(_train_tokenizers, importlib.import_module("tokenizers"), corpus)

    from fastml import bpe

    # min_frequency=1 makes fastml merge until vocab_size, as the peers do.
    return functools.partial(
        bpe.train, corpus, BPE_VOCAB_SIZE, min_frequency=1, backend=backend, progress=False
    )


def _train_tokenizers(tokenizers, corpus):
    # The ByteLevel pre-tokenizer splits with GPT-2's pattern, the closest to fastml's GPT-4 one.
    byte_level = tokenizers.pre_tokenizers.ByteLevel
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = byte_level(add_prefix_space=False, use_regex=True)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=BPE_VOCAB_SIZE, min_frequency=0, show_progress=False,
        initial_alphabet=byte_level.alphabet(),
    )
    tokenizer.train_from_iterator([corpus], trainer)
    return tokenizer


def gpt2_rank_path():
    from fastml.bpe import rank_file_path

    try:
        return rank_file_path("gpt2")
    except FileNotFoundError as exc:
        raise SkipMeasurement(str(exc)) from None


def build_bpe_encode(backend, n_bytes):
    text = bpe_text(n_bytes)
    path = gpt2_rank_path()
    if backend == "tiktoken":
        tiktoken = importlib.import_module("tiktoken")
        from tiktoken.load import load_tiktoken_bpe

        from fastml.bpe import GPT2_PATTERN

        encoding = tiktoken.Encoding(
            name="gpt2-local", pat_str=GPT2_PATTERN, mergeable_ranks=load_tiktoken_bpe(str(path)),
            special_tokens={},
        )
        return functools.partial(encoding.encode_ordinary, text)

    from fastml import bpe

    # cache_size=0: no pre-token cache, because tiktoken keeps none between calls.
    tokenizer = bpe.Tokenizer.from_tiktoken_file(path, pattern="gpt2", backend=backend, cache_size=0)
    return functools.partial(tokenizer.encode_ordinary, text)


# ---- MLP --------------------------------------------------------------------------------------

MLP_LAYERS = (64, 128, 128, 10)
LEARNING_RATE = 1e-3


@functools.lru_cache(maxsize=1)
def mlp_batch(batch_size):
    """Return seeded float32 inputs in [0, 1) of shape (batch_size, 64) and labels 0-9."""
    rng = np.random.default_rng(SEED)
    X = rng.random((batch_size, MLP_LAYERS[0]), dtype=np.float32)
    return X, rng.integers(0, MLP_LAYERS[-1], size=batch_size)


def build_mlp(backend, batch_size):
    X, y = mlp_batch(batch_size)
    if backend == "torch":
        return _torch_train_step(import_torch(), X, y)

    from fastml.mlp import MLP

    model = MLP(MLP_LAYERS[1:-1], activation="relu", optimizer="adam", backend=backend)
    model.initialize(MLP_LAYERS[0], MLP_LAYERS[-1], dtype=np.float32, random_state=SEED)
    return functools.partial(model.train_step, X, y, learning_rate=LEARNING_RATE)


def _torch_train_step(torch, X, y):
    torch.manual_seed(SEED)
    layers = []
    for n_in, n_out in zip(MLP_LAYERS[:-1], MLP_LAYERS[1:]):
        layers += [torch.nn.Linear(n_in, n_out), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1])
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    inputs, labels = torch.from_numpy(X), torch.from_numpy(y)

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(inputs), labels)
        loss.backward()
        optimizer.step()
        return loss

    return step


# ---- the table of cases -----------------------------------------------------------------------

SKLEARN = Peer("sklearn", "pip install scikit-learn")
FAISS = Peer("faiss", "pip install faiss-cpu")
TORCH = Peer("torch", "pip install torch==2.13.0")

# min_size is the smallest input the workload accepts or runs as described. max_size keeps the
# memory of one run near 1 GB or below, estimated from the array sizes (the NumPy attention
# backend stores every L x L score matrix, 1 GiB at L = 8192 with 4 heads).
CASES = {
    case.name: case
    for case in (
        Case(
            "kmeans", "kmeans",
            f"{KMEANS_ITERATIONS} Lloyd iterations from fixed centers, {KMEANS_FEATURES} "
            f"features, k={KMEANS_CLUSTERS}, float32 blobs",
            "n_samples", (2_000, 6_000, 20_000, 60_000, 200_000), 20_000, 20_000,
            KMEANS_MIN_SAMPLES, 10_000_000, build_kmeans,
            {"sklearn": SKLEARN, "faiss": FAISS}, isolated_peers=("faiss",),
        ),
        Case(
            "knn", "knn",
            f"k={KNN_K} nearest training rows of {KNN_QUERIES} queries, euclidean, "
            f"{KNN_FEATURES} features, float32 blobs",
            "n_train", (1_000, 3_000, 10_000, 30_000, 100_000), 3_000, 5_000,
            KNN_K, 4_000_000, build_knn,
            {"sklearn": SKLEARN, "faiss": FAISS}, isolated_peers=("faiss",),
        ),
        Case(
            "attention", "attention",
            f"causal self-attention, batch 1, {N_HEADS} heads of dim {HEAD_DIM}, float32",
            "seq_len", (64, 128, 256, 512, 1024, 2048), 256, 256,
            1, 8_192, build_attention, {"torch": TORCH},
        ),
        Case(
            "kv-cache", "attention",
            f"one decoding step with a KV cache (append + attend), {N_HEADS} heads of dim "
            f"{HEAD_DIM}, float32",
            "cache_len", (1_024, 2_048, 4_096, 8_192, 16_384), 4_096, 16_384,
            1, 131_072, build_kv_cache, {"torch": TORCH},
        ),
        Case(
            "sampling", "sampling",
            f"top-p {TOP_P} sampling of {SAMPLING_BATCH} rows of Zipf-like float32 logits",
            "vocab_size", (8_192, 16_384, 32_768, 65_536, 131_072), 32_768, 65_536,
            1, 4_194_304, build_sampling, {"torch": TORCH},
        ),
        Case(
            "bpe-train", "bpe",
            f"training {BPE_VOCAB_SIZE} tokens (GPT-4 split pattern) on a prefix of the King "
            "James Bible",
            "corpus_bytes", (25_000, 50_000, 100_000, 400_000, 1_600_000), 100_000, 100_000,
            BPE_MIN_CORPUS, 100_000_000, build_bpe_train,
            {"rustbpe": Peer("rustbpe", "pip install rustbpe"),
             "tokenizers": Peer("tokenizers", "pip install tokenizers")},
            isolated_peers=("rustbpe", "tokenizers"),
        ),
        Case(
            "bpe-encode", "bpe",
            "encoding a prefix of the King James Bible with GPT-2's ranks, no pre-token cache",
            "text_bytes", (100_000, 300_000, 1_000_000, 4_000_000), 300_000, 1_000_000,
            1, 20_000_000, build_bpe_encode, {"tiktoken": Peer("tiktoken", "pip install tiktoken")},
        ),
        Case(
            "mlp", "mlp",
            f"one Adam training step of a {'-'.join(map(str, MLP_LAYERS))} ReLU network, "
            "float32",
            "batch_size", (16, 64, 256, 1_024, 4_096), 256, 256,
            1, 262_144, build_mlp, {"torch": TORCH},
        ),
    )
}

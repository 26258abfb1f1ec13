"""MLP: the four fastml backends against torch, on the forward pass, forward + backward, and a
full training step.

Every case uses the same network and data on every backend and peer: 784-512-512-10 with ReLU,
softmax cross-entropy, float32, Adam (learning rate 1e-3), weights drawn with a fixed seed and
uniform [0, 1) inputs of Fashion-MNIST's shape. The naive backend (pure Python loops, about a
microsecond per multiply-add) would take minutes per step on it, so it runs only in
``MLPSpeedup.track_speedup_over_naive``, on a 64-32-10 network.

What is timed:
- ``forward``: the logits of one batch (fastml ``MLP.forward``; torch under ``no_grad``).
- ``forward_backward``: loss and every parameter gradient (fastml ``loss_and_gradients`` with
  ``copy=False``; torch ``zero_grad``, forward, ``backward``).
- ``train_step``: the above plus the Adam update (fastml ``train_step``; torch adds
  ``optimizer.step()``). fastml's methods also validate their input (a NaN scan of the batch).

Threads: fastml uses ``fastml.get_num_threads()`` (FASTML_NUM_THREADS, else every CPU) and torch
is set to the same count with ``torch.set_num_threads``.
"""

import functools

import numpy as np

from ._util import best_time, import_peer, interleaved_best_times, skip

BACKENDS = ("naive", "numpy", "numba", "cython")
FAST = ("numpy", "numba", "cython")
PEERS = ("torch",)
BATCH_SIZES = (32, 256)

LAYERS = (784, 512, 512, 10)
NAIVE_LAYERS = (64, 32, 10)
NAIVE_BATCH = 16
LEARNING_RATE = 1e-3
SEED = 0
OPERATIONS = ("forward", "forward_backward", "train_step")


@functools.cache
def batch(n_rows, n_features):
    """Return seeded float32 inputs in [0, 1) and labels 0-9."""
    rng = np.random.default_rng(SEED)
    return rng.random((n_rows, n_features), dtype=np.float32), rng.integers(0, 10, size=n_rows)


def fastml_runners(backend, layers, n_rows):
    """Return {operation: callable} for a fastml MLP with `backend`."""
    from fastml.mlp import MLP

    X, y = batch(n_rows, layers[0])
    model = MLP(layers[1:-1], activation="relu", optimizer="adam", backend=backend)
    model.initialize(layers[0], layers[-1], dtype=np.float32, random_state=SEED)
    return {
        "forward": lambda: model.forward(X),
        "forward_backward": lambda: model.loss_and_gradients(X, y, copy=False),
        "train_step": lambda: model.train_step(X, y, learning_rate=LEARNING_RATE),
    }


def torch_runners(layers, n_rows):
    """Return {operation: callable} for the same network in torch."""
    try:
        torch = import_peer("torch")
    except ImportError:
        skip("torch is not installed in this environment (pip install torch==2.13.0)")
    from fastml import get_num_threads

    torch.set_num_threads(get_num_threads())
    torch.manual_seed(SEED)
    modules = []
    for index, (n_in, n_out) in enumerate(zip(layers[:-1], layers[1:])):
        modules.append(torch.nn.Linear(n_in, n_out))
        if index < len(layers) - 2:
            modules.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*modules)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    X, y = (torch.from_numpy(array) for array in batch(n_rows, layers[0]))

    def forward():
        with torch.no_grad():
            return net(X)

    def forward_backward():
        net.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(X), y)
        loss.backward()
        return loss

    def train_step():
        loss = forward_backward()
        optimizer.step()
        return loss

    return {"forward": forward, "forward_backward": forward_backward, "train_step": train_step}


@functools.cache
def runners(backend, layers, n_rows):
    """Return the warmed-up callables of `backend` (Numba compiles here, never in a timing)."""
    result = torch_runners(layers, n_rows) if backend == "torch" else fastml_runners(backend, layers, n_rows)
    for run in result.values():
        run()
    return result


class _Timed:
    params = (BACKENDS + PEERS, BATCH_SIZES)
    param_names = ("backend", "batch_size")
    timeout = 600
    operation = None

    def setup(self, backend, batch_size):
        if backend == "naive":
            skip(f"the naive backend runs only on the {NAIVE_LAYERS} network of MLPSpeedup")
        self.run = runners(backend, LAYERS, batch_size)[self.operation]


class MLPForward(_Timed):
    """Logits of one batch of the 784-512-512-10 network."""

    operation = "forward"

    def time_forward(self, backend, batch_size):
        self.run()


class MLPForwardBackward(_Timed):
    """Loss and every parameter gradient of one batch."""

    operation = "forward_backward"

    def time_forward_backward(self, backend, batch_size):
        self.run()


class MLPTrainStep(_Timed):
    """Forward, backward and the Adam update of one batch."""

    operation = "train_step"

    def time_train_step(self, backend, batch_size):
        self.run()


class MLPSpeedup:
    """Train-step time of torch or naive divided by the backend's (higher is better).

    ``track_speedup_over_torch``: 784-512-512-10, batch 256, float32, both in one process, timed
    in alternating rounds.
    ``track_speedup_over_naive``: the 64-32-10 network, batch 16, where the naive step takes
    about 0.1 s.
    """

    params = (FAST,)
    param_names = ("backend",)
    rounds = 1
    timeout = 600

    def track_speedup_over_torch(self, backend):
        torch_step = runners("torch", LAYERS, 256)["train_step"]
        step = runners(backend, LAYERS, 256)["train_step"]
        theirs, ours = interleaved_best_times(torch_step, step, rounds=5, repeat=10)
        return theirs / ours

    track_speedup_over_torch.unit = "torch time / time"

    def track_speedup_over_naive(self, backend):
        naive_step = runners("naive", NAIVE_LAYERS, NAIVE_BATCH)["train_step"]
        step = runners(backend, NAIVE_LAYERS, NAIVE_BATCH)["train_step"]
        return best_time(naive_step, repeat=3) / best_time(step, repeat=30)

    track_speedup_over_naive.unit = "naive time / time"

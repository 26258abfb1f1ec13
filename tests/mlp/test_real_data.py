"""Training on real data: scikit-learn's digits and Fashion-MNIST, seeded.

Both run on one thread: the result does not depend on the thread count (test_semantics.py), and
on a machine whose other core is busy, two BLAS threads made a 784-128-10 step 25x slower.
"""

import numpy as np
import pytest

import fastml
from fastml.datasets import load_digits, load_fashion_mnist
from fastml.mlp import MLP

from .conftest import BACKENDS

FAST = "cython" if "cython" in BACKENDS else "numpy"


def test_digits_reach_95_percent():
    pytest.importorskip("sklearn", reason="load_digits needs scikit-learn")
    X, y = load_digits()
    X /= 16.0  # pixel intensities 0..16 to 0..1
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1400], order[1400:]

    with fastml.num_threads(1):
        model = MLP((64,), activation="relu", backend=FAST)
        model.fit(X[train], y[train], epochs=40, batch_size=32, learning_rate=1e-3, random_state=0)
        accuracy = np.mean(model.predict(X[test]) == y[test])

    assert accuracy >= 0.95, f"test accuracy {accuracy:.4f} on {len(test)} held-out digits"


def test_fashion_mnist_reaches_85_percent():
    try:
        X, y = load_fashion_mnist("train")
        X_test, y_test = load_fashion_mnist("test")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    X /= 255.0
    X_test /= 255.0

    # All 60,000 training images, but only 2 epochs of one 128-unit hidden layer, so the test
    # takes about 7 s here. It is scored on all 10,000 test images.
    with fastml.num_threads(1):
        model = MLP((128,), activation="relu", backend=FAST)
        model.fit(X, y, epochs=2, batch_size=32, learning_rate=1e-3, random_state=0)
        accuracy = np.mean(model.predict(X_test) == y_test)

    assert accuracy >= 0.85, f"test accuracy {accuracy:.4f} on the 10,000 test images"

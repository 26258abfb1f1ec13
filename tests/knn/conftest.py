import numpy as np
import pytest

from fastml.backends import available_backends
from fastml.datasets import glove_path, load_fashion_mnist

BACKENDS = available_backends("knn")
FAST_BACKENDS = tuple(b for b in BACKENDS if b != "naive")
METRICS = ("euclidean", "sqeuclidean", "cosine", "manhattan")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=FAST_BACKENDS)
def fast_backend(request):
    return request.param


@pytest.fixture(scope="session")
def fashion_mnist():
    """The first 10,000 training and 1,000 test images of Fashion-MNIST, or a skip saying how to get them."""
    try:
        X_train, y_train = load_fashion_mnist("train", 10_000)
        X_test, y_test = load_fashion_mnist("test", 1_000)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return X_train, y_train, X_test, y_test


@pytest.fixture(scope="session")
def glove():
    try:
        glove_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    from fastml.datasets import load_glove

    return load_glove(20_500)


def module_of(backend):
    """The backend module, whose ``search`` also returns the number of uncertified queries."""
    from fastml import backends

    return backends.load("knn", backend)


def random_problem(n_train, n_query, n_features, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    X_train = rng.normal(size=(n_train, n_features)).astype(dtype)
    X_query = rng.normal(size=(n_query, n_features)).astype(dtype)
    return X_train, X_query

import numpy as np
import pytest

from fastml.backends import available_backends

BACKENDS = available_backends("sampling")
FAST_BACKENDS = tuple(b for b in BACKENDS if b != "naive")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=FAST_BACKENDS)
def fast_backend(request):
    return request.param


def softmax(logits):
    """Float64 softmax of one row (reference for the tests), with the max subtracted."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()

import pytest

from fastml.backends import available_backends

BACKENDS = available_backends("kmeans")
FAST_BACKENDS = tuple(b for b in BACKENDS if b != "naive")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=FAST_BACKENDS)
def fast_backend(request):
    return request.param

import numpy as np
import pytest

from fastml.backends import available_backends

BACKENDS = available_backends("mlp")
FAST_BACKENDS = tuple(b for b in BACKENDS if b != "naive")
ACTIVATIONS = ("relu", "tanh", "gelu")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=FAST_BACKENDS)
def fast_backend(request):
    return request.param


def central_differences(function, array, step=1e-6):
    """Return d function() / d array by central differences, perturbing `array` in place."""
    gradient = np.empty_like(array, dtype=np.float64)
    flat = array.reshape(-1)
    for index in range(flat.size):
        original = flat[index]
        flat[index] = original + step
        above = function()
        flat[index] = original - step
        below = function()
        flat[index] = original
        gradient.reshape(-1)[index] = (above - below) / (2 * step)
    return gradient


def relative_error(actual, expected):
    """||actual - expected|| / max(||actual||, ||expected||), 0 when both are zero."""
    scale = max(np.linalg.norm(actual), np.linalg.norm(expected))
    return 0.0 if scale == 0 else float(np.linalg.norm(actual - expected) / scale)


def away_from_zero(rng, shape, margin=0.05):
    """Normal draws pushed at least `margin` away from 0, where ReLU has its kink."""
    values = rng.normal(size=shape)
    return np.sign(values) * (margin + np.abs(values))


def small_network(backend, activation="relu", loss="cross_entropy", sizes=(3, 5, 4, 3), dtype=np.float64, seed=0,
                  optimizer="adam"):
    """Return an initialized MLP with the given layer sizes (inputs first, outputs last)."""
    from fastml.mlp import MLP

    model = MLP(sizes[1:-1], activation=activation, loss=loss, optimizer=optimizer, backend=backend)
    return model.initialize(sizes[0], sizes[-1], dtype=dtype, random_state=seed)

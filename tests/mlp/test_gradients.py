"""Hand-derived gradients against central finite differences, float64, every backend."""

import numpy as np
import pytest

from fastml.mlp import GELU, Linear, MeanSquaredError, ReLU, SoftmaxCrossEntropy, Tanh

from .conftest import ACTIVATIONS, away_from_zero, central_differences, relative_error, small_network

TOLERANCE = 1e-6
ACTIVATION_LAYERS = {"relu": ReLU, "tanh": Tanh, "gelu": GELU}


def test_linear_gradients(backend):
    rng = np.random.default_rng(1)
    layer = Linear(4, 5, random_state=2, backend=backend)
    layer.bias[:] = rng.normal(size=5)
    x = rng.normal(size=(3, 4))
    weights = rng.normal(size=(3, 5))

    def objective():
        return float(np.sum(layer.forward(x) * weights))

    objective()
    grad_x, grad_weight, grad_bias = layer.backward(weights)
    assert relative_error(grad_x, central_differences(objective, x)) < TOLERANCE
    assert relative_error(grad_weight, central_differences(objective, layer.weight)) < TOLERANCE
    assert relative_error(grad_bias, central_differences(objective, layer.bias)) < TOLERANCE


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_gradients(backend, activation):
    rng = np.random.default_rng(3)
    layer = ACTIVATION_LAYERS[activation](backend=backend)
    z = away_from_zero(rng, (4, 6)) * 2
    weights = rng.normal(size=z.shape)

    def objective():
        return float(np.sum(layer.forward(z) * weights))

    objective()
    grad = layer.backward(weights)
    assert relative_error(grad, central_differences(objective, z)) < TOLERANCE


def test_cross_entropy_gradient(backend):
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(5, 4)) * 3
    labels = rng.integers(0, 4, size=5)
    loss = SoftmaxCrossEntropy(backend=backend)

    loss.forward(logits, labels)
    grad = loss.backward()
    numeric = central_differences(lambda: loss.forward(logits, labels), logits)
    assert relative_error(grad, numeric) < TOLERANCE


def test_mse_gradient(backend):
    rng = np.random.default_rng(5)
    predictions = rng.normal(size=(5, 3))
    targets = rng.normal(size=(5, 3))
    loss = MeanSquaredError(backend=backend)

    loss.forward(predictions, targets)
    grad = loss.backward()
    numeric = central_differences(lambda: loss.forward(predictions, targets), predictions)
    assert relative_error(grad, numeric) < TOLERANCE


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_network_gradients(backend, activation, loss):
    rng = np.random.default_rng(6)
    model = small_network(backend, activation, loss, sizes=(3, 5, 4, 3))
    for layer in model.linear_layers:
        layer.bias[:] = rng.normal(size=layer.bias.shape) * 0.1
    X = rng.normal(size=(6, 3))
    y = rng.integers(0, 3, size=6) if loss == "cross_entropy" else rng.normal(size=(6, 3))

    _, grads = model.loss_and_gradients(X, y)

    def objective():
        return model.loss_and_gradients(X, y)[0]

    for layer, (grad_weight, grad_bias) in zip(model.linear_layers, grads):
        assert relative_error(grad_weight, central_differences(objective, layer.weight)) < TOLERANCE
        assert relative_error(grad_bias, central_differences(objective, layer.bias)) < TOLERANCE

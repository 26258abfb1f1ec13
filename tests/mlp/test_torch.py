"""Layers, losses, whole network and optimizers against torch autograd and torch.optim."""

import numpy as np
import pytest

from fastml.mlp import GELU, SGD, Adam, Linear, MeanSquaredError, ReLU, SoftmaxCrossEntropy, Tanh

from .conftest import ACTIVATIONS, small_network

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0)")
# One intra-op thread: torch's OpenMP workers would otherwise spin against the backends' threads.
torch.set_num_threads(1)

ACTIVATION_LAYERS = {"relu": ReLU, "tanh": Tanh, "gelu": GELU}
TORCH_ACTIVATIONS = {
    "relu": torch.nn.functional.relu,
    "tanh": torch.tanh,
    # The exact, erf-based GELU; fastml does not implement the tanh approximation.
    "gelu": lambda z: torch.nn.functional.gelu(z, approximate="none"),
}
TOLERANCES = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-6)}
DTYPES = [np.float64, np.float32]


def leaf(array):
    return torch.tensor(array, requires_grad=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_matches_torch(backend, dtype):
    rng = np.random.default_rng(0)
    layer = Linear(6, 4, dtype=dtype, random_state=1, backend=backend)
    layer.bias[:] = rng.normal(size=4)
    x = rng.normal(size=(5, 6)).astype(dtype)
    upstream = rng.normal(size=(5, 4)).astype(dtype)

    out = layer.forward(x)
    grad_x, grad_weight, grad_bias = layer.backward(upstream)

    x_t, w_t, b_t = leaf(x), leaf(layer.weight.T.copy()), leaf(layer.bias)
    out_t = torch.nn.functional.linear(x_t, w_t, b_t)
    out_t.backward(torch.tensor(upstream))
    np.testing.assert_allclose(out, out_t.detach().numpy(), **TOLERANCES[dtype])
    np.testing.assert_allclose(grad_x, x_t.grad.numpy(), **TOLERANCES[dtype])
    np.testing.assert_allclose(grad_weight, w_t.grad.numpy().T, **TOLERANCES[dtype])
    np.testing.assert_allclose(grad_bias, b_t.grad.numpy(), **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_matches_torch(backend, activation, dtype):
    rng = np.random.default_rng(2)
    z = (rng.normal(size=(4, 7)) * 3).astype(dtype)
    z[0, :3] = 0.0  # the kink of ReLU: both must give the derivative 0 there
    upstream = rng.normal(size=z.shape).astype(dtype)
    layer = ACTIVATION_LAYERS[activation](backend=backend)

    out = layer.forward(z)
    grad = layer.backward(upstream)

    z_t = leaf(z)
    out_t = TORCH_ACTIVATIONS[activation](z_t)
    out_t.backward(torch.tensor(upstream))
    np.testing.assert_allclose(out, out_t.detach().numpy(), **TOLERANCES[dtype])
    np.testing.assert_allclose(grad, z_t.grad.numpy(), **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_cross_entropy_matches_torch(backend, dtype, scale):
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(6, 5)) * scale).astype(dtype)
    labels = rng.integers(0, 5, size=6)
    loss = SoftmaxCrossEntropy(backend=backend)

    value = loss.forward(logits, labels)
    grad = loss.backward()

    logits_t = leaf(logits)
    value_t = torch.nn.functional.cross_entropy(logits_t, torch.tensor(labels))
    value_t.backward()
    assert np.isfinite(value)
    assert np.all(np.isfinite(grad))
    assert value == pytest.approx(value_t.item(), rel=TOLERANCES[dtype]["rtol"])
    np.testing.assert_allclose(grad, logits_t.grad.numpy(), **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_matches_torch(backend, dtype):
    rng = np.random.default_rng(4)
    predictions = rng.normal(size=(6, 3)).astype(dtype)
    targets = rng.normal(size=(6, 3)).astype(dtype)
    loss = MeanSquaredError(backend=backend)

    value = loss.forward(predictions, targets)
    grad = loss.backward()

    predictions_t = leaf(predictions)
    value_t = torch.nn.functional.mse_loss(predictions_t, torch.tensor(targets))
    value_t.backward()
    assert value == pytest.approx(value_t.item(), rel=TOLERANCES[dtype]["rtol"])
    np.testing.assert_allclose(grad, predictions_t.grad.numpy(), **TOLERANCES[dtype])


def torch_copy(model, activation):
    """Build the torch.nn.Sequential with the same weights as `model` (torch stores W.T)."""
    modules = []
    for index, layer in enumerate(model.linear_layers):
        linear = torch.nn.Linear(layer.in_features, layer.out_features, dtype=torch.from_numpy(layer.weight).dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(layer.weight.T.copy()))
            linear.bias.copy_(torch.from_numpy(layer.bias))
        modules.append(linear)
        if index < len(model.linear_layers) - 1:
            modules.append({"relu": torch.nn.ReLU(), "tanh": torch.nn.Tanh(), "gelu": torch.nn.GELU()}[activation])
    return torch.nn.Sequential(*modules)


def torch_loss(loss, outputs, y):
    if loss == "cross_entropy":
        return torch.nn.functional.cross_entropy(outputs, torch.tensor(y))
    return torch.nn.functional.mse_loss(outputs, torch.tensor(y))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_network_gradients_match_torch(backend, activation, loss, dtype):
    rng = np.random.default_rng(5)
    model = small_network(backend, activation, loss, sizes=(4, 6, 5, 3), dtype=dtype, seed=1)
    X = rng.normal(size=(7, 4)).astype(dtype)
    y = rng.integers(0, 3, size=7) if loss == "cross_entropy" else rng.normal(size=(7, 3)).astype(dtype)

    value, grads = model.loss_and_gradients(X, y)

    net = torch_copy(model, activation)
    value_t = torch_loss(loss, net(torch.from_numpy(X)), y)
    value_t.backward()
    linears_t = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert value == pytest.approx(value_t.item(), rel=TOLERANCES[dtype]["rtol"])
    for (grad_weight, grad_bias), linear in zip(grads, linears_t):
        np.testing.assert_allclose(grad_weight, linear.weight.grad.numpy().T, **TOLERANCES[dtype])
        np.testing.assert_allclose(grad_bias, linear.bias.grad.numpy(), **TOLERANCES[dtype])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_steps_match_torch_optim(backend, optimizer):
    rng = np.random.default_rng(6)
    ours = SGD(momentum=0.9) if optimizer == "sgd" else Adam(beta1=0.8, beta2=0.99, epsilon=1e-7)
    model = small_network(backend, "tanh", sizes=(4, 6, 3), seed=2, optimizer=ours)
    net = torch_copy(model, "tanh")
    if optimizer == "sgd":
        optim = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    else:
        optim = torch.optim.Adam(net.parameters(), lr=0.05, betas=(0.8, 0.99), eps=1e-7)

    for _ in range(5):
        X = rng.normal(size=(8, 4))
        y = rng.integers(0, 3, size=8)
        value = model.train_step(X, y, learning_rate=0.05)

        optim.zero_grad()
        value_t = torch_loss("cross_entropy", net(torch.from_numpy(X)), y)
        value_t.backward()
        optim.step()
        assert value == pytest.approx(value_t.item(), rel=1e-10)

    linears_t = [m for m in net if isinstance(m, torch.nn.Linear)]
    for layer, linear in zip(model.linear_layers, linears_t):
        np.testing.assert_allclose(layer.weight, linear.weight.detach().numpy().T, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.bias, linear.bias.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_predict_proba_matches_torch_softmax(backend):
    rng = np.random.default_rng(7)
    model = small_network(backend, "gelu", sizes=(4, 6, 3), seed=3)
    X = rng.normal(size=(9, 4)) * 10

    probabilities = model.predict_proba(X)

    expected = torch.softmax(torch_copy(model, "gelu")(torch.from_numpy(X)), dim=1).detach().numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-10, atol=1e-14)

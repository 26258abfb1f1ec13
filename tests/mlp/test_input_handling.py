"""Bad input raises ValueError or TypeError naming the parameter and the value."""

import numpy as np
import pytest

from fastml.mlp import MLP, SGD, Adam, Linear, MeanSquaredError, ReLU, SoftmaxCrossEntropy

from .conftest import small_network


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(12, 3)), np.arange(12) % 3


def test_label_out_of_range_in_loss(backend):
    loss = SoftmaxCrossEntropy(backend=backend)
    with pytest.raises(ValueError, match=r"labels contains the label 3 at index 1, out of range; expected class indices in \[0, 3\)"):
        loss.forward(np.zeros((2, 3)), [0, 3])
    with pytest.raises(ValueError, match=r"labels contains the label -1 at index 0"):
        loss.forward(np.zeros((2, 3)), [-1, 0])
    with pytest.raises(ValueError, match=r"labels must contain integer class indices, got dtype float64"):
        loss.forward(np.zeros((2, 3)), [0.5, 1.0])


def test_label_unknown_to_model(backend, data):
    X, y = data
    model = small_network(backend, sizes=(3, 4, 3))
    with pytest.raises(ValueError, match=r"y contains the label 7 at index 2, which is not one of the 3 classes of this model \(0, 1, 2\)"):
        model.train_step(X[:3], [0, 1, 7])
    with pytest.raises(ValueError, match=r"y contains the label -1 at index 0"):
        model.loss_and_gradients(X[:1], [-1])


def test_shape_mismatch(backend, data):
    X, y = data
    model = small_network(backend, sizes=(3, 4, 3))
    with pytest.raises(ValueError, match=r"X has 2 features, but this MLP expects 3"):
        model.predict(X[:, :2])
    with pytest.raises(ValueError, match=r"y has shape \(11,\); expected \(12,\), one label per row of X"):
        model.train_step(X, y[:11])
    with pytest.raises(ValueError, match=r"y has shape \(11,\), but X has 12 rows; they must match"):
        MLP((2,), backend=backend).fit(X, y[:11])
    with pytest.raises(ValueError, match=r"x has 4 features; this Linear layer expects 3"):
        Linear(3, 2, backend=backend).forward(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"targets has shape \(2, 2\); expected \(2, 3\)"):
        MeanSquaredError(backend=backend).forward(np.ones((2, 3)), np.ones((2, 2)))
    layer = ReLU(backend=backend)
    layer.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"grad_output has shape \(3, 2\); expected \(2, 3\)"):
        layer.backward(np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"X must be 2-D with shape \(n_samples, n_features\), got shape \(12,\)"):
        MLP((2,), backend=backend).fit(X[:, 0], y)


def test_nan_and_infinity(backend, data):
    X, y = data
    bad = X.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(first at index \(4, 1\): nan\)"):
        MLP((2,), backend=backend).fit(bad, y)
    model = small_network(backend, sizes=(3, 4, 3))
    bad[4, 1] = np.inf
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(first at index \(4, 1\): inf\)"):
        model.train_step(bad, y)
    with pytest.raises(ValueError, match=r"logits contains NaN or infinity"):
        SoftmaxCrossEntropy(backend=backend).forward([[0.0, np.nan]], [0])
    regression = small_network(backend, loss="mse", sizes=(3, 4, 1))
    with pytest.raises(ValueError, match=r"y contains NaN or infinity \(first at index \(1, 0\): nan\)"):
        regression.train_step(X[:2], [0.0, np.nan])


def test_empty_batch(backend, data):
    X, y = data
    model = small_network(backend, sizes=(3, 4, 3))
    with pytest.raises(ValueError, match=r"X has 0 sample\(s\) \(shape=\(0, 3\)\) while a minimum of 1 is required"):
        model.train_step(X[:0], y[:0])
    with pytest.raises(ValueError, match=r"X has 0 sample\(s\)"):
        MLP((2,), backend=backend).fit(X[:0], y[:0])
    with pytest.raises(ValueError, match=r"x has 0 sample\(s\)"):
        Linear(3, 2, backend=backend).forward(np.ones((0, 3)))
    with pytest.raises(ValueError, match=r"batch_size must be >= 1, got 0"):
        MLP((2,), backend=backend).fit(X, y, batch_size=0)


@pytest.mark.parametrize("learning_rate", [0.0, -0.1])
def test_non_positive_learning_rate(backend, data, learning_rate):
    X, y = data
    with pytest.raises(ValueError, match=rf"learning_rate must be > 0.0, got {learning_rate}"):
        MLP((2,), backend=backend).fit(X, y, learning_rate=learning_rate)
    model = small_network(backend, sizes=(3, 4, 3))
    with pytest.raises(ValueError, match=rf"learning_rate must be > 0.0, got {learning_rate}"):
        model.train_step(X, y, learning_rate=learning_rate)


def test_invalid_parameters(backend, data):
    X, y = data
    cases = [
        (dict(hidden_sizes=(4, 0)), r"hidden_sizes must be >= 1, got 0"),
        (dict(activation="sigmoid"), r"invalid activation='sigmoid'; expected one of \['relu', 'tanh', 'gelu'\]"),
        (dict(loss="hinge"), r"invalid loss='hinge'; expected one of \['cross_entropy', 'mse'\]"),
        (dict(optimizer="rmsprop"), r"invalid optimizer='rmsprop'; expected one of \['sgd', 'adam'\]"),
    ]
    for params, message in cases:
        with pytest.raises(ValueError, match=message):
            MLP(**{"hidden_sizes": (2,), **params, "backend": backend}).fit(X, y)
    with pytest.raises(ValueError, match=r"epochs must be >= 1, got 0"):
        MLP((2,), backend=backend).fit(X, y, epochs=0)
    with pytest.raises(ValueError, match=r"y has 1 class \(1\); at least 2 are needed"):
        MLP((2,), backend=backend).fit(X, np.ones(12, dtype=int))
    with pytest.raises(ValueError, match=r"invalid backend='fortran' for mlp"):
        MLP((2,), backend="fortran").fit(X, y)


def test_invalid_optimizer_settings():
    with pytest.raises(ValueError, match=r"momentum must be < 1.0, got 1.0"):
        SGD(momentum=1.0)
    with pytest.raises(ValueError, match=r"momentum must be >= 0.0, got -0.5"):
        SGD(momentum=-0.5)
    with pytest.raises(ValueError, match=r"beta2 must be < 1.0, got 1.0"):
        Adam(beta2=1.0)
    with pytest.raises(ValueError, match=r"epsilon must be > 0.0, got 0.0"):
        Adam(epsilon=0.0)


def test_unfitted_model_and_backward_before_forward(backend):
    with pytest.raises(ValueError, match=r"this MLP instance has no layers yet; call 'fit' or 'initialize' first"):
        MLP((2,), backend=backend).predict(np.ones((1, 2)))
    with pytest.raises(RuntimeError, match=r"ReLU.backward called before forward"):
        ReLU(backend=backend).backward(np.ones((1, 1)))
    with pytest.raises(ValueError, match=r"predict_proba needs loss='cross_entropy', but this model has loss='mse'"):
        small_network(backend, loss="mse", sizes=(2, 2)).predict_proba(np.ones((1, 2)))


def test_float32_input_to_float64_model_is_converted(backend, data):
    X, y = data
    model = small_network(backend, sizes=(3, 4, 3))
    assert model.forward(X.astype(np.float32)).dtype == np.float64


def test_assigned_transposed_weight_is_used(backend):
    # A torch Linear stores (out, in), so its `.T` is a Fortran-ordered (in, out) view.
    rng = np.random.default_rng(0)
    layer = Linear(5, 3, random_state=0, backend=backend)
    torch_layout = rng.normal(size=(3, 5))
    layer.weight = torch_layout.T
    layer.bias = np.arange(3.0)
    x = rng.normal(size=(4, 5))

    np.testing.assert_allclose(layer.forward(x), x @ torch_layout.T + np.arange(3.0), rtol=1e-12)
    assert layer.weight.flags.c_contiguous


def test_assigned_parameter_of_wrong_shape_or_value(backend):
    layer = Linear(5, 3, backend=backend)
    with pytest.raises(ValueError, match=r"weight has shape \(3, 5\); expected \(5, 3\)"):
        layer.weight = np.zeros((3, 5))
    with pytest.raises(ValueError, match=r"bias has shape \(5,\); expected \(3,\)"):
        layer.bias = np.zeros(5)
    with pytest.raises(ValueError, match="bias contains NaN or infinity"):
        layer.bias = np.array([0.0, np.nan, 0.0])

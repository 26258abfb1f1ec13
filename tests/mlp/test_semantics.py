"""Documented semantics: hand-computed cases, ReLU at 0, stable softmax, dtypes, threads, seeds."""

import math

import numpy as np
import pytest

import fastml
from fastml.mlp import GELU, MLP, SGD, Adam, Linear, MeanSquaredError, ReLU, SoftmaxCrossEntropy, Tanh

from .conftest import small_network


def test_linear_hand_computed(backend):
    layer = Linear(2, 2, backend=backend)
    layer.weight[:] = [[1.0, 2.0], [3.0, 4.0]]
    layer.bias[:] = [0.5, -0.5]

    out = layer.forward([[1.0, 1.0], [2.0, 0.0]])
    grad_x, grad_weight, grad_bias = layer.backward([[1.0, 0.0], [0.0, 1.0]])

    np.testing.assert_array_equal(out, [[4.5, 5.5], [2.5, 3.5]])
    np.testing.assert_array_equal(grad_x, [[1.0, 3.0], [2.0, 4.0]])
    np.testing.assert_array_equal(grad_weight, [[1.0, 2.0], [1.0, 0.0]])
    np.testing.assert_array_equal(grad_bias, [1.0, 1.0])


def test_relu_derivative_at_zero_is_zero(backend):
    layer = ReLU(backend=backend)
    z = np.array([[-1.0, 0.0, 2.0], [0.0, -0.0, 1e-300]])

    out = layer.forward(z)
    grad = layer.backward(np.full(z.shape, 5.0))

    np.testing.assert_array_equal(out, [[0.0, 0.0, 2.0], [0.0, 0.0, 1e-300]])
    np.testing.assert_array_equal(grad, [[0.0, 0.0, 5.0], [0.0, 0.0, 5.0]])


def test_tanh_and_gelu_hand_computed(backend):
    z = np.array([[0.0, 1.0, -2.0]])
    tanh, gelu = Tanh(backend=backend), GELU(backend=backend)

    tanh_out, gelu_out = tanh.forward(z), gelu.forward(z)
    tanh_grad, gelu_grad = tanh.backward(np.ones_like(z)), gelu.backward(np.ones_like(z))

    def cdf(v):
        return 0.5 * (1 + math.erf(v / math.sqrt(2)))

    def density(v):
        return math.exp(-v * v / 2) / math.sqrt(2 * math.pi)

    np.testing.assert_allclose(tanh_out, [[0.0, math.tanh(1), math.tanh(-2)]], rtol=1e-15)
    np.testing.assert_allclose(tanh_grad, [[1.0, 1 - math.tanh(1) ** 2, 1 - math.tanh(2) ** 2]], rtol=1e-14)
    np.testing.assert_allclose(gelu_out, [[0.0, cdf(1), -2 * cdf(-2)]], rtol=1e-14)
    np.testing.assert_allclose(gelu_grad, [[0.5, cdf(1) + density(1), cdf(-2) - 2 * density(-2)]], rtol=1e-14)


def test_cross_entropy_hand_computed(backend):
    loss = SoftmaxCrossEntropy(backend=backend)
    # Row 0: equal logits, so log(3). Row 1: softmax (e^2, 1, 1) / (e^2 + 2).
    value = loss.forward([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]], [1, 0])
    grad = loss.backward()

    total = math.e**2 + 2
    assert value == pytest.approx((math.log(3) + math.log(total) - 2) / 2, rel=1e-14)
    expected = np.array([[1 / 3, 1 / 3 - 1, 1 / 3], [math.e**2 / total - 1, 1 / total, 1 / total]]) / 2
    np.testing.assert_allclose(grad, expected, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_large_logits_stay_finite(backend, dtype):
    loss = SoftmaxCrossEntropy(backend=backend)
    big = float(np.finfo(dtype).max) / 4
    logits = np.array([[big, 0.0, -big], [1e4, 1e4 - 10, 0.0]], dtype=dtype)

    value = loss.forward(logits, [2, 1])
    grad = loss.backward()

    # Row 0: the loss is big - (-big) = 2 big, still finite; row 1: 10 + log(1 + e^-10).
    assert math.isfinite(value)
    assert value == pytest.approx((2 * big + 10 + math.log1p(math.exp(-10))) / 2, rel=1e-6)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-6)


def test_mse_hand_computed(backend):
    loss = MeanSquaredError(backend=backend)
    value = loss.forward([[1.0, 2.0], [3.0, 4.0]], [[1.0, 0.0], [0.0, 4.0]])
    grad = loss.backward()
    assert value == pytest.approx((4 + 9) / 4)
    np.testing.assert_allclose(grad, [[0.0, 1.0], [1.5, 0.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(backend, dtype):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3)).astype(dtype)
    y = np.arange(20) % 2
    model = MLP((4,), backend=backend).fit(X, y, epochs=1, batch_size=8, random_state=0)

    assert all(layer.weight.dtype == dtype for layer in model.linear_layers)
    assert model.forward(X).dtype == dtype
    assert model.predict_proba(X).dtype == dtype
    assert ReLU(backend=backend).forward(X).dtype == dtype


def test_integer_input_becomes_float64(backend):
    X = np.arange(24).reshape(12, 2) % 5
    model = MLP((3,), backend=backend).fit(X, np.arange(12) % 3, epochs=1, random_state=0)
    assert model.dtype == np.float64


def test_same_seed_same_model(backend):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 3, size=30)

    first = MLP((5,), backend=backend).fit(X, y, epochs=2, batch_size=7, random_state=11)
    second = MLP((5,), backend=backend).fit(X, y, epochs=2, batch_size=7, random_state=11)
    third = MLP((5,), backend=backend).fit(X, y, epochs=2, batch_size=7, random_state=12)

    np.testing.assert_array_equal(first.forward(X), second.forward(X))
    assert not np.array_equal(first.forward(X), third.forward(X))


@pytest.mark.parametrize("n_rows", [300, 24])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_result_independent_of_thread_count(fast_backend, dtype, activation, n_rows):
    # Large enough to split the work between threads, in blocks of 16 that do not divide 300
    # or 200. Cython splits the products of 300 rows by rows and those of 24 rows by features.
    rng = np.random.default_rng(2)
    X = rng.normal(size=(n_rows, 120)).astype(dtype)
    y = rng.integers(0, 10, size=n_rows)
    models = []
    for n_threads in (1, 2):
        with fastml.num_threads(n_threads):
            model = small_network(fast_backend, activation, sizes=(120, 200, 10), dtype=dtype, seed=3)
            model.train_step(X, y, learning_rate=1e-3)
            models.append(model)

    tolerance = dict(rtol=1e-4, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    for one, two in zip(models[0].linear_layers, models[1].linear_layers):
        np.testing.assert_allclose(one.weight, two.weight, **tolerance)
        np.testing.assert_allclose(one.bias, two.bias, **tolerance)


def test_initialization_he_for_relu_glorot_otherwise(backend):
    relu = small_network(backend, "relu", sizes=(400, 300, 200), seed=0)
    tanh = small_network(backend, "tanh", sizes=(400, 300, 200), seed=0)

    # He: normal with std sqrt(2 / fan_in); Glorot: uniform in +-sqrt(6 / (fan_in + fan_out)).
    assert relu.linear_layers[0].weight.std() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    glorot_limit = math.sqrt(6 / (400 + 300))
    assert np.abs(tanh.linear_layers[0].weight).max() <= glorot_limit
    assert tanh.linear_layers[0].weight.std() == pytest.approx(glorot_limit / math.sqrt(3), rel=0.02)
    # The output layer follows no ReLU, so it is Glorot in both networks.
    assert np.abs(relu.linear_layers[1].weight).max() <= math.sqrt(6 / (300 + 200))
    assert not relu.linear_layers[0].bias.any()


def test_predict_ties_go_to_lowest_class(backend):
    model = small_network(backend, "relu", sizes=(2, 3, 3))
    for layer in model.linear_layers:
        layer.weight[:] = 0.0
    model.linear_layers[-1].bias[:] = [1.0, 2.0, 2.0]

    np.testing.assert_array_equal(model.predict(np.ones((4, 2))), [1, 1, 1, 1])


def test_predict_returns_original_labels(backend):
    rng = np.random.default_rng(4)
    X = np.vstack([rng.normal(-3, 0.3, size=(20, 2)), rng.normal(3, 0.3, size=(20, 2))])
    y = np.array(["cat"] * 20 + ["dog"] * 20)

    model = MLP((4,), backend=backend).fit(X, y, epochs=20, batch_size=8, learning_rate=0.05, random_state=0)

    np.testing.assert_array_equal(model.classes_, ["cat", "dog"])
    np.testing.assert_array_equal(model.predict(X), y)
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0)


def test_mse_regression_learns_a_line(backend):
    rng = np.random.default_rng(5)
    X = rng.uniform(-1, 1, size=(64, 1))
    y = 3 * X[:, 0] - 1

    model = MLP((), loss="mse", optimizer=SGD(momentum=0.9), backend=backend)
    model.fit(X, y, epochs=40, batch_size=16, learning_rate=0.05, random_state=0)

    assert model.predict(X).shape == (64,)
    np.testing.assert_allclose(model.linear_layers[0].weight, [[3.0]], atol=1e-3)
    np.testing.assert_allclose(model.linear_layers[0].bias, [-1.0], atol=1e-3)


def test_fit_leaves_optimizer_argument_unchanged(backend):
    optimizer = Adam()
    rng = np.random.default_rng(6)
    MLP((3,), optimizer=optimizer, backend=backend).fit(rng.normal(size=(10, 2)), np.arange(10) % 2, random_state=0)
    assert optimizer.n_steps == 0


def test_forward_buffers_reused_across_sizes_and_threads(fast_backend):
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    model = small_network(fast_backend, "relu", sizes=(20, 30, 4), seed=1)
    batches = [rng.normal(size=(n_rows, 20)) for n_rows in (50, 7, 50, 120)]
    expected = [model.forward(X) for X in batches]

    # A smaller batch after a larger one, and a larger one after it, read the same results.
    for X, result in zip(batches, expected):
        np.testing.assert_array_equal(model.forward(X), result)

    # Concurrent calls on one model: each takes the cached buffers or allocates its own.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(model.forward, batches * 8))
    for index, result in enumerate(results):
        np.testing.assert_allclose(result, expected[index % len(batches)], rtol=1e-12)

"""Every optimized backend against the naive one, on random small shapes."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastml.mlp import GELU, MLP, SGD, Adam, Linear, MeanSquaredError, ReLU, SoftmaxCrossEntropy, Tanh

from .conftest import FAST_BACKENDS

ACTIVATION_LAYERS = {"relu": ReLU, "tanh": Tanh, "gelu": GELU}
# The naive backend computes in float64 and rounds once; the others compute float32 in float32.
TOLERANCES = {np.float64: dict(rtol=1e-9, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-5)}

shapes = st.tuples(st.integers(1, 7), st.integers(1, 6), st.integers(1, 6))
dtypes = st.sampled_from([np.float64, np.float32])
seeds = st.integers(0, 2**32 - 1)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@given(shape=shapes, dtype=dtypes, seed=seeds)
def test_linear_matches_naive(backend, shape, dtype, seed):
    batch, n_in, n_out = shape
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, n_in)).astype(dtype)
    upstream = rng.normal(size=(batch, n_out)).astype(dtype)
    results = {}
    for name in ("naive", backend):
        layer = Linear(n_in, n_out, dtype=dtype, random_state=seed, backend=name)
        layer.bias[:] = np.arange(n_out) / 7
        results[name] = (layer.forward(x), *layer.backward(upstream))

    for actual, expected in zip(results[backend], results["naive"]):
        assert actual.dtype == dtype
        np.testing.assert_allclose(actual, expected, **TOLERANCES[dtype])


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@given(shape=shapes, dtype=dtypes, seed=seeds, activation=st.sampled_from(sorted(ACTIVATION_LAYERS)),
       zeros=st.booleans())
def test_activation_matches_naive(backend, shape, dtype, seed, activation, zeros):
    batch, n_columns, _ = shape
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(batch, n_columns)) * 4).astype(dtype)
    if zeros:
        z[rng.random(z.shape) < 0.5] = 0.0
    upstream = rng.normal(size=z.shape).astype(dtype)
    results = {}
    for name in ("naive", backend):
        layer = ACTIVATION_LAYERS[activation](backend=name)
        results[name] = (layer.forward(z), layer.backward(upstream))

    for actual, expected in zip(results[backend], results["naive"]):
        np.testing.assert_allclose(actual, expected, **TOLERANCES[dtype])


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@given(shape=shapes, dtype=dtypes, seed=seeds, scale=st.sampled_from([1.0, 100.0, 1e4]))
def test_losses_match_naive(backend, shape, dtype, seed, scale):
    batch, n_classes, _ = shape
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(batch, n_classes)) * scale).astype(dtype)
    labels = rng.integers(0, n_classes, size=batch)
    targets = rng.normal(size=logits.shape).astype(dtype)
    results = {}
    for name in ("naive", backend):
        cross_entropy, squared = SoftmaxCrossEntropy(backend=name), MeanSquaredError(backend=name)
        ce_value = cross_entropy.forward(logits, labels)
        mse_value = squared.forward(logits / scale, targets)
        results[name] = (ce_value, cross_entropy.backward(), mse_value, squared.backward())

    ce, ce_grad, mse, mse_grad = results[backend]
    ce_naive, ce_grad_naive, mse_naive, mse_grad_naive = results["naive"]
    rtol = TOLERANCES[dtype]["rtol"]
    assert ce == pytest.approx(ce_naive, rel=rtol, abs=rtol * scale)
    assert mse == pytest.approx(mse_naive, rel=rtol)
    np.testing.assert_allclose(ce_grad, ce_grad_naive, **TOLERANCES[dtype])
    np.testing.assert_allclose(mse_grad, mse_grad_naive, **TOLERANCES[dtype])


@st.composite
def training_problems(draw):
    """A small network, data, and an optimizer; Adam only in float64.

    In float32, a gradient that is 0 on one backend can be a rounding residue of 1e-9 on another,
    and Adam divides it by its own square root: the step then differs by up to the learning rate.
    """
    dtype = draw(dtypes)
    optimizer = draw(st.sampled_from(["sgd", "adam"] if dtype == np.float64 else ["sgd"]))
    hidden = tuple(draw(st.lists(st.integers(1, 6), max_size=2)))
    return dict(
        seed=draw(seeds), dtype=dtype, optimizer=optimizer, hidden=hidden,
        activation=draw(st.sampled_from(sorted(ACTIVATION_LAYERS))),
        loss=draw(st.sampled_from(["cross_entropy", "mse"])),
        n_samples=draw(st.integers(2, 12)), n_features=draw(st.integers(1, 4)),
        batch_size=draw(st.integers(1, 5)),
    )


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@given(problem=training_problems())
def test_fit_matches_naive(backend, problem):
    rng = np.random.default_rng(problem["seed"])
    X = rng.normal(size=(problem["n_samples"], problem["n_features"])).astype(problem["dtype"])
    if problem["loss"] == "cross_entropy":
        y = np.arange(problem["n_samples"]) % 3
    else:
        y = rng.normal(size=(problem["n_samples"], 2))
    fits = {}
    for name in ("naive", backend):
        optimizer = SGD(momentum=0.9) if problem["optimizer"] == "sgd" else Adam()
        model = MLP(problem["hidden"], activation=problem["activation"], loss=problem["loss"],
                    optimizer=optimizer, backend=name)
        fits[name] = model.fit(X, y, epochs=2, batch_size=problem["batch_size"], learning_rate=0.01,
                               random_state=problem["seed"])

    tolerance = TOLERANCES[problem["dtype"]]
    np.testing.assert_allclose(fits[backend].loss_curve_, fits["naive"].loss_curve_, **tolerance)
    for layer, expected in zip(fits[backend].linear_layers, fits["naive"].linear_layers):
        np.testing.assert_allclose(layer.weight, expected.weight, **tolerance)
        np.testing.assert_allclose(layer.bias, expected.bias, **tolerance)
    np.testing.assert_allclose(fits[backend].forward(X), fits["naive"].forward(X), **tolerance)

"""Classification votes and regression means, hand-computed, on every backend."""

import warnings

import numpy as np
import pytest

from fastml.knn import predict, predict_proba

X_LINE = np.array([[0.0], [3.0], [4.0]])


def test_vote_tie_goes_to_smallest_label(backend):
    X_train = [[0.0], [1.0], [2.0], [3.0]]
    labels = [5, 3, 5, 3]
    # k=2: rows 1 and 2 (labels 3 and 5); k=4: two of each.
    assert predict(X_train, labels, [[1.5]], 2, backend=backend).tolist() == [3]
    assert predict(X_train, labels, [[1.5]], 4, backend=backend).tolist() == [3]
    assert predict(X_train, ["b", "a", "b", "a"], [[1.5]], 2, backend=backend).tolist() == ["a"]


def test_distance_weights_change_the_vote(backend):
    # From 1: row 0 at distance 1 (label 0), rows 1 and 2 at 2 and 3 (label 1).
    labels = [0, 1, 1]
    assert predict(X_LINE, labels, [[1.0]], 3, backend=backend).tolist() == [1]
    assert predict(X_LINE, labels, [[1.0]], 3, weights="distance", backend=backend).tolist() == [0]

    proba = predict_proba(X_LINE, labels, [[1.0]], 3, weights="distance", backend=backend)
    total = 1.0 + 1 / 2 + 1 / 3
    np.testing.assert_allclose(proba, [[1.0 / total, (1 / 2 + 1 / 3) / total]], rtol=1e-15)


def test_zero_distance_decides_alone(backend):
    X_train = [[0.0], [0.0], [1.0], [5.0]]
    labels = [1, 2, 0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        proba = predict_proba(X_train, labels, [[0.0]], 4, weights="distance", backend=backend)
        label = predict(X_train, labels, [[0.0]], 4, weights="distance", backend=backend)
    # Rows 0 and 1 are at distance zero and count 1 each; rows 2 and 3 count nothing.
    np.testing.assert_array_equal(proba, [[0.0, 0.5, 0.5]])
    assert label.tolist() == [1]


def test_uniform_probabilities(backend):
    X_train = [[0.0], [1.0], [2.0], [10.0]]
    proba = predict_proba(X_train, ["x", "y", "y", "z"], [[1.0], [9.0]], 3, backend=backend)
    np.testing.assert_allclose(proba, [[1 / 3, 2 / 3, 0.0], [0.0, 2 / 3, 1 / 3]], rtol=1e-15)


def test_regression_means(backend):
    targets = [10.0, 20.0, 40.0]
    uniform = predict(X_LINE, targets, [[1.0]], 3, task="regression", backend=backend)
    distance = predict(X_LINE, targets, [[1.0]], 3, task="regression", weights="distance", backend=backend)
    np.testing.assert_allclose(uniform, [70.0 / 3], rtol=1e-15)
    np.testing.assert_allclose(distance, [(10.0 + 20.0 / 2 + 40.0 / 3) / (1 + 1 / 2 + 1 / 3)], rtol=1e-15)


def test_regression_exact_match(backend):
    prediction = predict(X_LINE, [10.0, 20.0, 40.0], [[3.0]], 3, task="regression", weights="distance", backend=backend)
    assert prediction.tolist() == [20.0]


def test_regression_several_outputs(backend):
    targets = np.array([[1.0, -1.0], [2.0, -2.0], [4.0, -4.0]])
    prediction = predict(X_LINE, targets, [[1.0], [3.9]], 2, task="regression", backend=backend)
    assert prediction.shape == (2, 2)
    np.testing.assert_allclose(prediction, [[1.5, -1.5], [3.0, -3.0]], rtol=1e-15)


def test_weights_function(backend):
    def gaussian(distances):
        return np.exp(-(distances**2))

    targets = [10.0, 20.0, 40.0]
    prediction = predict(X_LINE, targets, [[1.0]], 3, task="regression", weights=gaussian, backend=backend)
    weights = np.exp(-np.array([1.0, 4.0, 9.0]))
    np.testing.assert_allclose(prediction, [weights @ targets / weights.sum()], rtol=1e-13)


def test_probabilities_sum_to_one(backend):
    rng = np.random.default_rng(0)
    X_train = rng.normal(size=(40, 3))
    labels = rng.integers(0, 4, size=40)
    proba = predict_proba(X_train, labels, rng.normal(size=(7, 3)), 6, weights="distance", backend=backend)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert proba.shape == (7, 4)

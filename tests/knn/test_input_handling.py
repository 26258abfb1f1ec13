"""Invalid input: each error names the argument, its value and what is accepted."""

import numpy as np
import pytest

from fastml.datasets import load_fashion_mnist
from fastml.knn import kneighbors, predict, predict_proba

X_TRAIN = np.arange(20, dtype=np.float64).reshape(10, 2)
Y_TRAIN = np.array([0, 1] * 5)


@pytest.mark.parametrize(
    ("k", "error", "message"),
    [
        (0, ValueError, r"k must be >= 1, got 0"),
        (-3, ValueError, r"k must be >= 1, got -3"),
        (11, ValueError, r"k=11 is greater than the number of training rows n_train=10; k must be between 1 and 10"),
        (2.0, TypeError, r"k must be an int, got 2.0"),
        (True, TypeError, r"k must be an int, got True"),
    ],
)
def test_invalid_k(k, error, message):
    with pytest.raises(error, match=message):
        kneighbors(X_TRAIN, X_TRAIN, k)


def test_unknown_metric():
    with pytest.raises(ValueError, match=r"invalid metric='chebyshev'; expected one of \['euclidean', 'sqeuclidean', 'cosine', 'manhattan'\]"):
        kneighbors(X_TRAIN, X_TRAIN, 2, metric="chebyshev")


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"invalid backend='gpu' for knn"):
        kneighbors(X_TRAIN, X_TRAIN, 2, backend="gpu")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", ["X_train", "X_query"])
def test_non_finite_values(name, bad):
    X = X_TRAIN.copy()
    X[3, 1] = bad
    arrays = {"X_train": X_TRAIN, "X_query": X_TRAIN, name: X}
    with pytest.raises(ValueError, match=rf"{name} contains NaN or infinity \(first at index \(3, 1\)"):
        kneighbors(arrays["X_train"], arrays["X_query"], 2)


def test_feature_count_mismatch():
    with pytest.raises(ValueError, match=r"X_query has 3 features but X_train has 2; they must match"):
        kneighbors(X_TRAIN, np.zeros((4, 3)), 2)


@pytest.mark.parametrize(
    ("X_train", "X_query", "message"),
    [
        (np.zeros(5), np.zeros((1, 1)), r"X_train must be 2-D with shape \(n_samples, n_features\), got shape \(5,\)"),
        (np.zeros((3, 2)), np.zeros(2), r"X_query must be 2-D with shape \(n_samples, n_features\), got shape \(2,\)"),
        (np.zeros((0, 2)), np.zeros((1, 2)), r"X_train has 0 sample\(s\) \(shape=\(0, 2\)\) while a minimum of 1 is required"),
        (np.zeros((3, 0)), np.zeros((1, 0)), r"X_train has 0 feature\(s\)"),
    ],
)
def test_invalid_shapes(X_train, X_query, message):
    with pytest.raises(ValueError, match=message):
        kneighbors(X_train, X_query, 1)


def test_non_numeric_input():
    with pytest.raises(TypeError, match=r"X_train must contain numbers, got dtype <U1"):
        kneighbors([["a", "b"]], [[1.0, 2.0]], 1)


@pytest.mark.parametrize(("metric", "limit"), [("euclidean", "4.74e\\+153"), ("manhattan", "4.49e\\+307")])
def test_values_that_would_overflow(metric, limit):
    X = X_TRAIN.copy()
    X[0, 0] = 1e308
    with pytest.raises(ValueError, match=rf"X_query has a value of magnitude 1e\+308, above {limit}, where {metric} distances overflow float64; rescale the data"):
        kneighbors(X_TRAIN, X, 1, metric=metric)


def test_invalid_weights():
    with pytest.raises(ValueError, match=r"invalid weights='inverse'; expected one of \['uniform', 'distance'\]"):
        predict(X_TRAIN, Y_TRAIN, X_TRAIN, 3, weights="inverse")


def test_invalid_task():
    with pytest.raises(ValueError, match=r"invalid task='ranking'; expected one of \['classification', 'regression'\]"):
        predict(X_TRAIN, Y_TRAIN, X_TRAIN, 3, task="ranking")


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (lambda d: np.ones(d.shape[0]), r"the weights function returned shape \(10,\); expected \(10, 3\)"),
        (lambda d: -np.ones_like(d), r"the weights function must return finite, non-negative weights"),
        (lambda d: np.full_like(d, np.nan), r"the weights function must return finite, non-negative weights"),
        (lambda d: np.zeros_like(d), r"the weights function returned a row of zero weights"),
    ],
)
def test_invalid_weights_function(weights, message):
    with pytest.raises(ValueError, match=message):
        predict(X_TRAIN, Y_TRAIN, X_TRAIN, 3, weights=weights)


def test_label_count_mismatch():
    with pytest.raises(ValueError, match=r"y_train has 9 labels but X_train has 10 rows; they must match"):
        predict_proba(X_TRAIN, Y_TRAIN[:9], X_TRAIN, 3)


def test_labels_must_be_1d():
    with pytest.raises(ValueError, match=r"y_train must be 1-D with shape \(n_train,\) for classification, got shape \(10, 2\)"):
        predict(X_TRAIN, np.zeros((10, 2)), X_TRAIN, 3)


def test_labels_must_be_finite():
    labels = Y_TRAIN.astype(float)
    labels[2] = np.nan
    with pytest.raises(ValueError, match=r"y_train contains NaN or infinity; class labels must be finite"):
        predict(X_TRAIN, labels, X_TRAIN, 3)


def test_regression_target_rows_mismatch():
    with pytest.raises(ValueError, match=r"y_train has 4 rows but X_train has 10; they must match"):
        predict(X_TRAIN, np.zeros(4), X_TRAIN, 3, task="regression")


def test_regression_target_dimensions():
    with pytest.raises(ValueError, match=r"y_train must have shape \(n_train,\) or \(n_train, n_outputs\), got shape \(10, 2, 2\)"):
        predict(X_TRAIN, np.zeros((10, 2, 2)), X_TRAIN, 3, task="regression")


def test_regression_target_not_finite():
    with pytest.raises(ValueError, match=r"y_train contains NaN or infinity"):
        predict(X_TRAIN, np.full(10, np.inf), X_TRAIN, 3, task="regression")


def test_fashion_mnist_missing_names_the_package(monkeypatch, tmp_path):
    from fastml import datasets

    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"install the Debian package dataset-fashion-mnist \(`apt-get install dataset-fashion-mnist`"):
        load_fashion_mnist()


def test_fashion_mnist_invalid_subset():
    with pytest.raises(ValueError, match=r"invalid subset='validation'; expected one of \['train', 'test'\]"):
        load_fashion_mnist("validation")


def test_fashion_mnist_corrupt_file(monkeypatch, tmp_path):
    import gzip

    from fastml import datasets

    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as file:
        file.write((0x0801).to_bytes(4, "big") + (5).to_bytes(4, "big"))
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"is not an IDX file of 3-D unsigned bytes \(magic number 0x801\)"):
        load_fashion_mnist()

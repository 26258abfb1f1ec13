import numpy as np
import pytest

from fastml._validation import (
    check_array,
    check_float,
    check_int,
    check_random_state,
    check_sample_weight,
)


def test_float_dtypes_kept_and_others_converted():
    assert check_array(np.ones((2, 2), np.float32)).dtype == np.float32
    assert check_array(np.ones((2, 2), np.float64)).dtype == np.float64
    assert check_array(np.ones((2, 2), np.int64)).dtype == np.float64
    assert check_array(np.ones((2, 2), np.float16)).dtype == np.float64
    assert check_array([[True, False]]).dtype == np.float64


def test_layouts_become_c_contiguous_without_copying_input():
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    for array in (base[:, ::2], np.asfortranarray(base), base.T):
        result = check_array(array)
        assert result.flags.c_contiguous
        np.testing.assert_array_equal(result, array)

    read_only = base.copy()
    read_only.flags.writeable = False
    assert check_array(read_only) is read_only


def test_non_finite_values_named():
    X = np.zeros((3, 2))
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(first at index \(2, 1\): nan\)"):
        check_array(X)
    X[2, 1] = -np.inf
    with pytest.raises(ValueError, match="first at index"):
        check_array(X)


@pytest.mark.parametrize(
    "value, message",
    [
        (np.zeros(3), r"X must be 2-D with shape \(n_samples, n_features\), got shape \(3,\)"),
        (np.zeros((0, 3)), r"X has 0 sample\(s\) \(shape=\(0, 3\)\) while a minimum of 1 is required"),
        (np.zeros((3, 0)), r"X has 0 feature\(s\) \(shape=\(3, 0\)\) while a minimum of 1"),
    ],
)
def test_bad_shapes_rejected(value, message):
    with pytest.raises(ValueError, match=message):
        check_array(value)


def test_bad_types_rejected():
    with pytest.raises(ValueError, match="Complex data not supported: X has dtype complex128"):
        check_array(np.ones((2, 2), complex))
    scipy_sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match=r"X is a sparse matrix \(csr_matrix\); sparse input is not supported"):
        check_array(scipy_sparse.csr_matrix(np.eye(2)))
    with pytest.raises(TypeError, match="X must contain numbers, got dtype <U1"):
        check_array(np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="X must be an array-like of numbers, got str"):
        check_array("abc")


def test_scalar_checks():
    assert check_int(np.int64(3), "k", min_value=1) == 3
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        check_int(0, "k", min_value=1)
    with pytest.raises(TypeError, match="k must be an int, got 2.0"):
        check_int(2.0, "k")
    with pytest.raises(ValueError, match="tol must be >= 0.0, got -1.0"):
        check_float(-1, "tol", min_value=0.0)
    with pytest.raises(ValueError, match="p must be < 1, got 1.0"):
        check_float(1.0, "p", max_value=1, include_max=False)
    with pytest.raises(ValueError, match="tol must be finite"):
        check_float(float("nan"), "tol")


def test_random_state_forms():
    assert check_random_state(3).random() == check_random_state(3).random()
    generator = np.random.default_rng(0)
    assert check_random_state(generator) is generator
    with pytest.raises(TypeError, match="random_state must be None, an int or a numpy.random.Generator"):
        check_random_state("seed")
    with pytest.raises(ValueError, match="non-negative"):
        check_random_state(-1)


def test_sample_weight_checks():
    np.testing.assert_array_equal(check_sample_weight(None, 3, np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"sample_weight has shape \(2,\); expected \(3,\)"):
        check_sample_weight([1, 2], 3, np.float64)
    with pytest.raises(ValueError, match="sample_weight must be non-negative, got -1.0 at index 1"):
        check_sample_weight([1, -1, 2], 3, np.float64)
    with pytest.raises(ValueError, match="at least one positive weight; all are zero"):
        check_sample_weight([0, 0, 0], 3, np.float64)
    with pytest.raises(ValueError, match="sample_weight contains NaN"):
        check_sample_weight([0, np.nan, 0], 3, np.float64)

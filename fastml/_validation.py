"""Input checks shared by every public entry point.

Public functions call these once, before dispatching, so the backends (and the compiled loops
that turn off bounds checking) only ever see C-contiguous float32/float64 arrays of the expected
shape with finite values. Each error names the argument, the offending value and what is accepted.
"""

import numbers

import numpy as np

FLOAT_DTYPES = (np.float64, np.float32)


def check_array(
    array,
    name="X",
    *,
    ndim=2,
    dtype=FLOAT_DTYPES,
    min_samples=1,
    min_features=1,
    ensure_finite=True,
    copy=False,
):
    """Validate `array` and return it as a C-contiguous array of an accepted dtype.

    `dtype` is a tuple of accepted dtypes: an array of one of them keeps it, anything else
    numeric (integers, booleans, float16) is converted to the first one, the way scikit-learn
    converts. Non-contiguous, Fortran-ordered and read-only inputs are accepted; the result is a
    contiguous copy where needed and never written to unless `copy` is true.
    """
    if hasattr(array, "tocsr") or type(array).__module__.startswith("scipy.sparse"):
        raise TypeError(
            f"{name} is a sparse matrix ({type(array).__name__}); sparse input is not supported, "
            f"convert it with {name}.toarray()"
        )
    if hasattr(array, "__array__") or isinstance(array, (list, tuple)):
        original = np.asarray(array)
    else:
        raise TypeError(
            f"{name} must be an array-like of numbers, got {type(array).__name__}"
        )

    if original.dtype.kind == "c":
        # ValueError, not TypeError, as scikit-learn raises for complex data.
        raise ValueError(
            f"Complex data not supported: {name} has dtype {original.dtype}; "
            "pass the real part or the magnitude"
        )
    if original.dtype.kind not in "biuf":
        try:
            original = original.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{name} must contain numbers, got dtype {original.dtype}: {exc}"
            ) from None

    if original.ndim != ndim:
        shape_hint = {1: "(n,)", 2: "(n_samples, n_features)"}.get(ndim, f"{ndim} dimensions")
        message = f"{name} must be {ndim}-D with shape {shape_hint}, got shape {original.shape}"
        if ndim == 2 and original.ndim < 2:
            message += (
                f". Reshape your data with {name}.reshape(-1, 1) if it has a single feature "
                f"or {name}.reshape(1, -1) if it is a single sample"
            )
        raise ValueError(message)
    if original.shape[0] < min_samples:
        raise ValueError(
            f"{name} has {original.shape[0]} sample(s) (shape={original.shape}) while a minimum "
            f"of {min_samples} is required."
        )
    if ndim >= 2 and original.shape[1] < min_features:
        raise ValueError(
            f"{name} has {original.shape[1]} feature(s) (shape={original.shape}) while a minimum "
            f"of {min_features} is required."
        )

    target = original.dtype if original.dtype in dtype else np.dtype(dtype[0])
    result = np.ascontiguousarray(original, dtype=target)
    if copy and np.shares_memory(result, original):
        result = result.copy()

    if ensure_finite:
        check_finite(result, name)
    return result


def check_finite(array, name):
    """Raise ``ValueError`` if `array` contains NaN or infinity, naming the first bad entry."""
    # np.isfinite(array.sum()) would be cheaper but overflows to inf on large finite values.
    finite = np.isfinite(array)
    if not finite.all():
        index = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"{name} contains NaN or infinity (first at index {index}: {array[index]}); "
            "remove or impute non-finite values first"
        )


def check_int(value, name, *, min_value=None, max_value=None):
    """Validate an integer parameter and return it as a Python int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    value = int(value)
    if min_value is not None and value < min_value:
        raise ValueError(f"{name} must be >= {min_value}, got {value}")
    if max_value is not None and value > max_value:
        raise ValueError(f"{name} must be <= {max_value}, got {value}")
    return value


def check_float(value, name, *, min_value=None, max_value=None, include_min=True, include_max=True):
    """Validate a real-valued parameter and return it as a Python float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if min_value is not None and (value < min_value or (value == min_value and not include_min)):
        bound = ">=" if include_min else ">"
        raise ValueError(f"{name} must be {bound} {min_value}, got {value}")
    if max_value is not None and (value > max_value or (value == max_value and not include_max)):
        bound = "<=" if include_max else "<"
        raise ValueError(f"{name} must be {bound} {max_value}, got {value}")
    return value


def check_option(value, name, options):
    """Validate that `value` is one of the strings in `options`."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"invalid {name}={value!r}; expected one of {list(options)}")
    return value


def check_random_state(random_state):
    """Turn None, an int seed or a ``numpy.random.Generator`` into a Generator."""
    if random_state is None or isinstance(random_state, (numbers.Integral, np.random.Generator)):
        if isinstance(random_state, numbers.Integral) and random_state < 0:
            raise ValueError(f"random_state must be a non-negative int, got {random_state}")
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.RandomState):
        # Legacy seeding, as scikit-learn accepts: derive a Generator from its stream.
        return np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
    raise TypeError(
        "random_state must be None, an int or a numpy.random.Generator, "
        f"got {type(random_state).__name__}"
    )


def check_sample_weight(sample_weight, n_samples, dtype):
    """Return per-sample weights of `dtype`, shape (n_samples,), finite and non-negative.

    ``None`` gives unit weights. At least one weight must be positive.
    """
    if sample_weight is None:
        return np.ones(n_samples, dtype=dtype)
    if isinstance(sample_weight, numbers.Real) and not isinstance(sample_weight, bool):
        sample_weight = np.full(n_samples, sample_weight, dtype=dtype)

    weights = check_array(sample_weight, "sample_weight", ndim=1, dtype=(dtype,), min_samples=0)
    if weights.shape != (n_samples,):
        raise ValueError(
            f"sample_weight has shape {weights.shape}; expected ({n_samples},) to match X"
        )
    negative = np.flatnonzero(weights < 0)
    if negative.size:
        raise ValueError(
            f"sample_weight must be non-negative, got {weights[negative[0]]} at index {negative[0]}"
        )
    if not weights.any():
        raise ValueError("sample_weight must contain at least one positive weight; all are zero")
    return weights

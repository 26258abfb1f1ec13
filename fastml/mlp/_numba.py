"""MLP layers, losses and optimizers compiled with Numba.

The matrix products call SciPy's BLAS ``sgemm`` / ``dgemm`` directly, through the function
pointers of ``scipy.linalg.cython_blas``, on the caller's row-major buffers read as their
column-major transposes. ``np.dot`` would do for whole products, but not for a block of rows
of a transposed operand, which is what a per-thread split needs. Everything elementwise is fused
into one pass over the data. The forward pass adds the bias and applies the activation in one
pass. The backward pass multiplies the incoming gradient by f'(z) in place while it sums the
bias gradient. The optimizers update each parameter with all its state in one pass. The
functions a training step calls allocate no arrays: the caller passes every buffer, and the
few integers BLAS takes by reference live in scratch arrays made once per thread.

Threads: inside ``threads(n)`` the products and the large passes run on n Numba threads, and
BLAS on one, as in the Cython backend (see ``fastml/mlp/_cython.pyx`` for the measurements).
Each product is cut into one block per thread of output columns (BLAS's column-major columns),
or of output rows when there are few columns, each a single-threaded GEMM. The bias +
activation pass splits rows, the backward pass columns, and the updates flat elements.

Cost per dense layer and pass: O(B n_in n_out) flops in BLAS plus O(B n_out) fused elementwise
work. Memory: the caller's buffers only.
"""

import contextlib
import ctypes
import math
import threading

import numba
import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  (loads the library the pointers below point into)
from numba import njit, prange
from numba.extending import get_cython_function_address

from fastml._threads import blas_threads, numba_threads
from fastml.mlp._common import ACTIVATION_CODES, INV_SQRT2, INV_SQRT_2PI

# The codes of fastml.mlp._common.ACTIVATIONS, as constants Numba folds into the kernels.
IDENTITY, RELU, TANH, GELU = range(4)
if [ACTIVATION_CODES[name] for name in ("identity", "relu", "tanh", "gelu")] != [0, 1, 2, 3]:
    raise ImportError("fastml.mlp._common.ACTIVATIONS changed; update the codes in _numba.py")


# Blocks of a split start at multiples of ALIGN items when they are at least 4 * ALIGN long, and
# an elementwise pass gets another thread per ALIGN * ROW_GRAIN items (as in _cython.pyx).
ALIGN = 16
ROW_GRAIN = 256


def _blas_function(name):
    # Fortran BLAS takes every argument by reference, so the kernels pass addresses as integers.
    address = get_cython_function_address("scipy.linalg.cython_blas", name)
    return ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 13)(address)


# A jitted function that reads a ctypes pointer as a global cannot be cached, so the pointer is
# passed as an argument instead.
_GEMM = {np.dtype(np.float32): _blas_function("sgemm"), np.dtype(np.float64): _blas_function("dgemm")}
_scratch = threading.local()


def _gemm_scratch(dtype):
    """Return this thread's (characters, integers, scalars) arrays, one row per Numba thread."""
    arrays = getattr(_scratch, dtype.name, None)
    if arrays is None:
        rows = numba.config.NUMBA_NUM_THREADS
        arrays = (np.zeros((rows, 2), np.uint8), np.zeros((rows, 6), np.int32), np.zeros((rows, 2), dtype))
        setattr(_scratch, dtype.name, arrays)
    return arrays


def _n_threads():
    # Read here, in Python: numba.get_num_threads() inside a kernel would stop Numba from
    # caching it.
    return numba.get_num_threads()


@contextlib.contextmanager
def threads(n_threads):
    """Run the products and passes on `n_threads` Numba threads inside the block, BLAS on one."""
    with blas_threads(1), numba_threads(n_threads):
        yield


# ---- activations, one scalar at a time --------------------------------------------------------

@njit(nogil=True, cache=True, inline="always")
def _activate(z, code):
    if code == RELU:
        return z if z > 0 else z * 0
    if code == TANH:
        return math.tanh(z)
    if code == GELU:
        return z * 0.5 * (1.0 + math.erf(z * INV_SQRT2))
    return z


@njit(nogil=True, cache=True, inline="always")
def _derivative(z, a, code):
    if code == RELU:
        # f'(0) = 0, as torch's.
        return 1.0 if z > 0 else 0.0
    if code == TANH:
        return 1.0 - a * a
    if code == GELU:
        cdf = 0.5 * (1.0 + math.erf(z * INV_SQRT2))
        return cdf + z * INV_SQRT_2PI * math.exp(-0.5 * z * z)
    return 1.0


@njit(nogil=True, cache=True)
def _parts(size, n_threads):
    """Return how many of `n_threads` threads share a loop of `size` items (one per ALIGN at most)."""
    return max(1, min(n_threads, size // ALIGN))


@njit(nogil=True, cache=True)
def _block_size(size, n_parts):
    """Return the length of `n_parts` blocks that cover `size`, rounded up to ALIGN if long."""
    length = (size + n_parts - 1) // n_parts
    if length < 4 * ALIGN:
        return length
    return (length + ALIGN - 1) // ALIGN * ALIGN


# In the parallel loops below, each thread's share goes to a helper as slices. Indexing the whole
# arrays inside a prange body left the loops scalar: the Adam update of 401k float32 parameters
# took 0.94 ms on one thread, against 0.12 ms through slices.


@njit(nogil=True, cache=True)
def _bias_activation_row(z, bias, code, a):
    for j in range(z.shape[0]):
        value = z[j] + bias[j]
        z[j] = value
        a[j] = _activate(value, code)


@njit(nogil=True, parallel=True, cache=True)
def _bias_activation(z, bias, code, a, n_threads):
    """Add the bias to z and write f(z) to a in one pass, threads taking blocks of rows."""
    n_rows, n_columns = z.shape
    n_parts = _parts(n_rows * n_columns // ROW_GRAIN, n_threads)
    width = _block_size(n_rows, n_parts)
    for part in prange(n_parts):
        for i in range(part * width, min((part + 1) * width, n_rows)):
            _bias_activation_row(z[i], bias, code, a[i])


@njit(nogil=True, cache=True)
def _activation_grad_sum_row(z, a, grad, code, grad_bias):
    for j in range(z.shape[0]):
        value = grad[j] * _derivative(z[j], a[j], code)
        grad[j] = value
        grad_bias[j] += value


@njit(nogil=True, parallel=True, cache=True)
def _activation_grad_sum(z, a, grad, code, grad_bias, n_threads):
    """grad *= f'(z) in place, and grad_bias = the column sums of the result, in one pass.

    Threads take blocks of columns, so each column is summed over the rows in order whatever
    the thread count.
    """
    n_rows, n_columns = z.shape
    n_parts = _parts(n_columns, n_threads)
    width = _block_size(n_columns, n_parts)
    for part in prange(n_parts):
        start = part * width
        stop = min(start + width, n_columns)
        grad_bias[start:stop] = 0
        for i in range(n_rows):
            _activation_grad_sum_row(
                z[i, start:stop], a[i, start:stop], grad[i, start:stop], code, grad_bias[start:stop]
            )


@njit(nogil=True, cache=True)
def _activation_backward(z, a, grad, code, out):
    n_rows, n_columns = z.shape
    for i in range(n_rows):
        for j in range(n_columns):
            out[i, j] = grad[i, j] * _derivative(z[i, j], a[i, j], code)


@njit(nogil=True, cache=True)
def _activation_forward(z, code, out):
    n_rows, n_columns = z.shape
    for i in range(n_rows):
        for j in range(n_columns):
            out[i, j] = _activate(z[i, j], code)


def activation_forward(z, activation, out):
    """out = f(z), elementwise."""
    _activation_forward(z, ACTIVATION_CODES[activation], out)


def activation_backward(z, a, grad_a, activation, out):
    """out = grad_a * f'(z), elementwise; `out` may be `grad_a`."""
    _activation_backward(z, a, grad_a, ACTIVATION_CODES[activation], out)


# ---- the dense layer --------------------------------------------------------------------------

@njit(nogil=True, cache=True)
def _gemm_block(gemm, transa, transb, m, n, k, a, lda, b, ldb, c, ldc, chars, ints, scalars):
    """Call BLAS on addresses: c = op(a) op(b), with c m x n column-major."""
    chars[0] = transa
    chars[1] = transb
    ints[0] = m
    ints[1] = n
    ints[2] = k
    ints[3] = lda
    ints[4] = ldb
    ints[5] = ldc
    scalars[0] = 1
    scalars[1] = 0
    character, integer, scalar = chars.ctypes.data, ints.ctypes.data, scalars.ctypes.data
    gemm(character, character + 1, integer, integer + 4, integer + 8, scalar, a, integer + 12,
         b, integer + 16, scalar + scalars.itemsize, c, integer + 20)


@njit(nogil=True, parallel=True, cache=True)
def _gemm(gemm, transa, transb, m, n, k, a, lda, b, ldb, c, ldc, chars, ints, scalars, n_threads):
    """Compute c = op(a) op(b) in BLAS's column-major terms, split between threads.

    Each thread computes a block of the columns of c from the same columns of op(b). When c has
    under half as many columns as rows, it computes a block of rows from the same rows of op(a)
    instead, as the Cython backend does. The arrays are C-contiguous.
    """
    by_columns = 2 * n >= m
    size = n if by_columns else m
    n_parts = _parts(size, n_threads)
    width = _block_size(size, n_parts)
    itemsize = c.itemsize
    a_start, b_start, c_start = a.ctypes.data, b.ctypes.data, c.ctypes.data
    for part in prange(n_parts):
        start = part * width
        count = min(start + width, size) - start
        if count > 0 and by_columns:
            # Column j of op(b) is column j of b, or row j when b is read transposed.
            b_offset = start * ldb if transb == ord("N") else start
            _gemm_block(
                gemm, transa, transb, m, count, k, a_start, lda, b_start + b_offset * itemsize,
                ldb, c_start + start * ldc * itemsize, ldc, chars[part], ints[part], scalars[part],
            )
        elif count > 0:
            # Row i of op(a) is row i of a, or column i when a is read transposed.
            a_offset = start if transa == ord("N") else start * lda
            _gemm_block(
                gemm, transa, transb, count, n, k, a_start + a_offset * itemsize, lda, b_start,
                ldb, c_start + start * itemsize, ldc, chars[part], ints[part], scalars[part],
            )


@njit(nogil=True, cache=True)
def _dense_forward(gemm, x, weight, bias, code, z, a, chars, ints, scalars, n_threads):
    # z (B, n_out) = x @ W, which column-major is z.T (n_out, B) = W.T (n_out, n_in) @ x.T.
    n_rows, n_in = x.shape
    n_out = weight.shape[1]
    _gemm(gemm, ord("N"), ord("N"), n_out, n_rows, n_in, weight, n_out, x, n_in, z, n_out,
          chars, ints, scalars, n_threads)
    _bias_activation(z, bias, code, a, n_threads)


@njit(nogil=True, cache=True)
def _dense_backward(
    gemm, x, weight, z, a, grad, code, grad_weight, grad_bias, chars, ints, scalars, n_threads
):
    _activation_grad_sum(z, a, grad, code, grad_bias, n_threads)
    # grad_weight (n_in, n_out) = x.T @ grad, which column-major is grad_weight.T = grad.T @ x,
    # with x read transposed.
    n_rows, n_in = x.shape
    n_out = grad.shape[1]
    _gemm(gemm, ord("N"), ord("T"), n_out, n_in, n_rows, grad, n_out, x, n_in, grad_weight, n_out,
          chars, ints, scalars, n_threads)


@njit(nogil=True, cache=True)
def _input_gradient(gemm, weight, grad, grad_x, chars, ints, scalars, n_threads):
    # grad_x (B, n_in) = grad @ W.T, which column-major is grad_x.T = W (n_in, n_out) @ grad.T,
    # with W read transposed.
    n_rows, n_out = grad.shape
    n_in = weight.shape[0]
    _gemm(gemm, ord("T"), ord("N"), n_in, n_rows, n_out, weight, n_out, grad, n_out, grad_x, n_in,
          chars, ints, scalars, n_threads)


def _check_contiguous(**arrays):
    # The kernels compute addresses from row-major strides: a view with other strides would
    # be read wrongly instead of failing.
    for name, array in arrays.items():
        if not array.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous for the Numba backend, got strides {array.strides}")


def linear_forward(x, weight, bias, out):
    """out = x @ W + b."""
    dense_forward(x, weight, bias, "identity", out, out)


def dense_forward(x, weight, bias, activation, z, a):
    """z = x @ W + b and a = f(z). For the identity, `a` may be `z` itself."""
    _check_contiguous(x=x, weight=weight, z=z)
    code = ACTIVATION_CODES[activation]
    _dense_forward(_GEMM[z.dtype], x, weight, bias, code, z, a, *_gemm_scratch(z.dtype), _n_threads())


def linear_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias):
    """Gradients of a linear layer from dL/d(output); `grad_x` None skips dL/dx."""
    dense_backward(x, weight, grad_out, grad_out, grad_out.copy(), "identity", grad_x, grad_weight, grad_bias)


def dense_backward(x, weight, z, a, grad_a, activation, grad_x, grad_weight, grad_bias):
    """Gradients of a dense layer; `grad_a` is overwritten with dL/dz."""
    _check_contiguous(x=x, weight=weight, grad_a=grad_a, grad_weight=grad_weight)
    gemm, scratch = _GEMM[grad_a.dtype], _gemm_scratch(grad_a.dtype)
    code = ACTIVATION_CODES[activation]
    n_threads = _n_threads()
    _dense_backward(gemm, x, weight, z, a, grad_a, code, grad_weight, grad_bias, *scratch, n_threads)
    if grad_x is not None:
        _check_contiguous(grad_x=grad_x)
        _input_gradient(gemm, weight, grad_a, grad_x, *scratch, n_threads)


# ---- losses -----------------------------------------------------------------------------------

@njit(nogil=True, cache=True)
def _softmax_cross_entropy(logits, labels, grad):
    n_rows, n_classes = logits.shape
    total = 0.0
    for i in range(n_rows):
        # Shift by the row max: every exp is at most 1, so it cannot overflow.
        largest = logits[i, 0]
        for j in range(1, n_classes):
            largest = max(largest, logits[i, j])
        sum_exps = 0.0
        for j in range(n_classes):
            e = math.exp(np.float64(logits[i, j] - largest))
            grad[i, j] = e
            sum_exps += e
        total += largest + math.log(sum_exps) - logits[i, labels[i]]

        scale = 1.0 / (sum_exps * n_rows)
        for j in range(n_classes):
            grad[i, j] *= scale
        grad[i, labels[i]] -= 1.0 / n_rows
    return total / n_rows


def softmax_cross_entropy(logits, labels, grad):
    """Return the mean of -log softmax(z)[y] over the rows; grad = (softmax(z) - onehot(y)) / batch."""
    return float(_softmax_cross_entropy(logits, labels, grad))


@njit(nogil=True, cache=True)
def _mean_squared_error(predictions, targets, grad):
    n_rows, n_columns = predictions.shape
    size = n_rows * n_columns
    total = 0.0
    for i in range(n_rows):
        for j in range(n_columns):
            difference = np.float64(predictions[i, j]) - targets[i, j]
            total += difference * difference
            grad[i, j] = 2.0 * difference / size
    return total / size


def mean_squared_error(predictions, targets, grad):
    """Return the mean of (p - t)^2 over all entries; grad = 2 (p - t) / (number of entries)."""
    return float(_mean_squared_error(predictions, targets, grad))


# ---- optimizer updates, in place, fused over all state ----------------------------------------

@njit(nogil=True, cache=True)
def _sgd_block(param, grad, velocity, learning_rate, momentum):
    for i in range(param.shape[0]):
        v = momentum * velocity[i] + grad[i]
        velocity[i] = v
        param[i] -= learning_rate * v


@njit(nogil=True, parallel=True, cache=True)
def _sgd_update(param, grad, velocity, learning_rate, momentum, n_threads):
    size = param.shape[0]
    n_parts = _parts(size // ROW_GRAIN, n_threads)
    width = _block_size(size, n_parts)
    for part in prange(n_parts):
        start = part * width
        stop = min(start + width, size)
        _sgd_block(param[start:stop], grad[start:stop], velocity[start:stop], learning_rate, momentum)


# error_model="numpy": Numba's default checks every division for a zero divisor (to raise
# ZeroDivisionError), and that branch kept the loop scalar. In a plain loop over 401k float32
# parameters: 0.93 ms with the check, 0.11 ms without. The divisor here is at least epsilon > 0.
@njit(nogil=True, cache=True, error_model="numpy")
def _adam_block(param, grad, m, v, beta1, beta2, rest1, rest2, step_size, inverse, epsilon):
    # The scalars arrive in the parameters' dtype: in float32 the loop vectorizes twice as wide.
    for i in range(param.shape[0]):
        g = grad[i]
        m_i = beta1 * m[i] + rest1 * g
        v_i = beta2 * v[i] + rest2 * g * g
        m[i] = m_i
        v[i] = v_i
        param[i] -= step_size * m_i / (np.sqrt(v_i) * inverse + epsilon)


@njit(nogil=True, parallel=True, cache=True)
def _adam_update(param, grad, m, v, beta1, beta2, rest1, rest2, step_size, inverse, epsilon, n_threads):
    size = param.shape[0]
    n_parts = _parts(size // ROW_GRAIN, n_threads)
    width = _block_size(size, n_parts)
    for part in prange(n_parts):
        start = part * width
        stop = min(start + width, size)
        _adam_block(
            param[start:stop], grad[start:stop], m[start:stop], v[start:stop],
            beta1, beta2, rest1, rest2, step_size, inverse, epsilon,
        )


def sgd_update(param, grad, velocity, learning_rate, momentum):
    """velocity = momentum velocity + grad; param -= learning_rate velocity."""
    _sgd_update(
        param.reshape(-1), grad.reshape(-1), velocity.reshape(-1), learning_rate, momentum, _n_threads()
    )


def adam_update(param, grad, m, v, learning_rate, beta1, beta2, epsilon, step):
    """Apply one Adam step (step counts from 1) in place, in the form torch.optim.Adam computes it.

    Multiplying by 1 / sqrt(1 - beta2^t) differs from torch's division by at most one rounding.
    """
    step_size = learning_rate / (1.0 - beta1**step)
    inverse = 1.0 / math.sqrt(1.0 - beta2**step)
    scalar = param.dtype.type
    _adam_update(
        param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1),
        scalar(beta1), scalar(beta2), scalar(1.0 - beta1), scalar(1.0 - beta2),
        scalar(step_size), scalar(inverse), scalar(epsilon), _n_threads(),
    )

"""MLP layers, losses and optimizers compiled with Numba.

The matrix products go to BLAS through ``np.dot`` with an output buffer, from inside the
compiled functions (Numba calls SciPy's BLAS). Everything elementwise is fused into one pass
over the data. The forward pass adds the bias and applies the activation while the product is
still in cache. The backward pass multiplies the incoming gradient by f'(z) in place while it
sums the bias gradient. The optimizers update each parameter with all its state in one pass.
The functions a training step calls allocate no arrays, because the caller passes every buffer.

Threads: the products run on the BLAS thread pool, limited by ``threads(n)``. The fused passes
run on the calling thread, so no sum depends on the thread count. They are O(B n_out) against
O(B n_in n_out) for the products. Under ``prange`` beside OpenBLAS's threads, a 784-512-512-10
step took 5 to 15 times longer than with serial passes (2 cores, with other jobs running).
NOTE: that comparison has not been repeated on a quiet machine.

Cost per dense layer and pass: O(B n_in n_out) flops in BLAS plus O(B n_out) fused elementwise
work. Memory: the caller's buffers only.
"""

import math

import numpy as np
from numba import njit

from fastml._threads import blas_threads
from fastml.mlp._common import ACTIVATION_CODES, INV_SQRT2, INV_SQRT_2PI

# The codes of fastml.mlp._common.ACTIVATIONS, as constants Numba folds into the kernels.
IDENTITY, RELU, TANH, GELU = range(4)
if [ACTIVATION_CODES[name] for name in ("identity", "relu", "tanh", "gelu")] != [0, 1, 2, 3]:
    raise ImportError("fastml.mlp._common.ACTIVATIONS changed; update the codes in _numba.py")


def threads(n_threads):
    """Run the matrix products on `n_threads` BLAS threads inside the block."""
    return blas_threads(n_threads)


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
def _bias_activation(z, bias, code, a):
    """z += bias and a = f(z), in one pass."""
    n_rows, n_columns = z.shape
    for i in range(n_rows):
        for j in range(n_columns):
            value = z[i, j] + bias[j]
            z[i, j] = value
            a[i, j] = _activate(value, code)


@njit(nogil=True, cache=True)
def _activation_grad_sum(z, a, grad, code, grad_bias):
    """grad *= f'(z) in place, and grad_bias = the column sums of the result, in one pass."""
    n_rows, n_columns = z.shape
    grad_bias[:] = 0
    for i in range(n_rows):
        for j in range(n_columns):
            value = grad[i, j] * _derivative(z[i, j], a[i, j], code)
            grad[i, j] = value
            grad_bias[j] += value


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
def _dense_forward(x, weight, bias, code, z, a):
    # (B, n_in) @ (n_in, n_out) -> z (B, n_out), by BLAS into the caller's buffer.
    np.dot(x, weight, z)
    _bias_activation(z, bias, code, a)


@njit(nogil=True, cache=True)
def _dense_backward(x, weight, z, a, grad, code, grad_weight, grad_bias):
    _activation_grad_sum(z, a, grad, code, grad_bias)
    # (n_in, B) @ (B, n_out): x.T is a Fortran-ordered view, which BLAS reads transposed.
    np.dot(x.T, grad, grad_weight)


@njit(nogil=True, cache=True)
def _input_gradient(weight, grad, grad_x):
    # (B, n_out) @ (n_out, n_in) -> (B, n_in).
    np.dot(grad, weight.T, grad_x)


def linear_forward(x, weight, bias, out):
    """out = x @ W + b."""
    _dense_forward(x, weight, bias, IDENTITY, out, out)


def dense_forward(x, weight, bias, activation, z, a):
    """z = x @ W + b and a = f(z). For the identity, `a` may be `z` itself."""
    _dense_forward(x, weight, bias, ACTIVATION_CODES[activation], z, a)


def linear_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias):
    """Gradients of a linear layer from dL/d(output); `grad_x` None skips dL/dx."""
    dense_backward(x, weight, grad_out, grad_out, grad_out.copy(), "identity", grad_x, grad_weight, grad_bias)


def dense_backward(x, weight, z, a, grad_a, activation, grad_x, grad_weight, grad_bias):
    """Gradients of a dense layer; `grad_a` is overwritten with dL/dz."""
    code = ACTIVATION_CODES[activation]
    _dense_backward(x, weight, z, a, grad_a, code, grad_weight, grad_bias)
    if grad_x is not None:
        _input_gradient(weight, grad_a, grad_x)


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
def _sgd_update(param, grad, velocity, learning_rate, momentum):
    for i in range(param.shape[0]):
        v = momentum * velocity[i] + grad[i]
        velocity[i] = v
        param[i] -= learning_rate * v


@njit(nogil=True, cache=True)
def _adam_update(param, grad, m, v, beta1, beta2, rest1, rest2, step_size, inverse, epsilon):
    # The scalars arrive in the parameters' dtype: in float32 the loop vectorizes twice as wide.
    for i in range(param.shape[0]):
        g = grad[i]
        m_i = beta1 * m[i] + rest1 * g
        v_i = beta2 * v[i] + rest2 * g * g
        m[i] = m_i
        v[i] = v_i
        param[i] -= step_size * m_i / (np.sqrt(v_i) * inverse + epsilon)


def sgd_update(param, grad, velocity, learning_rate, momentum):
    """velocity = momentum velocity + grad; param -= learning_rate velocity."""
    _sgd_update(param.reshape(-1), grad.reshape(-1), velocity.reshape(-1), learning_rate, momentum)


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
        scalar(step_size), scalar(inverse), scalar(epsilon),
    )

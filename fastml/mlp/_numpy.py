"""MLP layers, losses and optimizers in NumPy: the same equations as the naive backend, in matrix form.

For a batch x (B, n_in), weight W (n_in, n_out) and incoming gradient G = dL/da (B, n_out):

    z = x @ W + b            a = f(z)
    dZ = G * f'(z)           dW = x.T @ dZ      db = dZ.sum(axis=0)      dx = dZ @ W.T

Cost: O(B n_in n_out) flops per dense layer and pass, in BLAS (multi-threaded, under the
caller's thread limit); the elementwise steps are O(B n_out) and allocate temporaries, which is
what the Numba and Cython backends avoid by fusing them. Products write into the caller's
buffers (``out=``), so no (B, n_out) matrix is allocated for them.
"""

import numpy as np
from scipy.special import erf

from fastml._threads import blas_threads
from fastml.mlp._common import INV_SQRT2, INV_SQRT_2PI


# ---- activations ------------------------------------------------------------------------------

def activation_forward(z, activation, out):
    """out = f(z), elementwise."""
    if activation == "relu":
        np.maximum(z, 0, out=out)
    elif activation == "tanh":
        np.tanh(z, out=out)
    elif activation == "gelu":
        np.multiply(z, 0.5 * (1.0 + erf(z * z.dtype.type(INV_SQRT2))), out=out)
    elif out is not z:
        out[...] = z


def activation_backward(z, a, grad_a, activation, out):
    """out = grad_a * f'(z), elementwise; `out` may be `grad_a`."""
    if activation == "relu":
        # f'(0) = 0, as torch's: only strictly positive inputs pass the gradient.
        np.multiply(grad_a, z > 0, out=out)
    elif activation == "tanh":
        np.multiply(grad_a, 1 - a * a, out=out)
    elif activation == "gelu":
        cdf = 0.5 * (1.0 + erf(z * z.dtype.type(INV_SQRT2)))
        density = z.dtype.type(INV_SQRT_2PI) * np.exp(-0.5 * z * z)
        np.multiply(grad_a, cdf + z * density, out=out)
    elif out is not grad_a:
        out[...] = grad_a


# ---- the dense layer --------------------------------------------------------------------------

def linear_forward(x, weight, bias, out):
    """out = x @ W + b."""
    np.matmul(x, weight, out=out)
    out += bias


def dense_forward(x, weight, bias, activation, z, a):
    """z = x @ W + b and a = f(z). For the identity, `a` may be `z` itself."""
    linear_forward(x, weight, bias, z)
    activation_forward(z, activation, a)


def linear_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias):
    """Gradients of a linear layer from dL/d(output); `grad_x` None skips dL/dx."""
    grad_out.sum(axis=0, out=grad_bias)
    # (n_in, B) @ (B, n_out): every row's outer product x_i dZ_i, summed.
    np.matmul(x.T, grad_out, out=grad_weight)
    if grad_x is not None:
        np.matmul(grad_out, weight.T, out=grad_x)


def dense_backward(x, weight, z, a, grad_a, activation, grad_x, grad_weight, grad_bias):
    """Gradients of a dense layer; `grad_a` is overwritten with dL/dz."""
    activation_backward(z, a, grad_a, activation, grad_a)
    linear_backward(x, weight, grad_a, grad_x, grad_weight, grad_bias)


# ---- losses -----------------------------------------------------------------------------------

def softmax_cross_entropy(logits, labels, grad):
    """Return the mean of -log softmax(z)[y] over the rows; grad = (softmax(z) - onehot(y)) / batch."""
    batch = logits.shape[0]
    rows = np.arange(batch)

    # Shift each row by its max: every exp is at most 1, so it cannot overflow.
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=grad)
    sum_exps = grad.sum(axis=1, keepdims=True)
    log_sum_exps = np.log(sum_exps)
    loss = np.sum(log_sum_exps[:, 0] - shifted[rows, labels], dtype=np.float64) / batch

    grad /= sum_exps * batch
    grad[rows, labels] -= grad.dtype.type(1.0 / batch)
    return float(loss)


def mean_squared_error(predictions, targets, grad):
    """Return the mean of (p - t)^2 over all entries; grad = 2 (p - t) / (number of entries)."""
    np.subtract(predictions, targets, out=grad)
    loss = np.sum(np.square(grad, dtype=np.float64)) / grad.size
    grad *= grad.dtype.type(2.0 / grad.size)
    return float(loss)


# ---- optimizer updates, in place --------------------------------------------------------------

def sgd_update(param, grad, velocity, learning_rate, momentum):
    """velocity = momentum velocity + grad; param -= learning_rate velocity."""
    velocity *= momentum
    velocity += grad
    param -= param.dtype.type(learning_rate) * velocity


def adam_update(param, grad, m, v, learning_rate, beta1, beta2, epsilon, step):
    """Apply one Adam step (step counts from 1) in place, in the form torch.optim.Adam computes it."""
    m *= beta1
    m += (1.0 - beta1) * grad
    v *= beta2
    v += (1.0 - beta2) * grad * grad
    step_size = learning_rate / (1.0 - beta1**step)
    root_correction = np.sqrt(1.0 - beta2**step)
    param -= param.dtype.type(step_size) * m / (np.sqrt(v) / param.dtype.type(root_correction) + epsilon)


def threads(n_threads):
    """Run the matrix products on `n_threads` BLAS threads inside the block."""
    return blas_threads(n_threads)

# distutils: extra_compile_args = -fno-math-errno
# Without errno, GCC vectorizes sqrt: the float32 Adam update ran 3x faster (nothing reads errno).
"""MLP layers, losses and optimizers compiled with Cython.

The same fusion as the Numba backend, written against BLAS directly. Each matrix product is one
``sgemm`` / ``dgemm`` call from SciPy's ``cython_blas`` on the caller's row-major buffers, read
as their column-major transposes, so nothing is copied or transposed. The forward pass adds the
bias and applies the activation in one pass. The backward pass multiplies the incoming gradient
by f'(z) in place while it sums the bias gradient. The optimizers update each parameter and its
state in one pass. The functions a training step calls allocate no arrays.

Threads: GEMM runs on the BLAS thread pool, limited by ``threads(n)``. The fused passes run on
the calling thread without the GIL, so no sum depends on the thread count; they are O(B n_out)
against O(B n_in n_out) for the products. Under OpenMP ``prange`` beside OpenBLAS's threads, a
784-512-512-10 step took 5 to 15 times longer than with serial passes (2 cores, with other jobs
running). NOTE: that comparison has not been repeated on a quiet machine.

Cost per dense layer and pass: O(B n_in n_out) flops in BLAS plus O(B n_out) fused elementwise
work. Memory: the caller's buffers only. Inputs are validated by ``fastml.mlp`` first, which is
what makes the disabled bounds checks safe.
"""

from cython cimport floating
from libc.math cimport erf, exp, log, sqrt, sqrtf, tanh
from scipy.linalg.cython_blas cimport dgemm, sgemm

from fastml._threads import blas_threads
from fastml.mlp._common import ACTIVATION_CODES, INV_SQRT2, INV_SQRT_2PI

cdef enum:
    # The codes of fastml.mlp._common.ACTIVATIONS (checked below).
    IDENTITY = 0
    RELU = 1
    TANH = 2
    GELU = 3

if [ACTIVATION_CODES[name] for name in ("identity", "relu", "tanh", "gelu")] != [0, 1, 2, 3]:
    raise ImportError("fastml.mlp._common.ACTIVATIONS changed; update the codes in _cython.pyx")

cdef double C_INV_SQRT2 = INV_SQRT2
cdef double C_INV_SQRT_2PI = INV_SQRT_2PI


def threads(int n_threads):
    """Run the matrix products on `n_threads` BLAS threads inside the block."""
    return blas_threads(n_threads)


# ---- activations, one scalar at a time --------------------------------------------------------

cdef inline double _activate(double z, int code) noexcept nogil:
    if code == RELU:
        return z if z > 0 else 0.0
    if code == TANH:
        return tanh(z)
    if code == GELU:
        return z * 0.5 * (1.0 + erf(z * C_INV_SQRT2))
    return z


cdef inline double _derivative(double z, double a, int code) noexcept nogil:
    cdef double cdf
    if code == RELU:
        # f'(0) = 0, as torch's.
        return 1.0 if z > 0 else 0.0
    if code == TANH:
        return 1.0 - a * a
    if code == GELU:
        cdf = 0.5 * (1.0 + erf(z * C_INV_SQRT2))
        return cdf + z * C_INV_SQRT_2PI * exp(-0.5 * z * z)
    return 1.0


def activation_forward(const floating[:, ::1] z, str activation, floating[:, ::1] out):
    """out = f(z), elementwise."""
    cdef int code = ACTIVATION_CODES[activation]
    cdef Py_ssize_t i, j
    with nogil:
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                out[i, j] = <floating>_activate(z[i, j], code)


def activation_backward(
    const floating[:, ::1] z,
    const floating[:, ::1] a,
    const floating[:, ::1] grad_a,
    str activation,
    floating[:, ::1] out,
):
    """out = grad_a * f'(z), elementwise."""
    cdef int code = ACTIVATION_CODES[activation]
    cdef Py_ssize_t i, j
    with nogil:
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                out[i, j] = <floating>(grad_a[i, j] * _derivative(z[i, j], a[i, j], code))


# ---- matrix products on row-major buffers -----------------------------------------------------

cdef void _gemm(
    char transa, char transb, int m, int n, int k,
    floating* a, int lda, floating* b, int ldb, floating* c, int ldc,
) noexcept nogil:
    """c = op(a) op(b) in BLAS's column-major terms: c is m x n, op(a) m x k, op(b) k x n.

    BLAS does not write a or b; they are not const only because its signature says so.
    """
    cdef floating alpha = 1.0, beta = 0.0
    if floating is float:
        sgemm(&transa, &transb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc)
    else:
        dgemm(&transa, &transb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc)


cdef void _times_weight(const floating[:, ::1] x, const floating[:, ::1] weight, floating[:, ::1] z) noexcept nogil:
    """z (B, n_out) = x (B, n_in) @ W (n_in, n_out).

    A row-major matrix is its transpose in column-major order, so BLAS computes
    z.T (n_out, B) = W.T (n_out, n_in) @ x.T (n_in, B), with no transposition flag.
    """
    cdef int n_rows = <int>x.shape[0], n_in = <int>x.shape[1], n_out = <int>weight.shape[1]
    _gemm(c'N', c'N', n_out, n_rows, n_in, <floating*>&weight[0, 0], n_out, <floating*>&x[0, 0], n_in, &z[0, 0], n_out)


cdef void _weight_gradient(const floating[:, ::1] x, const floating[:, ::1] grad, floating[:, ::1] grad_weight) noexcept nogil:
    """grad_weight (n_in, n_out) = x.T (n_in, B) @ grad (B, n_out).

    In column-major terms: grad_weight.T (n_out, n_in) = grad.T (n_out, B) @ x (B, n_in), where
    x is read transposed.
    """
    cdef int n_rows = <int>x.shape[0], n_in = <int>x.shape[1], n_out = <int>grad.shape[1]
    _gemm(c'N', c'T', n_out, n_in, n_rows, <floating*>&grad[0, 0], n_out, <floating*>&x[0, 0], n_in,
          &grad_weight[0, 0], n_out)


cdef void _input_gradient(const floating[:, ::1] weight, const floating[:, ::1] grad, floating[:, ::1] grad_x) noexcept nogil:
    """grad_x (B, n_in) = grad (B, n_out) @ W.T (n_out, n_in).

    In column-major terms: grad_x.T (n_in, B) = W (n_in, n_out) @ grad.T (n_out, B), where W
    is read transposed.
    """
    cdef int n_rows = <int>grad.shape[0], n_in = <int>weight.shape[0], n_out = <int>weight.shape[1]
    _gemm(c'T', c'N', n_in, n_rows, n_out, <floating*>&weight[0, 0], n_out, <floating*>&grad[0, 0], n_out,
          &grad_x[0, 0], n_in)


# ---- the dense layer --------------------------------------------------------------------------

def linear_forward(const floating[:, ::1] x, const floating[:, ::1] weight, const floating[::1] bias, floating[:, ::1] out):
    """out = x @ W + b."""
    dense_forward(x, weight, bias, "identity", out, out)


def dense_forward(
    const floating[:, ::1] x,
    const floating[:, ::1] weight,
    const floating[::1] bias,
    str activation,
    floating[:, ::1] z,
    floating[:, ::1] a,
):
    """z = x @ W + b and a = f(z), the bias and activation fused into one pass."""
    cdef int code = ACTIVATION_CODES[activation]
    cdef Py_ssize_t i, j
    cdef floating value

    with nogil:
        _times_weight(x, weight, z)
        for i in range(z.shape[0]):
            for j in range(z.shape[1]):
                value = z[i, j] + bias[j]
                z[i, j] = value
                a[i, j] = <floating>_activate(value, code)


def linear_backward(
    const floating[:, ::1] x,
    const floating[:, ::1] weight,
    const floating[:, ::1] grad_out,
    grad_x,
    floating[:, ::1] grad_weight,
    floating[::1] grad_bias,
):
    """Gradients of a linear layer from dL/d(output); `grad_x` None skips dL/dx."""
    grad = grad_out.copy()
    dense_backward(x, weight, grad, grad, grad, "identity", grad_x, grad_weight, grad_bias)


def dense_backward(x, weight, z, a, grad_a, str activation, grad_x, grad_weight, grad_bias):
    """Gradients of a dense layer; `grad_a` is overwritten with dL/dz."""
    _dense_backward(x, weight, z, a, grad_a, ACTIVATION_CODES[activation], grad_weight, grad_bias)
    if grad_x is not None:
        _input_gradient_def(weight, grad_a, grad_x)


def _dense_backward(
    const floating[:, ::1] x,
    const floating[:, ::1] weight,
    const floating[:, ::1] z,
    const floating[:, ::1] a,
    floating[:, ::1] grad,
    int code,
    floating[:, ::1] grad_weight,
    floating[::1] grad_bias,
):
    cdef Py_ssize_t n_rows = z.shape[0], n_columns = z.shape[1], i, j
    cdef floating value

    with nogil:
        # grad *= f'(z) and grad_bias = its column sums, in row order.
        for j in range(n_columns):
            grad_bias[j] = 0
        for i in range(n_rows):
            for j in range(n_columns):
                value = <floating>(grad[i, j] * _derivative(z[i, j], a[i, j], code))
                grad[i, j] = value
                grad_bias[j] += value

        _weight_gradient(x, grad, grad_weight)


def _input_gradient_def(const floating[:, ::1] weight, const floating[:, ::1] grad, floating[:, ::1] grad_x):
    with nogil:
        _input_gradient(weight, grad, grad_x)


# ---- losses -----------------------------------------------------------------------------------

def softmax_cross_entropy(const floating[:, ::1] logits, const Py_ssize_t[::1] labels, floating[:, ::1] grad):
    """Return the mean of -log softmax(z)[y] over the rows; grad = (softmax(z) - onehot(y)) / batch."""
    cdef Py_ssize_t n_rows = logits.shape[0], n_classes = logits.shape[1], i, j
    cdef double total = 0.0, largest, sum_exps, e, scale

    with nogil:
        for i in range(n_rows):
            # Shift by the row max: every exp is at most 1, so it cannot overflow.
            largest = logits[i, 0]
            for j in range(1, n_classes):
                largest = max(largest, <double>logits[i, j])
            sum_exps = 0.0
            for j in range(n_classes):
                e = exp(logits[i, j] - largest)
                grad[i, j] = <floating>e
                sum_exps += e
            total += largest + log(sum_exps) - logits[i, labels[i]]

            scale = 1.0 / (sum_exps * n_rows)
            for j in range(n_classes):
                grad[i, j] = <floating>(grad[i, j] * scale)
            grad[i, labels[i]] -= <floating>(1.0 / n_rows)
    return total / n_rows


def mean_squared_error(const floating[:, ::1] predictions, const floating[:, ::1] targets, floating[:, ::1] grad):
    """Return the mean of (p - t)^2 over all entries; grad = 2 (p - t) / (number of entries)."""
    cdef Py_ssize_t n_rows = predictions.shape[0], n_columns = predictions.shape[1], i, j
    cdef double size = <double>(n_rows * n_columns), total = 0.0, difference

    with nogil:
        for i in range(n_rows):
            for j in range(n_columns):
                difference = <double>predictions[i, j] - <double>targets[i, j]
                total += difference * difference
                grad[i, j] = <floating>(2.0 * difference / size)
    return total / size


# ---- optimizer updates, in place, fused over all state ----------------------------------------

def sgd_update(param, grad, velocity, double learning_rate, double momentum):
    """velocity = momentum velocity + grad; param -= learning_rate velocity."""
    _sgd_update(param.reshape(-1), grad.reshape(-1), velocity.reshape(-1), learning_rate, momentum)


def _sgd_update(floating[::1] param, const floating[::1] grad, floating[::1] velocity,
                double learning_rate, double momentum):
    cdef Py_ssize_t i
    cdef double v
    with nogil:
        for i in range(param.shape[0]):
            v = momentum * velocity[i] + grad[i]
            velocity[i] = <floating>v
            param[i] = <floating>(param[i] - learning_rate * v)


def adam_update(param, grad, m, v, double learning_rate, double beta1, double beta2, double epsilon, long step):
    """Apply one Adam step (step counts from 1) in place, in the form torch.optim.Adam computes it."""
    cdef double step_size = learning_rate / (1.0 - beta1**step)
    cdef double root_correction = sqrt(1.0 - beta2**step)
    _adam_update(param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1),
                 beta1, beta2, step_size, 1.0 / root_correction, epsilon)


def _adam_update(floating[::1] param, const floating[::1] grad, floating[::1] m, floating[::1] v,
                 double beta1, double beta2, double step_size, double inverse_root_correction,
                 double epsilon):
    # Computed in the parameters' dtype, as torch does: in float32 the loop vectorizes twice as
    # wide, which halved its time here. Multiplying by 1 / sqrt(1 - beta2^t) differs from
    # torch's division by at most one rounding.
    cdef floating b1 = <floating>beta1, b2 = <floating>beta2
    cdef floating c1 = <floating>(1.0 - beta1), c2 = <floating>(1.0 - beta2)
    cdef floating lr = <floating>step_size, inverse = <floating>inverse_root_correction
    cdef floating eps = <floating>epsilon
    cdef floating g, m_i, v_i
    cdef Py_ssize_t i
    with nogil:
        for i in range(param.shape[0]):
            g = grad[i]
            m_i = b1 * m[i] + c1 * g
            v_i = b2 * v[i] + c2 * g * g
            m[i] = m_i
            v[i] = v_i
            param[i] = param[i] - lr * m_i / (_sqrt(v_i) * inverse + eps)


cdef inline floating _sqrt(floating value) noexcept nogil:
    if floating is float:
        return sqrtf(value)
    return sqrt(value)

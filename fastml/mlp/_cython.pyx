# distutils: extra_compile_args = -fno-math-errno
# Without errno, GCC vectorizes sqrt: the float32 Adam update ran 3x faster (nothing reads errno).
"""MLP layers, losses and optimizers compiled with Cython and OpenMP.

The same fusion as the Numba backend, written against BLAS directly. Each matrix product is
``sgemm`` / ``dgemm`` from SciPy's ``cython_blas`` on the caller's row-major buffers, read as
their column-major transposes, so nothing is copied or transposed. The forward pass adds the
bias and applies the activation in one pass. The backward pass multiplies the incoming gradient
by f'(z) in place while it sums the bias gradient. The optimizers update each parameter and its
state in one pass. The functions a training step calls allocate no arrays.

Threads: inside ``threads(n)`` the products and the large passes run on n OpenMP threads, and
BLAS on one. Each product is cut into n blocks of output columns (BLAS's column-major columns,
so batch rows or input features), or of output rows when there are few columns, one
single-threaded GEMM per thread (see ``_gemm``). The bias + activation pass splits rows, the
backward pass columns and the optimizer updates flat elements; the losses and the separate
activation layers stay on the calling thread. One thread pool serves both: with OpenBLAS's own
threads spinning beside OpenMP passes, a 784-512-512-10 step once took 5 to 15 times longer
(measured on a loaded machine). The split products are also faster than OpenBLAS's threading
here: 512 x 256 x 512 ran at 181 GFLOP/s in two blocks, against 142 on OpenBLAS's 2 threads
(2-core AMD EPYC with AVX-512), and the whole train step went from 5.45 to 5.0 ms. Each
bias-gradient column is summed over the rows in order whatever the split. A product's block
boundaries do depend on the thread count, and BLAS may round a narrow edge block differently,
so results agree across thread counts to rounding, not bit for bit.

Cost per dense layer and pass: O(B n_in n_out) flops in BLAS plus O(B n_out) fused elementwise
work. Memory: the caller's buffers only. Inputs are validated by ``fastml.mlp`` first, which is
what makes the disabled bounds checks safe.
"""

import contextlib

from cython cimport floating
from cython.parallel cimport prange
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

cdef enum:
    # Blocks of a split start at multiples of 16 columns or elements: whole cache lines of float32.
    ALIGN = 16
    # An elementwise pass over fewer than ALIGN * ROW_GRAIN elements runs on one thread: starting
    # the others costs more than they save.
    ROW_GRAIN = 256

# The OpenMP thread count of the kernels, set by threads() and 1 outside it.
cdef int _n_threads = 1


@contextlib.contextmanager
def threads(int n_threads):
    """Run the kernels on `n_threads` OpenMP threads inside the block, and BLAS on one."""
    global _n_threads
    previous = _n_threads
    _n_threads = n_threads
    try:
        with blas_threads(1):
            yield
    finally:
        _n_threads = previous


cdef inline Py_ssize_t _block_size(Py_ssize_t size, int n_parts) noexcept nogil:
    """The length of each of `n_parts` blocks that cover `size`, rounded up to ALIGN if long.

    Short blocks are not rounded: 33 items in blocks of 32 would leave one to the last thread.
    """
    cdef Py_ssize_t length = (size + n_parts - 1) // n_parts
    if length < 4 * ALIGN:
        return length
    return (length + ALIGN - 1) // ALIGN * ALIGN


cdef inline int _parts(Py_ssize_t size) noexcept nogil:
    """How many threads share a loop of `size` items: one per ALIGN items at most."""
    return <int>max(1, min(<Py_ssize_t>_n_threads, size // ALIGN))


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

cdef void _gemm_block(
    char transa, char transb, int m, int n, int k,
    floating* a, int lda, floating* b, int ldb, floating* c, int ldc,
) noexcept nogil:
    cdef floating alpha = 1.0, beta = 0.0
    if floating is float:
        sgemm(&transa, &transb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc)
    else:
        dgemm(&transa, &transb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc)


cdef void _gemm(
    char transa, char transb, int m, int n, int k,
    floating* a, int lda, floating* b, int ldb, floating* c, int ldc,
) noexcept nogil:
    """c = op(a) op(b) in BLAS's column-major terms: c is m x n, op(a) m x k, op(b) k x n.

    Each thread computes a block of the columns of c from the same columns of op(b), or, when c
    has under half as many columns as rows, a block of its rows from the same rows of op(a). On
    2 threads, 512 x 256 x 512 ran at 181 GFLOP/s split by columns and 158 by rows, while
    512 x 32 x 784 (a batch of 32) ran at 110 by columns and 140 by rows. BLAS does not write a
    or b; they are not const only because its signature says so.
    """
    cdef bint by_columns = 2 * <Py_ssize_t>n >= m
    cdef int n_parts = _parts(n if by_columns else m)
    cdef Py_ssize_t width = _block_size(n if by_columns else m, n_parts), start
    cdef int part, size
    if n_parts == 1:
        _gemm_block(transa, transb, m, n, k, a, lda, b, ldb, c, ldc)
        return

    for part in prange(n_parts, num_threads=n_parts, schedule="static", chunksize=1):
        start = part * width
        if by_columns:
            size = <int>(min(start + width, <Py_ssize_t>n) - start)
            if size > 0:
                # Column j of op(b) is column j of b, or row j when b is read transposed.
                _gemm_block(
                    transa, transb, m, size, k, a, lda,
                    b + (start * ldb if transb == c'N' else start), ldb, c + start * ldc, ldc,
                )
        else:
            size = <int>(min(start + width, <Py_ssize_t>m) - start)
            if size > 0:
                # Row i of op(a) is row i of a, or column i when a is read transposed.
                _gemm_block(
                    transa, transb, size, n, k, a + (start if transa == c'N' else start * lda),
                    lda, b, ldb, c + start, ldc,
                )


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
    cdef Py_ssize_t n_rows = z.shape[0], n_columns = z.shape[1], i
    if n_rows == 0:
        return

    with nogil:
        _times_weight(x, weight, z)
        for i in prange(n_rows, num_threads=_parts(n_rows * n_columns // ROW_GRAIN), schedule="static"):
            _bias_activate_row(&z[i, 0], &a[i, 0], &bias[0], n_columns, code)


cdef inline void _bias_activate_row(
    floating* z, floating* a, const floating* bias, Py_ssize_t n, int code,
) noexcept nogil:
    """Add the bias to one row of z and write f(z) to a, which may be z itself."""
    cdef Py_ssize_t j
    cdef floating value
    if code == RELU:
        # Its own loop, in the row's dtype, so that GCC vectorizes it.
        for j in range(n):
            value = z[j] + bias[j]
            z[j] = value
            a[j] = value if value > 0 else 0
        return
    for j in range(n):
        value = z[j] + bias[j]
        z[j] = value
        a[j] = <floating>_activate(value, code)


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
    cdef Py_ssize_t n_columns = z.shape[1]
    cdef int part, n_parts = _parts(n_columns)
    cdef Py_ssize_t width = _block_size(n_columns, n_parts)

    with nogil:
        # Threads take blocks of columns, so each column is summed over the rows in order
        # whatever the thread count.
        for part in prange(n_parts, num_threads=n_parts, schedule="static", chunksize=1):
            _scale_and_sum_columns(
                z, a, grad, code, grad_bias, part * width, min((part + 1) * width, n_columns)
            )
        _weight_gradient(x, grad, grad_weight)


cdef void _scale_and_sum_columns(
    const floating[:, ::1] z,
    const floating[:, ::1] a,
    floating[:, ::1] grad,
    int code,
    floating[::1] grad_bias,
    Py_ssize_t start,
    Py_ssize_t stop,
) noexcept nogil:
    """grad *= f'(z) and grad_bias = the column sums of the result, on columns [start, stop)."""
    cdef Py_ssize_t n_rows = z.shape[0], i, j
    cdef floating* g
    cdef const floating* z_row
    cdef floating value

    for j in range(start, stop):
        grad_bias[j] = 0
    for i in range(n_rows):
        g = &grad[i, 0]
        z_row = &z[i, 0]
        if code == RELU:
            for j in range(start, stop):
                value = g[j] if z_row[j] > 0 else 0
                g[j] = value
                grad_bias[j] += value
        else:
            for j in range(start, stop):
                value = <floating>(g[j] * _derivative(z_row[j], a[i, j], code))
                g[j] = value
                grad_bias[j] += value


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
    cdef Py_ssize_t size = param.shape[0], start, stop, i
    cdef int part, n_parts = _parts(size // ROW_GRAIN)
    cdef Py_ssize_t width = _block_size(size, n_parts)
    cdef double v
    with nogil:
        for part in prange(n_parts, num_threads=n_parts, schedule="static", chunksize=1):
            start = part * width
            stop = min(start + width, size)
            for i in range(start, stop):
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
    cdef Py_ssize_t size = param.shape[0], start, stop
    cdef int part, n_parts = _parts(size // ROW_GRAIN)
    cdef Py_ssize_t width = _block_size(size, n_parts)
    with nogil:
        for part in prange(n_parts, num_threads=n_parts, schedule="static", chunksize=1):
            start = part * width
            stop = min(start + width, size)
            _adam_block(&param[0], &grad[0], &m[0], &v[0], start, stop, b1, b2, c1, c2, lr, inverse, eps)


cdef void _adam_block(
    floating* param, const floating* grad, floating* m, floating* v, Py_ssize_t start,
    Py_ssize_t stop, floating b1, floating b2, floating c1, floating c2, floating lr,
    floating inverse, floating eps,
) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, m_i, v_i
    for i in range(start, stop):
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

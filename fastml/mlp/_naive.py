"""MLP layers, losses and optimizers in pure Python: the derivation, line by line, and the oracle.

Every function converts its arrays to nested lists, computes with Python floats (float64) in
loops that follow the chain rule one scalar at a time, and writes the result into the output
array that the caller passes (rounding to float32 there for float32 models).

Notation: x (batch, n_in) is a layer's input, W (n_in, n_out) its weight, b (n_out,) its bias,
z = x W + b the pre-activation, a = f(z) the activation, and g_a = dL/da the gradient that
arrives from above. Then, for every row i and column j:

    dL/dz[i][j] = g_a[i][j] * f'(z[i][j])
    dL/db[j]    = sum over i of dL/dz[i][j]
    dL/dW[k][j] = sum over i of x[i][k] * dL/dz[i][j]
    dL/dx[i][k] = sum over j of dL/dz[i][j] * W[k][j]

Cost: O(batch n_in n_out) interpreted multiply-adds per dense layer (about a microsecond each),
so it is meant for small networks; memory O(batch (n_in + n_out) + n_in n_out) for the lists.
"""

import contextlib
import math

import numpy as np

from fastml.mlp._common import INV_SQRT2, INV_SQRT_2PI


# ---- activations ------------------------------------------------------------------------------

def _activate(z, activation):
    if activation == "relu":
        return z if z > 0.0 else 0.0
    if activation == "tanh":
        return math.tanh(z)
    if activation == "gelu":
        return z * 0.5 * (1.0 + math.erf(z * INV_SQRT2))
    return z


def _derivative(z, a, activation):
    """f'(z), from the pre-activation z and the activation a = f(z)."""
    if activation == "relu":
        # The derivative at exactly 0 is taken as 0, as torch does.
        return 1.0 if z > 0.0 else 0.0
    if activation == "tanh":
        return 1.0 - a * a
    if activation == "gelu":
        # d/dz [z Phi(z)] = Phi(z) + z phi(z), with phi the standard normal density.
        cdf = 0.5 * (1.0 + math.erf(z * INV_SQRT2))
        return cdf + z * INV_SQRT_2PI * math.exp(-0.5 * z * z)
    return 1.0


def activation_forward(z, activation, out):
    """out = f(z), elementwise."""
    rows = z.tolist()
    out[...] = [[_activate(value, activation) for value in row] for row in rows]


def activation_backward(z, a, grad_a, activation, out):
    """out = grad_a * f'(z), elementwise."""
    result = []
    for z_row, a_row, g_row in zip(z.tolist(), a.tolist(), grad_a.tolist()):
        result.append([g * _derivative(zv, av, activation) for zv, av, g in zip(z_row, a_row, g_row)])
    out[...] = result


# ---- the dense layer: z = x W + b, a = f(z) ---------------------------------------------------

def _matmul_plus_bias(x, weight, bias):
    n_out = len(bias)
    z = []
    for x_row in x:
        z_row = list(bias)
        for k, x_value in enumerate(x_row):
            w_row = weight[k]
            for j in range(n_out):
                z_row[j] += x_value * w_row[j]
        z.append(z_row)
    return z


def linear_forward(x, weight, bias, out):
    """out = x W + b."""
    out[...] = _matmul_plus_bias(x.tolist(), weight.tolist(), bias.tolist())


def dense_forward(x, weight, bias, activation, z, a):
    """z = x W + b and a = f(z). For the identity, `a` may be `z` itself."""
    z_rows = _matmul_plus_bias(x.tolist(), weight.tolist(), bias.tolist())
    z[...] = z_rows
    a[...] = [[_activate(value, activation) for value in row] for row in z_rows]


def linear_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias):
    """Gradients of a linear layer from dL/d(output); `grad_x` None skips dL/dx."""
    _linear_gradients(x.tolist(), weight.tolist(), grad_out.tolist(), grad_x, grad_weight, grad_bias)


def dense_backward(x, weight, z, a, grad_a, activation, grad_x, grad_weight, grad_bias):
    """Gradients of a dense layer; `grad_a` is overwritten with dL/dz."""
    grad_z = []
    for z_row, a_row, g_row in zip(z.tolist(), a.tolist(), grad_a.tolist()):
        grad_z.append([g * _derivative(zv, av, activation) for zv, av, g in zip(z_row, a_row, g_row)])
    grad_a[...] = grad_z
    _linear_gradients(x.tolist(), weight.tolist(), grad_z, grad_x, grad_weight, grad_bias)


def _linear_gradients(x, weight, grad_z, grad_x, grad_weight, grad_bias):
    n_in, n_out = len(weight), len(weight[0])

    # dL/db[j]: every row's z[i][j] contains b[j] once.
    bias_sums = [0.0] * n_out
    for g_row in grad_z:
        for j in range(n_out):
            bias_sums[j] += g_row[j]
    grad_bias[...] = bias_sums

    # dL/dW[k][j]: W[k][j] multiplies x[i][k] in z[i][j] of every row i.
    weight_sums = [[0.0] * n_out for _ in range(n_in)]
    for x_row, g_row in zip(x, grad_z):
        for k in range(n_in):
            w_sums = weight_sums[k]
            for j in range(n_out):
                w_sums[j] += x_row[k] * g_row[j]
    grad_weight[...] = weight_sums

    # dL/dx[i][k]: x[i][k] reaches every z[i][j] through W[k][j].
    if grad_x is not None:
        grad_x[...] = [
            [sum(g_row[j] * weight[k][j] for j in range(n_out)) for k in range(n_in)]
            for g_row in grad_z
        ]


# ---- losses -----------------------------------------------------------------------------------

def softmax_cross_entropy(logits, labels, grad):
    """Return the mean of -log softmax(z)[y] over the rows; grad = (softmax(z) - onehot(y)) / batch."""
    rows = logits.tolist()
    batch = len(rows)
    total = 0.0
    grad_rows = []
    for row, label in zip(rows, labels.tolist()):
        # log sum exp(z) = m + log sum exp(z - m): no term exceeds exp(0), so nothing overflows.
        largest = max(row)
        exps = [math.exp(value - largest) for value in row]
        sum_exps = sum(exps)
        total += largest + math.log(sum_exps) - row[label]

        grad_row = [e / sum_exps / batch for e in exps]
        grad_row[label] -= 1.0 / batch
        grad_rows.append(grad_row)
    grad[...] = grad_rows
    return total / batch


def mean_squared_error(predictions, targets, grad):
    """Return the mean of (p - t)^2 over all entries; grad = 2 (p - t) / (number of entries)."""
    p_rows, t_rows = predictions.tolist(), targets.tolist()
    size = len(p_rows) * len(p_rows[0])
    total = 0.0
    grad_rows = []
    for p_row, t_row in zip(p_rows, t_rows):
        differences = [p - t for p, t in zip(p_row, t_row)]
        total += sum(d * d for d in differences)
        grad_rows.append([2.0 * d / size for d in differences])
    grad[...] = grad_rows
    return total / size


# ---- optimizer updates, in place, one parameter array at a time -------------------------------

def sgd_update(param, grad, velocity, learning_rate, momentum):
    """velocity = momentum velocity + grad; param -= learning_rate velocity."""
    p, g, v = param.ravel().tolist(), grad.ravel().tolist(), velocity.ravel().tolist()
    for i in range(len(p)):
        v[i] = momentum * v[i] + g[i]
        p[i] -= learning_rate * v[i]
    velocity[...] = np.reshape(v, velocity.shape)
    param[...] = np.reshape(p, param.shape)


def adam_update(param, grad, m, v, learning_rate, beta1, beta2, epsilon, step):
    """Apply one Adam step (step counts from 1) in place, in the form torch.optim.Adam computes it."""
    p, g = param.ravel().tolist(), grad.ravel().tolist()
    m_list, v_list = m.ravel().tolist(), v.ravel().tolist()
    step_size = learning_rate / (1.0 - beta1**step)
    root_correction = math.sqrt(1.0 - beta2**step)
    for i in range(len(p)):
        m_list[i] = beta1 * m_list[i] + (1.0 - beta1) * g[i]
        v_list[i] = beta2 * v_list[i] + (1.0 - beta2) * g[i] * g[i]
        p[i] -= step_size * m_list[i] / (math.sqrt(v_list[i]) / root_correction + epsilon)
    m[...] = np.reshape(m_list, m.shape)
    v[...] = np.reshape(v_list, v.shape)
    param[...] = np.reshape(p, param.shape)


def threads(n_threads):
    """Return a no-op context: the naive backend runs on one thread, so there is nothing to limit."""
    return contextlib.nullcontext()

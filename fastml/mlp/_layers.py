"""The layers and losses of the MLP as objects: ``forward`` stores what ``backward`` needs.

Each object validates its input, then calls the functions of the backend chosen with
``backend=`` (see ``fastml.backends``). ``MLP`` runs the same backend functions on preallocated
buffers and fuses each Linear layer with the activation after it.
"""

import numpy as np

from fastml import backends
from fastml._validation import FLOAT_DTYPES, check_array, check_int, check_option, check_random_state
from fastml._threads import get_num_threads

INITS = ("he", "glorot")


def _threads(module):
    return module.threads(get_num_threads())


def check_matching(array, name, shape, dtype):
    """Validate `array` as a finite float array of `dtype` with exactly `shape`."""
    array = check_array(array, name, ndim=len(shape), dtype=(dtype,), min_samples=0)
    if array.shape != tuple(shape):
        raise ValueError(f"{name} has shape {array.shape}; expected {tuple(shape)}")
    return array


def check_labels(labels, name, n_samples, n_classes):
    """Validate class indices: a 1-D integer array of length n_samples with values in [0, n_classes)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n_samples:
        raise ValueError(f"{name} has shape {labels.shape}; expected ({n_samples},), one label per row")
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind != "f" or not np.all(np.isfinite(labels)) or np.any(labels % 1):
            raise ValueError(f"{name} must contain integer class indices, got dtype {labels.dtype}")
    bad = np.flatnonzero((labels < 0) | (labels >= n_classes))
    if bad.size:
        raise ValueError(
            f"{name} contains the label {labels[bad[0]]} at index {bad[0]}, out of range; "
            f"expected class indices in [0, {n_classes})"
        )
    return labels.astype(np.intp)


class Linear:
    """A fully connected layer: ``forward(x) = x @ weight + bias``.

    ``weight`` has shape (in_features, out_features), so a row of ``x`` is multiplied from the
    left (torch stores the transpose). `init` is "he" (normal, std sqrt(2 / in_features), for a
    layer followed by ReLU) or "glorot" (uniform in +-sqrt(6 / (in_features + out_features)));
    the bias starts at zero. Parameters are float32 or float64 (`dtype`); input of another dtype
    is converted to it.
    """

    def __init__(self, in_features, out_features, *, init="glorot", dtype=np.float64,
                 random_state=None, backend="auto"):
        in_features = check_int(in_features, "in_features", min_value=1)
        out_features = check_int(out_features, "out_features", min_value=1)
        check_option(init, "init", INITS)
        self.dtype = _check_dtype(dtype)
        self.backend = backend
        self._module = backends.load("mlp", backend)

        rng = check_random_state(random_state)
        if init == "he":
            weight = rng.normal(0.0, np.sqrt(2.0 / in_features), size=(in_features, out_features))
        else:
            limit = np.sqrt(6.0 / (in_features + out_features))
            weight = rng.uniform(-limit, limit, size=(in_features, out_features))
        self._weight = weight.astype(self.dtype)
        self._bias = np.zeros(out_features, dtype=self.dtype)
        self._input = None

    @property
    def weight(self):
        """The (in_features, out_features) weights, C-contiguous, in the layer's dtype."""
        return self._weight

    @weight.setter
    def weight(self, value):
        # The compiled backends read the buffer row by row, so a transposed view (a torch
        # weight's `.T`) is copied here once instead of failing inside a kernel.
        self._weight = check_matching(value, "weight", self._weight.shape, self.dtype)

    @property
    def bias(self):
        """The (out_features,) bias, in the layer's dtype."""
        return self._bias

    @bias.setter
    def bias(self, value):
        self._bias = check_matching(value, "bias", self._bias.shape, self.dtype)

    def __repr__(self):
        in_features, out_features = self.weight.shape
        return (
            f"Linear({in_features}, {out_features}, dtype={np.dtype(self.dtype).name}, "
            f"backend={self.backend!r})"
        )

    @property
    def in_features(self):
        return self.weight.shape[0]

    @property
    def out_features(self):
        return self.weight.shape[1]

    def forward(self, x):
        """Return ``x @ weight + bias`` of shape (batch, out_features); keep `x` for ``backward``."""
        x = check_array(x, "x", dtype=(self.dtype,))
        if x.shape[1] != self.in_features:
            raise ValueError(f"x has {x.shape[1]} features; this Linear layer expects {self.in_features}")
        out = np.empty((x.shape[0], self.out_features), dtype=self.dtype)
        with _threads(self._module):
            self._module.linear_forward(x, self.weight, self.bias, out)
        self._input = x
        return out

    def backward(self, grad_output):
        """Return ``(grad_x, grad_weight, grad_bias)`` from dL/d(output) of the last ``forward``."""
        x = _forward_input(self._input, "Linear")
        grad_output = check_matching(grad_output, "grad_output", (x.shape[0], self.out_features), self.dtype)
        grad_x = np.empty_like(x)
        grad_weight = np.empty_like(self.weight)
        grad_bias = np.empty_like(self.bias)
        with _threads(self._module):
            self._module.linear_backward(x, self.weight, grad_output, grad_x, grad_weight, grad_bias)
        return grad_x, grad_weight, grad_bias


class _Activation:
    """An elementwise activation f: ``forward(z) = f(z)``, ``backward(g) = g * f'(z)``."""

    name = None

    def __init__(self, *, backend="auto"):
        self.backend = backend
        self._module = backends.load("mlp", backend)
        self._cache = None

    def forward(self, z):
        """Return f(z), same shape and dtype; keep z and f(z) for ``backward``."""
        z = check_array(z, "z")
        out = np.empty_like(z)
        with _threads(self._module):
            self._module.activation_forward(z, self.name, out)
        self._cache = (z, out)
        return out

    def backward(self, grad_output):
        """Return dL/dz = grad_output * f'(z) for the z of the last ``forward``."""
        z, a = _forward_input(self._cache, type(self).__name__)
        grad_output = check_matching(grad_output, "grad_output", z.shape, z.dtype)
        out = np.empty_like(z)
        with _threads(self._module):
            self._module.activation_backward(z, a, grad_output, self.name, out)
        return out

    def __repr__(self):
        return f"{type(self).__name__}(backend={self.backend!r})"


class ReLU(_Activation):
    """max(z, 0). Its derivative at exactly 0 is taken as 0, as in torch."""

    name = "relu"


class Tanh(_Activation):
    """tanh(z); the derivative 1 - tanh(z)^2 is computed from the stored output."""

    name = "tanh"


class GELU(_Activation):
    """The exact GELU, z Phi(z) with Phi the standard normal CDF, written with erf.

    It matches ``torch.nn.GELU(approximate="none")``, not the tanh approximation. Its derivative
    is Phi(z) + z phi(z), with phi the standard normal density.
    """

    name = "gelu"


# The activations of fastml.mlp._common.ACTIVATIONS as layers; "identity" is a Linear layer alone.
ACTIVATION_LAYERS = {"relu": ReLU, "tanh": Tanh, "gelu": GELU}


class SoftmaxCrossEntropy:
    """Cross-entropy of softmax(logits) against class indices, averaged over the batch.

    ``forward(logits, labels)`` returns the loss, computed from the logits with log-sum-exp. The
    row maximum is subtracted first, so exp never overflows, and the loss and gradient stay finite
    while each row's max - min is below the dtype's largest value.
    ``backward()`` returns dL/dlogits = (softmax(logits) - onehot(labels)) / batch, as
    ``torch.nn.functional.cross_entropy`` with its default mean reduction.
    """

    def __init__(self, *, backend="auto"):
        self.backend = backend
        self._module = backends.load("mlp", backend)
        self._grad = None

    def forward(self, logits, labels):
        """Return the mean cross-entropy loss as a Python float."""
        logits = check_array(logits, "logits")
        labels = check_labels(labels, "labels", logits.shape[0], logits.shape[1])
        self._grad = np.empty_like(logits)
        return self._module.softmax_cross_entropy(logits, labels, self._grad)

    def backward(self):
        """Return dL/dlogits of the last ``forward``."""
        return _forward_input(self._grad, type(self).__name__).copy()


class MeanSquaredError:
    """Mean of (prediction - target)^2 over all entries, as ``torch.nn.functional.mse_loss``."""

    def __init__(self, *, backend="auto"):
        self.backend = backend
        self._module = backends.load("mlp", backend)
        self._grad = None

    def forward(self, predictions, targets):
        """Return the mean squared error as a Python float."""
        predictions = check_array(predictions, "predictions")
        targets = check_matching(targets, "targets", predictions.shape, predictions.dtype)
        self._grad = np.empty_like(predictions)
        return self._module.mean_squared_error(predictions, targets, self._grad)

    def backward(self):
        """Return dL/dpredictions = 2 (predictions - targets) / size of the last ``forward``."""
        return _forward_input(self._grad, type(self).__name__).copy()


def _forward_input(cached, layer_name):
    if cached is None:
        raise RuntimeError(f"{layer_name}.backward called before forward; call forward first")
    return cached


def _check_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"invalid dtype={dtype}; expected float32 or float64")
    return dtype

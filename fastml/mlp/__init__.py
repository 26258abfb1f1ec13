"""A multilayer perceptron with backpropagation derived and coded by hand, in four backends.

Layers (``Linear``, ``ReLU``, ``Tanh``, ``GELU``) and losses (``SoftmaxCrossEntropy``,
``MeanSquaredError``) expose ``forward`` and ``backward``; ``MLP`` composes them and trains with
``SGD`` (with momentum) or ``Adam``. Every object takes ``backend=`` ("auto", "naive", "numpy",
"numba", "cython"); see docs/mlp.md.
"""

from fastml.mlp._layers import GELU, Linear, MeanSquaredError, ReLU, SoftmaxCrossEntropy, Tanh
from fastml.mlp._model import MLP
from fastml.mlp._optim import SGD, Adam

__all__ = [
    "GELU",
    "MLP",
    "Adam",
    "Linear",
    "MeanSquaredError",
    "ReLU",
    "SGD",
    "SoftmaxCrossEntropy",
    "Tanh",
]

"""fastml: core ML primitives written four times (naive Python, NumPy, Numba, Cython).

Each primitive lives in its own subpackage (``fastml.kmeans``, ...) whose public functions
validate their input once and then dispatch to the backend chosen with ``backend=``.
Subpackages are imported on first use, so ``import fastml`` stays cheap.
"""

import importlib

from fastml._threads import get_num_threads, num_threads, set_num_threads
from fastml.backends import available_backends
from fastml.exceptions import BackendUnavailableError, ConvergenceWarning

__version__ = "0.1.0.dev0"

_SUBPACKAGES = ("attention", "bpe", "datasets", "kmeans", "knn", "llm", "mlp", "sampling")

__all__ = [
    "BackendUnavailableError",
    "ConvergenceWarning",
    "available_backends",
    "get_num_threads",
    "num_threads",
    "set_num_threads",
    *_SUBPACKAGES,
]


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"fastml.{name}")
    raise AttributeError(f"module 'fastml' has no attribute {name!r}")

"""One thread setting for Numba, OpenMP (the Cython kernels) and BLAS.

``set_num_threads(n)`` stores the count, and every parallel backend reads ``get_num_threads()``
when it runs. Numba kernels apply it with ``numba.set_num_threads``, Cython kernels pass it to
``prange(num_threads=...)``, and NumPy's matrix products run under threadpoolctl's BLAS limit.
The default is the number of CPUs this process may use, or ``FASTML_NUM_THREADS`` when set.
"""

import contextlib
import functools
import os

_num_threads = None


def _cpu_count():
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _check_count(n, name):
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return n


def _default():
    value = os.environ.get("FASTML_NUM_THREADS")
    if value is None:
        return _cpu_count()
    try:
        return _check_count(int(value), "FASTML_NUM_THREADS")
    except ValueError:
        raise ValueError(
            f"invalid FASTML_NUM_THREADS={value!r}; expected a whole number >= 1"
        ) from None


def get_num_threads():
    """Return the number of threads that parallel backends use."""
    return _num_threads if _num_threads is not None else _default()


def set_num_threads(n):
    """Set the number of threads for Numba, OpenMP and BLAS in every fastml backend.

    ``None`` restores the default (``FASTML_NUM_THREADS`` or the CPU count).
    """
    global _num_threads
    _num_threads = None if n is None else _check_count(n, "n")


@contextlib.contextmanager
def num_threads(n):
    """Temporarily set the thread count: ``with fastml.num_threads(1): ...``."""
    global _num_threads
    previous = _num_threads
    set_num_threads(n)
    try:
        yield
    finally:
        _num_threads = previous


@functools.cache
def _blas_controller():
    # Load SciPy's BLAS first: Numba's np.dot calls it, but Numba loads it only when it first
    # compiles, which may happen inside a limit that then would not cover it.
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import ThreadpoolController

    # Scanning the loaded libraries costs about 0.5 ms, so it is done once.
    return ThreadpoolController()


@functools.cache
def _blas_libraries():
    return tuple(lib for lib in _blas_controller().lib_controllers if lib.user_api == "blas")


@contextlib.contextmanager
def blas_threads(n):
    """Limit the BLAS thread pools (NumPy's and SciPy's) to `n` inside the block."""
    # The libraries' own getters and setters: entering and leaving took about 5 us, against 11 us
    # for threadpoolctl's limit(). A decoding step's attention, about 200 us, enters one per call.
    libraries = _blas_libraries()
    previous = [lib.get_num_threads() for lib in libraries]
    for lib, count in zip(libraries, previous):
        if count != n:
            lib.set_num_threads(n)
    try:
        yield
    finally:
        for lib, count in zip(libraries, previous):
            if count != n:
                lib.set_num_threads(count)


@contextlib.contextmanager
def numba_threads(n):
    """Run Numba's parallel regions with `n` threads inside the block."""
    import numba

    n = min(n, numba.config.NUMBA_NUM_THREADS)
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(previous)

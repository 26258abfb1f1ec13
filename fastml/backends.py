"""The backend registry: which implementations exist, which import here, and which is fastest.

Every primitive is implemented by modules named ``fastml.<primitive>._<backend>``. The registry
imports a backend module only when it is first requested, so a missing optional dependency or an
uncompiled Cython extension costs nothing until that backend is requested. Then ``load`` raises
``BackendUnavailableError`` with the way to install it.

``backend="auto"`` picks the first importable entry of the primitive's preference order, which
lists the backends from fastest to slowest as measured by the asv suite (docs/benchmarks.md).
"""

import importlib

from fastml.exceptions import BackendUnavailableError

# Preference order for "auto", fastest first. A backend that makes no sense for a primitive is
# absent from its tuple rather than faked.
_REGISTRY = {
    "attention": ("cython", "numba", "numpy", "naive"),
    "bpe": ("cython", "numba", "naive"),
    "kmeans": ("cython", "numba", "numpy", "naive"),
    "knn": ("cython", "numba", "numpy", "naive"),
    "mlp": ("cython", "numba", "numpy", "naive"),
    "sampling": ("cython", "numba", "numpy", "naive"),
}

_HOW_TO_GET = {
    "cython": "build the Cython extensions with `pip install -e .` (needs a C compiler)",
    "numba": "install numba (`pip install numba`)",
}

_loaded = {}


def primitives():
    """Return the names of the primitives that have backends."""
    return tuple(_REGISTRY)


def backends(primitive):
    """Return the backends implemented for `primitive`, fastest first."""
    try:
        return _REGISTRY[primitive]
    except KeyError:
        raise ValueError(
            f"unknown primitive {primitive!r}; expected one of {sorted(_REGISTRY)}"
        ) from None


def available_backends(primitive):
    """Return the backends of `primitive` that import on this machine, fastest first."""
    available = []
    for name in backends(primitive):
        try:
            load(primitive, name)
        except BackendUnavailableError:
            continue
        available.append(name)
    return tuple(available)


def load(primitive, backend="auto"):
    """Import and return the module implementing `primitive` with `backend`.

    Raises ``ValueError`` for a name that is not a backend of `primitive`, and
    ``BackendUnavailableError`` for one that exists but cannot be imported here.
    """
    names = backends(primitive)
    if backend == "auto":
        for name in names:
            try:
                return load(primitive, name)
            except BackendUnavailableError:
                continue
        raise BackendUnavailableError(f"no backend of {primitive!r} can be imported")

    if not isinstance(backend, str) or backend not in names:
        raise ValueError(
            f"invalid backend={backend!r} for {primitive}; expected 'auto' or one of {list(names)}"
        )

    key = (primitive, backend)
    if key not in _loaded:
        try:
            _loaded[key] = importlib.import_module(f"fastml.{primitive}._{backend}")
        except ImportError as exc:
            hint = _HOW_TO_GET.get(backend, "reinstall fastml")
            raise BackendUnavailableError(
                f"backend {backend!r} of {primitive} cannot be imported ({exc}); {hint}"
            ) from exc
    return _loaded[key]


def resolve(primitive, backend="auto"):
    """Return the name of the backend that `load(primitive, backend)` would use."""
    module = load(primitive, backend)
    return module.__name__.rsplit("._", 1)[1]

import pytest

import fastml
from fastml import backends
from fastml.exceptions import BackendUnavailableError


def test_auto_picks_first_available():
    available = backends.available_backends("kmeans")
    assert backends.resolve("kmeans", "auto") == available[0]


def test_every_kmeans_backend_imports_here():
    # CI builds the Cython extension and installs Numba, so all four must load.
    assert set(backends.available_backends("kmeans")) == {"naive", "numpy", "numba", "cython"}


def test_unknown_backend_rejected():
    with pytest.raises(ValueError, match=r"invalid backend='fortran' for kmeans; expected 'auto'"):
        backends.load("kmeans", "fortran")


def test_unknown_primitive_rejected():
    with pytest.raises(ValueError, match=r"unknown primitive 'svm'"):
        backends.load("svm")


def test_unimportable_backend_raises_clear_error(monkeypatch):
    monkeypatch.setitem(backends._REGISTRY, "toy", ("numba", "naive"))
    # fastml.toy does not exist, so both backends fail to import.
    with pytest.raises(BackendUnavailableError, match=r"backend 'numba' of toy cannot be imported"):
        backends.load("toy", "numba")
    with pytest.raises(BackendUnavailableError, match=r"no backend of 'toy' can be imported"):
        backends.load("toy", "auto")


def test_import_fastml_loads_no_backend():
    import subprocess
    import sys

    code = (
        "import sys, fastml; "
        "print(any(m.startswith('fastml.kmeans') or m == 'numba' for m in sys.modules))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "False"


def test_top_level_exports_subpackages():
    assert fastml.kmeans.fit is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        fastml.nothing


def test_kmeans_functions_do_not_import_sklearn():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from fastml.kmeans import fit; "
        "fit(np.eye(4), 2, random_state=0, backend='numpy'); print('sklearn' in sys.modules)"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "False"

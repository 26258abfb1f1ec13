"""Build the Cython extensions: every fastml/**/_cython.pyx, optimized and with OpenMP."""

import os
import platform
import sys
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

if sys.platform == "win32":
    compile_args, link_args = ["/O2", "/openmp"], []
elif sys.platform == "darwin":
    # Apple clang needs libomp from Homebrew; -Xpreprocessor passes -fopenmp through.
    compile_args, link_args = ["-O3", "-Xpreprocessor", "-fopenmp"], ["-lomp"]
else:
    compile_args, link_args = ["-O3", "-fopenmp"], ["-fopenmp"]
    # Like Numba, which compiles for the CPU it runs on, tune for the building machine: the
    # select loops of the kernels vectorize only with AVX. A binary meant for other machines
    # (a wheel) must be built with FASTML_PORTABLE=1.
    if not os.environ.get("FASTML_PORTABLE") and platform.machine() in ("x86_64", "AMD64"):
        compile_args.append("-march=native")

extensions = [
    Extension(
        ".".join(pyx.with_suffix("").parts),
        [str(pyx)],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for pyx in sorted(Path("fastml").rglob("_cython.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            # Safe because every public entry point validates shapes and bounds first.
            "boundscheck": False,
            "wraparound": False,
            "initializedcheck": False,
            "cdivision": True,
        },
    )
)

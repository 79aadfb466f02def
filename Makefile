# Two entry points (see README): `make run` regenerates every figure on the
# embedded default, `make test` runs the test suite. Both do their own set-up.
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: setup run test bench

# torch==2.13.0 resolves to the local CPU wheel on the project's CPU machines;
# an existing torch install (e.g. a CUDA build on a GPU box) is left alone.
setup:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==2.13.0"
	@$(PIP) install -q -e ".[test]"

run: setup
	cpi run --figures figures

test: setup
	$(PYTHON) -m pytest -q

bench: setup
	$(PYTHON) benchmarks/run_all.py

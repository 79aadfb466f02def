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

# The `real` tests need smollm2-135m-instruct: fetch it first (a no-op once cached), timed; a failed fetch
# stops here, loudly (it is never skipped).
test: setup
	@start=$$(date +%s); \
	$(PYTHON) -m cpi.cli models fetch smollm2-135m-instruct \
	  || { echo "make test: FAILED to fetch smollm2-135m-instruct (see above)" >&2; exit 1; }; \
	echo "make test: smollm2-135m-instruct ready ($$(( $$(date +%s) - start )) s)"
	$(PYTHON) -m pytest -q

bench: setup
	$(PYTHON) benchmarks/run_all.py

# Two entry points (see README): `make run` is the main job (the theory figures, then the controlled
# experiment on SmolLM2-135M-Instruct) regenerating figures/, `make test` runs the test suite. Both do
# their own set-up and fetch the real model first (a no-op once cached; a failed fetch stops, loudly).
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: setup fetch run test bench

# torch==2.13.0 resolves to the local CPU wheel on the project's CPU machines;
# an existing torch install (e.g. a CUDA build on a GPU box) is left alone.
setup:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q "torch==2.13.0"
	@$(PIP) install -q -e ".[test]"

fetch: setup
	@start=$$(date +%s); \
	$(PYTHON) -m cpi.cli models fetch smollm2-135m-instruct \
	  || { echo "make: FAILED to fetch smollm2-135m-instruct (see above)" >&2; exit 1; }; \
	echo "make: smollm2-135m-instruct ready ($$(( $$(date +%s) - start )) s)"

run: fetch
	$(PYTHON) -m cpi.cli run --figures figures

# The `real` tests need smollm2-135m-instruct (fetched by the `fetch` target).
test: fetch
	$(PYTHON) -m pytest -q

bench: setup
	$(PYTHON) benchmarks/run_all.py

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/quickstart.yaml
# gpu-check's Python: the venv's where it exists, else python3 (a GPU machine's own torch, with the wheels of .whl/)
GPU_PY ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)

.DEFAULT_GOAL := help
.PHONY: help install test test-unit test-fast lint format quickstart bench gpu-check bench-loader clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(BIN)/lnl: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	@touch $(BIN)/lnl

install: $(BIN)/lnl ## Create .venv and install lnl with its dev tools

test: install ## Run the whole test suite: tests/unit and tests/integration (CPU, about 5-10 minutes on 2 cores)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

test-unit: install ## Run the fast unit tests only (tests/unit, mirrors lnl/)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup tests/unit

test-fast: install ## Run the tests not marked slow
	$(BIN)/python -m pytest -q -m "not slow"

lint: install ## Check code with ruff (lint + format check)
	$(BIN)/ruff check lnl tests
	$(BIN)/ruff format --check lnl tests

format: install ## Format and autofix with ruff
	$(BIN)/ruff format lnl tests
	$(BIN)/ruff check --fix lnl tests

quickstart: install ## DML on the bundled Digits data with 40% label noise (CPU, about 90 s)
	OMP_NUM_THREADS=1 $(BIN)/lnl fit --config $(CONFIG)  # a tiny net: extra threads only add overhead

bench: install ## Step time and memory of each method vs CE (ARGS="--methods ce,dml --device cpu")
	$(BIN)/python -m lnl.tools.bench $(ARGS)

gpu-check: ## Issue 19's GPU acceptance in <= 10 min: fits, steps/s, SM busy, CE vs plain loop (docs/gpu.md; CPU fallback)
	@if [ -d .whl ] && ! $(GPU_PY) -c "import jsonargparse" 2>/dev/null; then \
	  $(GPU_PY) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/lnl-site .whl/*.whl; fi
	PYTHONPATH="$(CURDIR):/tmp/lnl-site:$$PYTHONPATH" $(GPU_PY) -m lnl.tools.gpu_check --out runs/gpu_check $(ARGS)

bench-loader: install ## Loading at Clothing1M scale: images/s per worker count, per-sample seeding cost (ARGS="--workers 0,4,8")
	$(BIN)/python -m lnl.tools.bench_loader $(ARGS)

clean: ## Remove runs and caches (keeps .venv)
	rm -rf runs lightning_logs .pytest_cache .ruff_cache

# One venv, plain pip. `make demo` sets everything up and runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel of torch is installed only where the venv has no torch yet (keep a CUDA build you added).
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo app test test-fast lint bench clean

setup: $(VENV)/.setup-stamp

$(VENV)/.setup-stamp: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[all]"
	touch $@

demo: setup
	$(BIN)/python -m workbench.cli.demo

app: setup
	$(BIN)/workbench app

test: setup
	$(BIN)/python -m pytest -n 2 -q

test-fast: setup
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

lint: setup
	$(BIN)/ruff check workbench tests benchmarks app notebooks

bench: setup
	$(BIN)/python benchmarks/bench_losses.py

clean:
	rm -rf $(VENV) build *.egg-info

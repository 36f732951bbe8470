# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench

# Re-run when pyproject.toml changes; the stamp is written only after every step succeeded.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# Install torch only when none is importable: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,plot,data,log,hf,eval,gpu]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/selrope demo --out runs/demo --overwrite

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -n 2 --timeout 600 tests

bench: setup
	$(BIN)/python benchmarks/rotary.py
	$(BIN)/python benchmarks/mixers.py
	$(BIN)/python benchmarks/model.py

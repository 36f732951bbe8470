# Two entry points for a fresh machine: `make demo` (main job) and `make test` (test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	# Install torch only when none is importable: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,plot]"

setup: $(BIN)/python

demo: setup
	$(BIN)/selrope demo --out runs/demo

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -n 2 --timeout 600 tests

bench: setup
	$(BIN)/python benchmarks/rotary.py

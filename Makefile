# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test wheel-check docs bench

# Re-run when pyproject.toml changes; the stamp is written only after every step succeeded.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# Install torch only when none is importable: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,docs,plot,data,log,hf,eval,gpu]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/selrope demo --out runs/demo --overwrite

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -n 2 --timeout 600 tests
	$(MAKE) --no-print-directory wheel-check docs

# The released package outside the checkout: sdist + wheel, twine check, a fresh venv with
# torch==2.13.0 and the wheel's runtime dependencies, then the command, a 2-step train and the
# README's snippet there (about 1.5 min).
wheel-check: setup
	$(BIN)/python tests/packaging/check_wheel.py

# The documentation site into site/ (offline, about 10 s), then every public name documented.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	$(BIN)/python tests/packaging/check_api_docs.py site

bench: setup
	$(BIN)/python benchmarks/rotary.py
	$(BIN)/python benchmarks/mixers.py
	$(BIN)/python benchmarks/model.py

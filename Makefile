# The two commands: `make demo` and `make test`. Each sets up .venv from nothing (idempotent).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench venv clean

$(STAMP): pyproject.toml plugins/ehrprog-cehrbert/pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first and pinned: this machine has a local CPU wheel; a bare "torch" pulls a CUDA build.
	$(BIN)/pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e plugins/ehrprog-cehrbert
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m ehrprog.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check ehrprog tests benchmarks
	$(BIN)/ruff format --check ehrprog tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_data_layer.py
	$(BIN)/python benchmarks/bench_model.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache

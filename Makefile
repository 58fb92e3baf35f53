# The two commands: `make demo` and `make test`. Each sets itself up first. `make benchmark`
# runs the long tier the demo leaves out (ML-1M, CMC seed spread, cost scaling, torchrun).
SHELL := /bin/bash
VENV := .venv
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test ui benchmark clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/dagster definitions validate -m assets_defs.definitions
	$(VENV)/bin/dagster asset materialize -m assets_defs.definitions --select 'not tag:tier=full'
	$(VENV)/bin/python scripts/show_tables.py

benchmark: setup
	$(VENV)/bin/dagster asset materialize -m assets_defs.definitions --select 'tag:tier=full'
	$(VENV)/bin/python scripts/show_tables.py

test: setup
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

ui: setup
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000

clean:
	rm -rf $(VENV) .setup-stamp .dagster_home data/lancedb data/lab.duckdb data/chunks

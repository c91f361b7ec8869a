# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: demo test test-quick lint format bench rulegraph

# Reinstall only when the pins change.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --workflow-profile config/profiles/local
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --workflow-profile config/profiles/local --report results/report.html
	@cat results/summary.md

test: $(VENV)/.installed
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest

test-quick: $(VENV)/.installed
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -m "not slow" -x -q

lint: $(VENV)/.installed
	$(BIN)/ruff check scripts tests
	$(BIN)/snakefmt --check .
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --lint

format: $(VENV)/.installed
	$(BIN)/ruff check --fix scripts tests
	$(BIN)/ruff format scripts tests
	$(BIN)/snakefmt .

# Not part of `make test`: figures go to results/bench/ and BENCHMARKS.md.
# `make bench BENCH="records dag"` runs only those.
bench: $(VENV)/.installed
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python tests/bench/run.py $(BENCH)

rulegraph: $(VENV)/.installed
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --rulegraph mermaid-js

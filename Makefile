# The two commands of the quick start: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: demo test test-quick lint format bench rulegraph label-deps

# MediaPipe, without its dependencies (why: envs/tensorflow.yaml; the same pin there).
MEDIAPIPE := mediapipe==1.2.2

# Reinstall only when the pins change.
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps $(MEDIAPIPE)
	touch $@

# The demo's terminal: the jobs' progress lines and the run's account (one
# screen). Snakemake's own messages, a block per job, go to SNAKEMAKE_LOG; when
# a job fails, their end (the failed job's log) is printed.
SNAKEMAKE_LOG := logs/snakemake.log
SNAKEMAKE := PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --workflow-profile config/profiles/local

demo: $(VENV)/.installed
	@mkdir -p logs
	@echo "The demo runs every stage; Snakemake's messages go to $(SNAKEMAKE_LOG)."
	@$(SNAKEMAKE) 2> $(SNAKEMAKE_LOG) || { tail -n 40 $(SNAKEMAKE_LOG); exit 1; }
	@$(SNAKEMAKE) --report results/report.html 2>> $(SNAKEMAKE_LOG) || { tail -n 40 $(SNAKEMAKE_LOG); exit 1; }
	@echo "The report: results/report.html; the summary: results/summary.md"
	@echo "For the README's next commands, in each new shell: . .venv/bin/activate"

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

# The system libraries LabelImg's window (Qt's xcb platform plugin) needs on
# Debian/Ubuntu, as root; the list is tumbletrain.label.QT_PACKAGES. The GUI
# tests also need Xvfb (tests/label_display.sh installs it).
label-deps: $(VENV)/.installed
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends $$($(BIN)/python -c 'from tumbletrain.label import QT_PACKAGES; print(*QT_PACKAGES)')

# relops — two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RELOPS_HOME ?= $(CURDIR)/data/home
export DAGSTER_HOME := $(RELOPS_HOME)/dagster

# make test runs the suite on this many worker processes (pytest-xdist; 1 runs it in one process).
TEST_WORKERS ?= 2
XDIST = $(if $(filter-out 0 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder,)

.PHONY: demo test test-faults test-fast lint ui evidently-ui install bench clean-home

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/relops demo --home "$(RELOPS_HOME)"

test: $(STAMP)
	@bash scripts/ensure-postgres.sh
	$(BIN)/pytest -q $(XDIST) --durations=12 -m "not faults"

# The fault-injection suite (issue 14): 20+ random SIGKILLs of ingestion, follow-ups, rollbacks and
# alert deliveries, then nothing lost, signals recomputed, pointers and the event log agreeing, and a
# rollback within 10 s; about six minutes on 2 cores, so CI runs it after `make test`.
test-faults: $(STAMP)
	$(BIN)/pytest -q -s -m faults

# Everything but the tests marked slow (dagster dev, PostgreSQL, the wheel, the CLI's end-to-end
# flows, the benchmarks' smoke runs): about 3 minutes on 2 cores.
test-fast: $(STAMP)
	$(BIN)/pytest -q $(XDIST) -m "not slow and not faults"

# ruff over the tree; mypy over the domain logic, the Dagster wiring, the CLI and the demo.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy relops_pipeline

# dagster dev, and beside it `relops serve` (OTLP/HTTP on 127.0.0.1:4318; the reports at
# http://127.0.0.1:4318/reports/ and the release pages at /releases/, where the UI's links point), stopped with it.
ui: $(STAMP)
	$(BIN)/relops init --home "$(RELOPS_HOME)" >/dev/null
	$(BIN)/relops serve --home "$(RELOPS_HOME)" & serve=$$!; \
	trap 'kill $$serve 2>/dev/null; wait $$serve' EXIT; trap 'exit 130' INT TERM; \
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

# Evidently's own UI over the weekly drift snapshots (DO_NOT_TRACK: it sends usage telemetry otherwise).
evidently-ui: $(STAMP)
	DO_NOT_TRACK=1 $(BIN)/evidently ui --workspace "$(RELOPS_HOME)/reports/drift/evidently-workspace" --host 127.0.0.1 --port 8000

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean-home:
	rm -rf "$(RELOPS_HOME)"

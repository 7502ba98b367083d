# Everything runs from a project-local virtualenv that the targets create; nothing installed
# by hand is relied upon.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run run-nhn test lint unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m service.dev.demo

# The same, delivering through the local NHN-compatible SMS API (SENT/FAILED outcomes).
run-nhn: $(STAMP)
	FALLBACK_SINK=nhn $(BIN)/python -m service.dev.demo

lint: $(STAMP)
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy service tests bench

# The tests that need no broker: seconds, for the edit-test loop.
unit: $(STAMP)
	$(BIN)/pytest -q -m "not broker"

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/core_bench.py
	$(BIN)/python bench/service_bench.py
	$(BIN)/python bench/dedupe_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

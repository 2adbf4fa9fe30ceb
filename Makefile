# First two commands on a fresh machine: `make run` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: run test setup lint clean

setup: $(STAMP)

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

NATIVE := pyproject.toml setup.py $(wildcard src/cstvault/binding/*.c src/cstvault/binding/*.h)

$(STAMP): $(BIN)/python $(NATIVE)
	$(BIN)/python -m pip install -q -e .
	touch $@

$(DEVSTAMP): $(BIN)/python $(NATIVE)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP) $@

# Main job: round-trip every supported file of this repository and print a summary.
run: $(STAMP)
	$(BIN)/cstvault verify .

lint: $(DEVSTAMP)
	$(BIN)/ruff check src tests

test: $(DEVSTAMP)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV)

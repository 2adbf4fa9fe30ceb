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

# Main job: index this repository into a store (.cstvault), print its stats, the outline of
# one file and where one name is defined, then round-trip every file against tree-sitter.
run: $(STAMP)
	$(BIN)/cstvault index . --wait 60
	$(BIN)/cstvault stats
	$(BIN)/cstvault outline src/cstvault/tags.py
	$(BIN)/cstvault defs open
	$(BIN)/cstvault verify .

lint: $(DEVSTAMP)
	$(BIN)/ruff check src tests

test: $(DEVSTAMP)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV)

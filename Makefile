# The two commands the README starts with. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,nats,postgres]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/choreograph up

lint: $(STAMP)
	$(BIN)/ruff check src apps tests bench
	$(BIN)/ruff format --check src apps tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/bus.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The Shop suite. `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/pytest
export PYTHONPATH := $(CURDIR)

.PHONY: install up down run test test-unit test-contract test-chassis test-integration \
        test-e2e test-chaos test-deploy test-security bench lint declare status clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

up: install
	$(BIN)/python -m shared.stack up

down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m shared.stack down; fi

status: install
	$(BIN)/python -m shared.stack status

run: up
	$(BIN)/python -m shared.demo

test: install
	$(PYTEST) tests

test-unit: install
	$(PYTEST) tests -k "unit" -q

test-contract: install
	$(PYTEST) tests/contract

test-chassis: install
	$(PYTEST) tests/chassis

test-integration: install
	$(PYTEST) tests -k "integration"

test-e2e: install
	$(PYTEST) tests/e2e

test-chaos: install
	$(PYTEST) tests/chaos

test-deploy: install
	$(PYTEST) tests/deploy

test-security: install  # FUZZ_EXAMPLES=N (default 50 per entrypoint), RUNSLOW=1 for 500
	$(PYTEST) tests/security

bench: install
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .

declare: install
	$(BIN)/python -m shared.admin declare

clean: down
	rm -rf .run

# The Shop suite. `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/pytest
export PYTHONPATH := $(CURDIR)

.PHONY: install up down run test test-unit test-contract test-chassis test-integration \
        test-e2e test-chaos test-cluster soak-cluster test-deploy bench lint declare status clean

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

# The cluster tests (three RabbitMQ nodes, three mongod members, twelve service
# processes) are their own target: `make test-cluster`.
test: install
	$(PYTEST) tests --ignore=tests/cluster

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

test-cluster: install
	$(PYTEST) tests/cluster -s

# The soak: SOAK_ORDERS orders (default 10000) under rounds of kills on the cluster.
soak-cluster: install
	RUNSLOW=1 $(PYTEST) tests/cluster -s -k soak

test-deploy: install
	$(PYTEST) tests/deploy

bench: install
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .

declare: install
	$(BIN)/python -m shared.admin declare

clean: down
	rm -rf .run

# The Shop suite. `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/pytest
export PYTHONPATH := $(CURDIR)

.PHONY: install up down run test test-unit test-contract test-chassis test-integration \
        test-e2e test-chaos test-deploy test-image crds image bench lint declare status clean vendor-check vendor-update test-security test-cluster soak-cluster

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

up: install
	$(BIN)/python -m tools.stack up

down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m tools.stack down; fi

status: install
	$(BIN)/python -m tools.stack status

run: up
	$(BIN)/python -m tools.demo

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

# Failover (loopback cluster) and partitions (network namespaces: root and `ip`, else
# skipped with the reason); .ci/run runs it after `make test`.
test-cluster: install
	$(PYTEST) tests/cluster -s

# The soak: SOAK_ORDERS orders (default 10000) in rounds of SOAK_ROUND (500), each
# reconciled, under kills and partitions on the partitionable cluster.
soak-cluster: install
	RUNSLOW=1 $(PYTEST) tests/cluster -s -k soak

test-deploy: install
	$(PYTEST) tests/deploy

# Build the image (buildah, no Docker engine) and run every service from it:
# minutes, so outside `make test` (tests/deploy/test_image.py).
test-image: install
	RUN_IMAGE_TESTS=1 $(PYTEST) tests/deploy/test_image.py

# The image from the Dockerfile (IMAGE=..., BASE_IMAGE=...): deploy/tools/image.sh.
image: install
	deploy/tools/image.sh

# The operators' released CRDs at the pinned tags into .run/crds, which
# tests/deploy validates the custom resources against (or SHOP_CRDS_DIR).
crds:
	deploy/tools/crds.sh

test-security: install  # FUZZ_EXAMPLES=N (default 50 per entrypoint), RUNSLOW=1 for 500
	$(PYTEST) tests/security

bench: install
	$(BIN)/python -m bench

# The dashboard's vendored chart library: re-fetch the pinned version from npm, check its hashes.
vendor-check:
	bash services/analytics/static/vendor/chartjs/fetch.sh

vendor-update:
	bash services/analytics/static/vendor/chartjs/fetch.sh --update

lint: install
	$(BIN)/ruff check .

declare: install
	$(BIN)/python -m tools.admin declare

clean: down
	rm -rf .run

"""Fixtures for the cluster tests: a three-member mongod replica set and a
three-node RabbitMQ cluster (private nodes on loopback ports), and the six
services with two replicas each, connected to every node and member. One stack
per module; each test seeds its own world under a fresh tag.

RUNSLOW=1 runs the soak (SOAK_ORDERS orders, default 10000)."""
from __future__ import annotations

import os

import pytest

from tests.chaos.harness import Infra, Shop, log, write_summary
from tools import devstack


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RUNSLOW", "") not in ("", "0"):
        return
    skip = pytest.mark.skip(reason="soak: run with RUNSLOW=1")
    for item in items:
        if "slow" in item.keywords and "tests/cluster" in str(item.fspath):
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    # one table of every reconciliation of the session: accepted, completed, lost, duplicated
    write_summary(terminalreporter)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not devstack.PrivateRabbit.available():
        pytest.skip("rabbitmq-server is not installed (apt-get install rabbitmq-server): no cluster")
    infra = Infra.start(tmp_path_factory.mktemp("cluster-infra"), cluster=True)
    log(f"cluster: mongo {infra.mongo_uri}, broker {infra.amqp_uri}")
    yield infra
    infra.stop()


@pytest.fixture(scope="module")
def shop(cluster, tmp_path_factory):
    shop = Shop.start(cluster, tmp_path_factory.mktemp("cluster-logs"), replicas=2)
    yield shop
    shop.stop()


# The same world and KPI baseline as the single-node crash tests, on this module's shop.
from tests.chaos.conftest import kpis_before, world  # noqa: E402,F401

"""Fixtures for the crash tests: one private infrastructure (mongod and, when the
machine has `rabbitmq-server`, a private RabbitMQ node) and one running stack of
the six services per test module; each test seeds its own world under a fresh tag.

`--runslow` (or RUNSLOW=1) runs the long soak variants marked `slow`."""
from __future__ import annotations

import os

import pytest

from tests.chaos.harness import Infra, Shop, kpis, log, seed, write_summary


def pytest_addoption(parser):
    # Registered when pytest starts from this folder (pytest tests/chaos); from the
    # repository root use RUNSLOW=1.
    try:
        parser.addoption("--runslow", action="store_true", default=False,
                         help="run the long crash-test soak variants")
    except ValueError:
        pass  # another conftest registered it


def runslow(config) -> bool:
    try:
        if config.getoption("--runslow"):
            return True
    except ValueError:
        pass
    return os.environ.get("RUNSLOW", "") not in ("", "0")


def pytest_terminal_summary(terminalreporter):
    # one table of every reconciliation of the session: accepted, completed, lost, duplicated
    write_summary(terminalreporter)


def pytest_collection_modifyitems(config, items):
    if runslow(config):
        return
    skip = pytest.mark.skip(reason="soak variant: run with --runslow or RUNSLOW=1")
    for item in items:
        if "slow" in item.keywords and "tests/chaos" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="module")
def infra(tmp_path_factory, base_amqp_uri):
    infra = Infra.start(tmp_path_factory.mktemp("chaos-infra"), shared_amqp_uri=base_amqp_uri)
    log(f"infra: mongod {infra.mongo_uri}, broker {'private node' if infra.rabbit else 'shared vhost'}")
    yield infra
    infra.stop()


@pytest.fixture(scope="module")
def shop(infra, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("chaos-logs")
    shop = Shop.start(infra, workdir)
    yield shop
    shop.stop()


@pytest.fixture
def world(shop):
    shop.wait_all_ready()
    return seed(shop)


@pytest.fixture
def kpis_before(shop, world):
    return kpis(shop)

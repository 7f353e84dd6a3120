"""The whole suite, started once per module: the six services as in-process nameko containers
on the session's real mongod and a private RabbitMQ virtual host, plus one RPC client."""
from __future__ import annotations

import uuid

import pytest

from tests.support.suite import InProcessSuite
from tools import devstack
from tools.client import connect

# Business settings for the flows. Quiet hours are off so a campaign sends whatever the clock
# says; expiry is long so no order expires under a slow machine; the order timer stays on
# (payment retries and refund recovery as in production).
EXTRA = {
    "order": {"expiry_seconds": 3600, "timers_enabled": 1},
    "marketing": {"MARKETING_QUIET_HOURS": "", "MARKETING_FREQUENCY_CAP": "50"},
    "fulfillment": {"dispatch_sla_hours": 48},
}


@pytest.fixture(scope="module")
def e2e_amqp_uri(amqp_uri, base_amqp_uri):
    """A virtual host of this module on the session's broker. The six services declare every
    `evt--<service>` queue, and events published while they stop stay there: on the session's
    vhost they would reach the single-service tests that run afterwards with the same queue
    names. Depends on `amqp_uri` so the broker check and session setup run as usual."""
    vhost = f"shop-e2e-{uuid.uuid4().hex[:10]}"
    devstack.create_vhost(vhost)
    yield devstack.with_vhost(base_amqp_uri, vhost)
    devstack.delete_vhost(vhost)


@pytest.fixture(scope="module")
def suite(mongo_uri, e2e_amqp_uri):
    running = InProcessSuite(mongo_uri, e2e_amqp_uri, extra=EXTRA).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def shop(suite, e2e_amqp_uri):
    """One standalone RPC client for the module (generous timeout: the machine is shared)."""
    with connect(e2e_amqp_uri, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def warehouse(shop):
    return shop.fulfillment.create_warehouse({
        "code": "E2E-SH", "name": "E2E Shanghai", "region": "Shanghai",
        "address": "1 Warehouse Road", "priority": 10})

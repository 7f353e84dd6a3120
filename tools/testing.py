"""pytest fixtures on real infrastructure (loaded by tests/conftest.py).

- `mongo_uri`: MONGO_URI if set, else a private mongod on a free port in a
  temporary directory for the session.
- `amqp_uri`: a fresh virtual host on the broker at AMQP_URI for each test
  module, deleted afterwards, so neither runs nor modules see each other's
  messages (a queue left with another module's events would leak into it).
- `settings_for(service, **overrides)`: Settings pointing at both, with a
  unique database and a free HTTP port.
- `start_service(cls, **overrides)`: runs a service class in a nameko
  container in this process; stopped at teardown.
- `rpc`: a standalone client on the test virtual host.

A test run that seems stuck can be asked where it is: `kill -USR1 <pid>`
writes every green thread's stack to `$TMPDIR/green-threads-<pid>.txt`
(shared/green.py; a blocked `container.stop()` waits in a green thread, which
no thread dump shows).
"""
from __future__ import annotations

import dataclasses
import os
import uuid

import pytest

from shared.config import Settings
from tools import devstack


def pytest_configure(config):
    from shared.green import dump_on_signal

    dump_on_signal()


def wait_for(check, timeout: float = 15, interval: float = 0.05, what: str = "condition"):
    """Poll `check` until it returns something truthy; fail the test on timeout."""
    import eventlet

    deadline = eventlet.hubs.get_hub().clock() + timeout
    while True:
        result = check()
        if result:
            return result
        if eventlet.hubs.get_hub().clock() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        eventlet.sleep(interval)


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory):
    if os.environ.get("MONGO_URI"):
        yield os.environ["MONGO_URI"]
        return
    mongod = devstack.Mongod(tmp_path_factory.mktemp("mongo") / "db", devstack.free_port())
    mongod.start()
    yield mongod.uri
    mongod.stop()


@pytest.fixture(scope="session")
def base_amqp_uri():
    uri = os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
    if not devstack.broker_answers(uri):
        pytest.exit(f"no RabbitMQ broker answers at {uri}: start one (rabbitmq-server -detached) "
                    "or set AMQP_URI", returncode=3)
    return uri


@pytest.fixture(scope="module")
def amqp_uri(base_amqp_uri):
    vhost = f"shop-test-{uuid.uuid4().hex[:10]}"
    devstack.create_vhost(vhost)
    yield devstack.with_vhost(base_amqp_uri, vhost)
    devstack.delete_vhost(vhost)


@pytest.fixture
def settings_for(mongo_uri, amqp_uri):
    def make(service: str, **overrides) -> Settings:
        base = Settings.from_env(service)
        values = {"mongo_uri": mongo_uri, "amqp_uri": amqp_uri,
                  "database": f"test_{service}_{uuid.uuid4().hex[:8]}",
                  "http_port": devstack.free_port(), "outbox_sweep_interval": 0.5,
                  "outbox_sweep_grace": 1.0, "transient_backoff": 0.1}
        values.update(overrides)
        return dataclasses.replace(base, **values)

    return make


@pytest.fixture
def start_service(settings_for):
    from nameko.containers import ServiceContainer

    containers = []

    def start(cls, settings: Settings | None = None, **overrides):
        settings = settings or settings_for(cls.name, **overrides)
        container = ServiceContainer(cls, settings.nameko_config())
        container.start()
        containers.append(container)
        return container

    yield start
    for container in reversed(containers):
        try:
            container.stop()
        except Exception:
            container.kill()


@pytest.fixture
def rpc(amqp_uri):
    from tools.client import connect

    with connect(amqp_uri, timeout=15) as client:
        yield client


def store_of(container):
    """The pymongo Database of a running container's Store (for assertions)."""
    from shared.storage.store import Store

    for dependency in container.dependencies:
        if isinstance(dependency, Store):
            return dependency.db
    raise LookupError("the service has no Store")


def settings_of_container(container) -> Settings:
    return container.config["SHOP_SETTINGS"]


def publish_event(amqp_uri: str, envelope: dict) -> None:
    """Publish an envelope exactly as a producer's outbox relay would."""
    from nameko.amqp.publish import Publisher

    from shared.messaging.topology import event_exchange

    exchange = event_exchange(envelope["source"])
    Publisher(amqp_uri, use_confirms=True, mandatory=True).publish(
        envelope, exchange=exchange, routing_key=envelope["event_type"], declare=[exchange],
        extra_headers={"nameko.correlation_id": envelope.get("correlation_id") or ""})


def make_envelope(source: str, event_type: str, data: dict, **fields) -> dict:
    """A valid envelope for `data` (validated against the event's schema)."""
    from shared.messaging.outbox import build_envelope

    envelope = build_envelope(source, event_type, data)
    envelope.update(fields)
    return envelope

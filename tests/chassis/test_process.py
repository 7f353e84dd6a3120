"""The service process: `python -m shared.run`, its probes, graceful SIGTERM,
and the idempotent `declare` command."""
import os
import signal
import subprocess
import sys
import uuid

import requests

from tests.chassis.test_chassis_integration import order_placed
from tools import devstack
from tools.admin import declare
from tools.testing import publish_event, wait_for


def test_declare_is_idempotent_and_creates_every_consumer_queue(amqp_uri):
    first = declare(amqp_uri, None, 50)
    second = declare(amqp_uri, None, 50)
    assert first == second == sorted(["analytics", "catalog", "fulfillment", "marketing", "member", "order"])
    from kombu import Connection

    with Connection(amqp_uri) as conn:
        for name in first:
            conn.default_channel.queue_declare(f"evt--{name}", passive=True)
            conn.default_channel.queue_declare(f"evt--{name}.dlq", passive=True)


def test_sigterm_lets_in_flight_work_finish(mongo_uri, amqp_uri, tmp_path):
    port = devstack.free_port()
    database = f"test_proc_{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, MONGO_URI=mongo_uri, AMQP_URI=amqp_uri, CATALOG_DB=database,
               CATALOG_HTTP_PORT=str(port), PYTHONPATH=os.getcwd())
    log = open(tmp_path / "service.log", "wb")
    command = [sys.executable, "-m", "shared.run", "catalog", "--module", "tests.chassis.example"]
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _ready(port), timeout=60, what="service ready")
        order = f"slow-{uuid.uuid4().hex[:8]}"
        publish_event(amqp_uri, order_placed(order, "p-slow"))
        from pymongo import MongoClient

        db = MongoClient(mongo_uri)[database]
        wait_for(lambda: _metric_in_flight(port), timeout=20, what="handler in flight")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert db.applied.count_documents({"order_id": order}) == 1
        text = (tmp_path / "service.log").read_text()
        assert '"event": "service_stopped"' in text
    finally:
        if proc.poll() is None:
            proc.kill()


def _ready(port):
    try:
        return requests.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _metric_in_flight(port):
    body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    for line in body.splitlines():
        if line.startswith('shop_requests_in_flight{kind="event"'):
            return float(line.rsplit(" ", 1)[1]) >= 1
    return False

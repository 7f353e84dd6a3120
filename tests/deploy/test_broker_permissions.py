"""Every rendered RabbitMQ user, created with exactly its rendered permissions
on a private virtual host of the real broker (and the rendered queue
policies applied as the operator would), does what its pod does: the init
container's command, the service's start-up, publishing each event it owns,
consuming its queue, serving and making RPC calls. RabbitMQ itself decides
what is allowed, not a model of its rules; and what another service owns is
refused."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections import Counter

import pytest
from amqp.exceptions import AccessRefused
from kombu import Connection, Exchange, Producer

from shared.config import Settings
from shared.errors import ShopError
from shared.events.base import load_all
from shared.messaging import topology
from shared.messaging.outbox import OutboxRelay, outgoing
from shared.messaging.publisher import OK
from tests.deploy.conftest import ROOT, SERVICES, by_name, of_kind
from tools import devstack
from tools.admin import declare, handled_by
from tools.testing import make_envelope, wait_for

# One harmless call each service serves (a typed NotFound is an answer too).
PROBES = {
    "catalog": ("get_product", ("no-such-product",)),
    "order": ("get_order", ("no-such-order",)),
    "fulfillment": ("get_shipment_for_order", ("no-such-order",)),
    "member": ("get_member", ("no-such-member",)),
    "marketing": ("list_promotions", ()),
    "analytics": ("get_kpis", ()),
}


def configmap(docs) -> dict:
    return next(d for d in of_kind(docs, "ConfigMap")
                if d["metadata"]["name"].startswith("shop-config"))["data"]


def password_hash(password: str) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


@pytest.fixture(scope="module")
def broker(rendered, base_amqp_uri):
    """The prod overlay's users, permissions and policies on a fresh vhost, in
    one definitions import (each rabbitmqctl call boots an Erlang VM)."""
    docs = rendered["prod"]
    suffix = uuid.uuid4().hex[:8]
    vhost = f"shop-perm-{suffix}"
    users = {u["metadata"]["name"] for u in of_kind(docs, "User")}
    definitions = {"vhosts": [{"name": vhost}], "users": [], "topic_permissions": [], "policies": [],
                   # guest too, only to look and to clean up
                   "permissions": [{"user": "guest", "vhost": vhost,
                                    "configure": ".*", "write": ".*", "read": ".*"}]}
    for policy in of_kind(docs, "Policy"):
        spec = policy["spec"]
        definitions["policies"].append({"vhost": vhost, "name": spec["name"], "pattern": spec["pattern"],
                                        "apply-to": spec["applyTo"], "priority": spec["priority"],
                                        "definition": spec["definition"]})
    uris, logins = {}, {}
    for permission in of_kind(docs, "Permission"):
        spec = permission["spec"]
        name = spec["userReference"]["name"]
        assert name in users and spec["vhost"] == configmap(docs)["AMQP_VHOST"]
        login, password = f"{name}-{suffix}", secrets.token_hex(16)
        logins[name] = login
        definitions["users"].append({"name": login, "password_hash": password_hash(password),
                                     "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": []})
        rules = spec["permissions"]
        definitions["permissions"].append({"user": login, "vhost": vhost, "configure": rules["configure"],
                                           "write": rules["write"], "read": rules["read"]})
        uris[name.removeprefix("shop-")] = devstack.with_vhost(
            base_amqp_uri.replace("guest:guest@", f"{login}:{password}@"), vhost)
    for topic in of_kind(docs, "TopicPermission"):
        t = topic["spec"]
        definitions["topic_permissions"].append({"user": logins[t["userReference"]["name"]], "vhost": vhost,
                                                 **t["permissions"]})
    assert set(uris) == set(SERVICES)
    try:
        # From stdin: Debian's rabbitmqctl runs as the rabbitmq user, who cannot read pytest's tmp.
        done = subprocess.run(["rabbitmqctl", "import_definitions", "--format", "json"],
                              input=json.dumps(definitions), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        # The import finishes in the background: wait until every user can log in.
        wait_for(lambda: all(devstack.broker_answers(uri) for uri in uris.values()), timeout=60,
                 what="the imported broker users")
        yield {"uris": uris, "guest": devstack.with_vhost(base_amqp_uri, vhost),
               "delivery_limit": int(configmap(docs)["EVENT_DELIVERY_LIMIT"])}
    finally:
        cleanup = [subprocess.Popen(["rabbitmqctl", "delete_user", login], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL) for login in logins.values()]
        cleanup.append(subprocess.Popen(["rabbitmqctl", "delete_vhost", vhost], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        for proc in cleanup:
            proc.wait(timeout=120)


def refused(action) -> bool:
    try:
        action()
    except AccessRefused:
        return True
    return False


def consumed_by(service: str) -> set[tuple[str, str]]:
    return {(s.source, s.event_type) for s in topology.broker_events() if service in s.consumers}


def test_the_init_container_runs_as_each_user(rendered, broker):
    deployments = by_name(rendered["prod"], "Deployment")
    runs = {}
    for service in SERVICES:
        init = deployments[service]["spec"]["template"]["spec"]["initContainers"][0]
        assert init["command"][0] == "python"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
               "AMQP_URI": broker["uris"][service], "EVENT_DELIVERY_LIMIT": str(broker["delivery_limit"])}
        # All at once, as the pods of a fresh install start.
        runs[service] = subprocess.Popen([sys.executable, *init["command"][1:]], cwd=ROOT, env=env,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for service, run in runs.items():
        _, stderr = run.communicate(timeout=180)
        assert run.returncode == 0, f"{service}: {stderr[-2000:]}"
    for service in SERVICES:  # every pod start runs it again: idempotent
        assert declare(broker["uris"][service], [service], broker["delivery_limit"]) == [service]
    with Connection(broker["guest"]) as conn:
        assert topology.missing_queues(conn, [topology.service_queue_name(s) for s in SERVICES]
                                       + [topology.dead_letter_queue_name(s) for s in SERVICES]) == set()


def test_each_producer_sees_its_consumers_and_publishes_every_event_it_owns(broker):
    examples = load_all()
    for source in SERVICES:
        uri = broker["uris"][source]
        expected = topology.expected_consumer_queues(source)
        with Connection(uri) as conn:
            assert topology.missing_queues(conn, set().union(*expected.values())) == set(), source
        # The outbox relay's own publisher (pipelined confirms, mandatory): each is confirmed.
        relay = OutboxRelay(None, source, uri)
        for event_type, queues in sorted(expected.items()):
            if not queues:
                continue
            envelope = make_envelope(source, event_type, examples[(source, event_type)].example)
            outcome = relay.publisher.publish_window([outgoing(envelope)])
            assert outcome == {envelope["event_id"]: OK}, (source, event_type)
        relay.publisher.close()


def test_a_producer_cannot_publish_as_another_service(broker):
    for service in SERVICES:
        other = SERVICES[(SERVICES.index(service) + 1) % len(SERVICES)]
        with Connection(broker["uris"][service], transport_options={"confirm_publish": True}) as conn:
            producer = Producer(conn.channel())
            forged = Exchange(f"{other}.events")
            assert refused(lambda p=producer, e=forged: p.publish({"forged": True}, exchange=e,
                                                                  routing_key="order_placed",
                                                                  mandatory=True)), service


def test_each_consumer_receives_exactly_its_events_and_nobody_elses(broker):
    for service in SERVICES:
        with Connection(broker["uris"][service]) as conn:
            channel = conn.channel()
            received = Counter()
            while (message := channel.basic_get(topology.service_queue_name(service), no_ack=False)):
                body = json.loads(message.body)
                received[(body["source"], body["event_type"])] += 1
                channel.basic_ack(message.delivery_tag)
            assert set(received) == consumed_by(service) and set(received.values()) == {1}, service
            other = SERVICES[(SERVICES.index(service) + 1) % len(SERVICES)]
            for queue in (topology.service_queue_name(other), topology.dead_letter_queue_name(other),
                          f"rpc-{other}"):
                assert refused(lambda q=queue: conn.channel().basic_get(q, no_ack=True)), (service, queue)
            # Nor declare (or so delete) another service's queue.
            assert refused(lambda q=topology.service_queue_name(other): conn.channel().queue_declare(
                q, durable=True, auto_delete=False, arguments={"x-queue-type": "quorum"})), service


def caller_class(service: str, target: str):
    """A container named like the service's own (so its reply queue is
    `rpc.reply-<service>-<uuid>`, as in the pod) holding one RPC client."""
    from nameko.testing.services import dummy

    from shared.messaging.rpc import RpcClient

    method, args = PROBES[target]

    class Caller:
        name = service
        client = RpcClient(target, timeout=20)

        @dummy
        def call(self):
            try:
                return getattr(self.client, method)(*args)
            except ShopError as exc:  # a typed answer came back: the round trip worked
                return type(exc).__name__

    return Caller


def test_each_service_starts_consumes_serves_and_calls_as_its_user(broker, mongo_uri):
    from nameko.containers import ServiceContainer
    from nameko.testing.services import entrypoint_hook

    from shared.run import service_class
    from shared.service import readiness

    present = [s for s in SERVICES if (ROOT / "services" / s / "service.py").exists()]
    if not present:
        pytest.skip("no service code yet")
    containers = []

    def start(cls, service: str):
        settings = dataclasses.replace(
            Settings.from_env(service), amqp_uri=broker["uris"][service], mongo_uri=mongo_uri,
            database=f"test_perm_{service}_{uuid.uuid4().hex[:6]}", http_port=devstack.free_port(),
            delivery_limit=broker["delivery_limit"],
            topology_declare_all=False)  # TOPOLOGY_DECLARE=own, as the ConfigMap sets
        container = ServiceContainer(cls, settings.nameko_config())
        container.start()
        containers.append(container)
        return container

    try:
        services = {s: start(service_class(s), s) for s in present}
        for service, container in services.items():
            def ready(container=container):
                checks = readiness(container)
                return checks if all(checks.values()) else None

            checks = wait_for(ready, timeout=60, what=f"{service} ready as its own broker user")
            assert checks["broker"] and checks.get("consumer", True)
            # Every probe reuses the container's one broker connection.
            connection = container.shop_broker_check.connection
            assert readiness(container)["broker"] and container.shop_broker_check.connection is connection
            # The engine's repair loop re-declares while the service consumes.
            with Connection(broker["uris"][service]) as conn:
                topology.declare_service(conn, service, handled_by(service), broker["delivery_limit"])
        for service in present:
            target = present[(present.index(service) + 1) % len(present)]
            caller = start(caller_class(service, target), service)
            with entrypoint_hook(caller, "call") as call:
                answer = call()
            assert answer is not None, (service, target)
    finally:
        for container in reversed(containers):
            try:
                container.stop()
            except Exception:
                container.kill()

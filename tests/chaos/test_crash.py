"""Crash tests ("nothing lost"): the six services as real processes on a private
mongod and (when the machine has rabbitmq-server) a private RabbitMQ node; a
stream of orders with unique ids; a fault in the middle; drain; reconcile.

One stack per module (conftest.py); each test seeds its own products, members
and coupon, and reconciles only its own orders."""
from __future__ import annotations

import random
import time

import eventlet
import pytest

from tests.chaos.harness import (
    CONSUMERS,
    SERVICES,
    Driver,
    OrderStream,
    drain,
    log,
    reconcile,
    republish_shuffled,
    snapshot,
)


def test_kill_9_each_service_mid_stream_then_restart(shop, world, kpis_before):
    """For each of the six services in turn: orders flowing, SIGKILL it (no
    graceful shutdown: unacked messages go back, outbox rows stay pending,
    in-flight RPCs time out and are retried with the same idempotency key),
    restart it, go on."""
    per_service = 6
    stream = OrderStream(shop, world, count=per_service * len(SERVICES), workers=2, pause=0.1,
                         seed_value=1)
    with Driver(shop, world, stream.ledger):
        for index, name in enumerate(SERVICES):
            stream.start(per_service)
            stream.wait_placed(index * per_service + 2)
            shop.kill(name)
            log(f"killed {name} after {stream.placed} orders")
            eventlet.sleep(0.5)
            shop.restart(name)
            stream.wait()
        drain(shop, world, stream.ledger, timeout=150)
    report = reconcile(shop, world, stream, kpis_before, "kill -9 each service")
    assert report.accepted == stream.count and report.lost == 0 and report.duplicated == 0


def test_events_published_while_their_consumers_are_down(shop, world, kpis_before):
    """catalog, fulfillment, member and analytics stopped: orders are accepted
    (order prices from its read models) and their events wait in the consumers'
    durable queues; once the consumers are back the saga completes."""
    down = ["catalog", "fulfillment", "member", "analytics"]
    stream = OrderStream(shop, world, count=15, workers=2, seed_value=2)
    for name in down:
        shop.stop_service(name)
    try:
        stream.run()
        waiting = shop.queue_depths()
        log(f"with {down} down: queue depths {waiting}")
        assert all(waiting[f"evt--{name}"] for name in ("catalog", "analytics")), waiting
    finally:
        for name in down:
            shop.restart(name)
    with Driver(shop, world, stream.ledger):
        drain(shop, world, stream.ledger, timeout=120)
    report = reconcile(shop, world, stream, kpis_before, "consumers down")
    assert report.accepted == stream.count and report.lost == 0 and report.duplicated == 0


def test_every_event_delivered_twice_and_shuffled(shop, world, kpis_before):
    """While orders flow, every event the services publish is published a second
    time (same envelope and event id) in an order shuffled within windows; at
    rest, every event of the run is re-published once more, shuffled. Inboxes and
    forward-only state machines must absorb all of it: nothing changes, and each
    consumer suppressed every copy of each event it had applied (counted per
    consumer, so one consumer applying a duplicate cannot hide behind another)."""
    started = shop.db("order").command("serverStatus")["localTime"]
    stream = OrderStream(shop, world, count=20, workers=2, seed_value=3)
    copies = {"live": 0}
    running = {"on": True}

    def echo():
        since = started
        while running["on"]:
            eventlet.sleep(0.7)
            now = shop.db("order").command("serverStatus")["localTime"]
            try:
                copies["live"] += len(republish_shuffled(shop, window=15, seed_value=len(copies),
                                                         since=since, until=now))
            except Exception as exc:  # broker hiccup: those rows are re-sent at the end anyway
                log(f"echo round failed: {type(exc).__name__}")
            since = now

    echoer = eventlet.spawn(echo)
    with Driver(shop, world, stream.ledger):
        stream.run()
        drain(shop, world, stream.ledger, timeout=120)
    running["on"] = False
    echoer.wait()
    drain(shop, world, stream.ledger, timeout=60)
    before = snapshot(shop, world)
    suppressed_before = shop.duplicates()
    final = republish_shuffled(shop, window=25, seed_value=99, since=started)
    copies["final"] = len(final)
    eventlet.sleep(1)
    drain(shop, world, stream.ledger, timeout=120)
    after = snapshot(shop, world)
    log(f"re-published {copies} envelopes")
    assert after == before, "re-delivered events changed state"
    suppressed = shop.duplicates() - suppressed_before
    short = {}
    for consumer in CONSUMERS:
        # the copies of events this consumer had applied (its inbox holds them): each
        # one must have come back as a duplicate, not as a second application
        applied = {row["event_id"] for row in shop.db(consumer).inbox.find(
            {"consumer": consumer, "event_id": {"$in": [e["event_id"] for e in final]}}, {"event_id": 1})}
        if suppressed[consumer] < len(applied):
            short[consumer] = {"applied": len(applied), "suppressed": suppressed[consumer]}
        log(f"{consumer}: {len(applied)} re-delivered events it had applied, "
            f"{suppressed[consumer]} suppressed")
    assert not short, f"consumers that did not suppress every copy: {short}"
    report = reconcile(shop, world, stream, kpis_before, "every event twice, shuffled")
    assert report.accepted == stream.count and report.lost == 0 and report.duplicated == 0


@pytest.mark.parametrize("part, label, seed_value", [("mongod", "mongod restart", 4),
                                                     ("rabbitmq", "RabbitMQ restart", 5)])
def test_restart_infrastructure_mid_stream(shop, infra, world, kpis_before, part, label, seed_value):
    if part == "rabbitmq" and infra.rabbit is None:
        pytest.skip("no rabbitmq-server for a private node (the shared broker is never restarted)")
    restart = {"mongod": infra.restart_mongod, "rabbitmq": infra.restart_broker}[part]
    stream = OrderStream(shop, world, count=24, workers=2, pause=0.15, seed_value=seed_value)
    with Driver(shop, world, stream.ledger):
        stream.start()
        stream.wait_placed(8)
        started = time.monotonic()
        restart(down_seconds=1.0)
        log(f"{label} after {stream.placed} orders ({time.monotonic() - started:.1f}s)")
        stream.wait()
        shop.wait_all_ready()
        drain(shop, world, stream.ledger, timeout=150)
    report = reconcile(shop, world, stream, kpis_before, label)
    assert report.accepted == stream.count and report.lost == 0 and report.duplicated == 0


@pytest.mark.slow
def test_soak_random_kills(shop, world, kpis_before):
    """Soak: 200 orders while random services are killed and restarted."""
    rng = random.Random(7)
    stream = OrderStream(shop, world, count=200, workers=3, pause=0.05, seed_value=7)
    with Driver(shop, world, stream.ledger):
        stream.start()
        while not stream.done():
            eventlet.sleep(rng.uniform(1, 4))
            name = rng.choice(SERVICES)
            shop.kill(name)
            log(f"soak: killed {name} after {stream.placed} orders")
            shop.restart(name)
        stream.wait(timeout=900)
        drain(shop, world, stream.ledger, timeout=300)
    report = reconcile(shop, world, stream, kpis_before, "soak: random kills")
    assert report.accepted == stream.count and report.lost == 0 and report.duplicated == 0

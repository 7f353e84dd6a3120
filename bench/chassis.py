"""The chassis write path, measured through the API every service uses and
nothing below it: `with store.transaction() as tx: ...; tx.emit(...)` inside a
nameko worker, until the event is delivered to a consumer's queue. Whether the
relay publishes inside the request (today) or in the background (event engine
v2), the figure is the same kind: committed events per second, and delivered
events per second."""
from __future__ import annotations

import dataclasses
import time

import eventlet
from nameko.containers import ServiceContainer
from nameko.testing.services import dummy, entrypoint_hook
from pymongo import MongoClient

from bench import units
from bench.raw import amqp_connection
from shared.config import Settings
from shared.messaging.topology import service_queue_name
from shared.storage.store import Store
from tools import devstack

SOURCE = "catalog"      # a real producer, so the event passes its schema and has consumers
EVENT = "stock_adjusted"
WATCHED = "analytics"   # a consumer of stock_adjusted: its queue receives every event


class OutboxBench:
    """A stand-in producer: the real Store dependency under the name of the real service."""

    name = SOURCE
    store = Store()

    @dummy
    def write(self, start: int, count: int) -> None:
        for i in range(start, start + count):
            with self.store.transaction() as tx:
                # one state document per event: concurrent writers never conflict
                tx.db.stock.insert_one({"_id": f"p{i}", "on_hand": 1}, session=tx.session)
                tx.emit(EVENT, {"product_id": f"prd_bench{i % 50}", "delta": 1, "reason": "bench",
                                "on_hand": 1, "available": 1, "version": abs(i) + 1})


def _count_delivered(amqp_uri: str, expected: int, timeout: float) -> float | None:
    """Consume the watched queue until `expected` messages arrived; the time
    it happened (perf_counter), or None if they did not in time."""
    conn = amqp_connection(amqp_uri)
    channel = conn.channel()
    channel.basic_qos(0, 500, False)
    seen = 0

    def on_message(message):
        nonlocal seen
        seen += 1
        if seen % 100 == 0 or seen == expected:
            channel.basic_ack(message.delivery_tag, multiple=True)

    channel.basic_consume(service_queue_name(WATCHED), callback=on_message)
    deadline = time.monotonic() + timeout
    try:
        while seen < expected:
            if time.monotonic() > deadline:
                return None
            try:
                conn.drain_events(timeout=1)
            except TimeoutError:
                pass
        return time.perf_counter()
    finally:
        conn.close()


def outbox_path(mongo_uri: str, amqp_uri: str, events: int, writers: int,
                mongod_pid: int | None = None) -> dict:
    """Committed and delivered per second; with `mongod_pid`, also the CPU per event of this
    process (the writers, the relay, and the py-amqp counter) and of mongod."""
    settings = dataclasses.replace(Settings.from_env(SOURCE), mongo_uri=mongo_uri, amqp_uri=amqp_uri,
                                   database=f"bench_outbox_{writers}", http_port=devstack.free_port())
    container = ServiceContainer(OutboxBench, settings.nameko_config())
    container.start()
    try:
        # Warm up: connections, indexes and the queues exist before timing.
        with entrypoint_hook(container, "write") as write:
            write(-5, 5)
        _count_delivered(amqp_uri, 5, 30)
        share = events // writers
        delivered = eventlet.spawn(_count_delivered, amqp_uri, share * writers, 120)
        eventlet.sleep(0.2)  # the consumer is attached before the first publish

        def one_writer(index: int) -> None:
            with entrypoint_hook(container, "write", timeout=600) as write:
                write(index * share, share)

        started = time.perf_counter()
        cpu_before = time.process_time()
        mongod_before = units.process_cpu_s(mongod_pid) if mongod_pid else None
        pool = [eventlet.spawn(one_writer, i) for i in range(writers)]
        for thread in pool:
            thread.wait()
        committed_s = time.perf_counter() - started
        done_at = delivered.wait()
        cpu_s = time.process_time() - cpu_before
        mongod_s = units.process_cpu_s(mongod_pid) - mongod_before if mongod_pid else None
        client = MongoClient(mongo_uri)
        pending = client[settings.database].outbox.count_documents({"pending": True})
        client.drop_database(settings.database)
        client.close()
    finally:
        container.stop()
    total = share * writers
    result = {"events": total, "writers": writers,
              "committed_per_s": round(total / committed_s, 1),
              "left_pending": pending}
    if mongod_pid:
        result["cpu_ms_per_event"] = round(1000 * cpu_s / total, 2)
        result["mongod_cpu_ms_per_event"] = round(1000 * mongod_s / total, 2)
    if done_at is None:
        result["delivered_per_s"] = None
        result["delivered_note"] = "not every event reached the consumer queue within 120 s"
    else:
        result["delivered_per_s"] = round(total / (done_at - started), 1)
    return result

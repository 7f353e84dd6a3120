"""What one message costs in CPU on this machine when it goes through the chassis
and nothing else: a one-transaction event handler (inbox row, one write,
commit, ack) and an RPC call (guard, retries, metrics, logs, reply). Both run
in this process (a real nameko container with the real dependencies, against
the run's mongod and broker), so `cpu_ms` is this process's CPU time per
message: consumer side only for events; client and server together for RPC,
as in the saga where both ends are services. mongod's CPU is measured beside
it. Times the saga's per-order counts, they are the floor an order costs before
any business logic: the number `bench/README.md` compares the measured cost with."""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import amqp
import eventlet
from kombu import Connection
from nameko.containers import ServiceContainer
from pymongo import MongoClient

from bench.raw import amqp_connection
from shared.config import Settings
from shared.messaging.outbox import build_envelope
from shared.messaging.rpc import rpc
from shared.messaging.subscriptions import handles
from shared.messaging.topology import declare_service, event_exchange
from shared.security.guard import Int
from shared.service import ShopService
from shared.storage.store import Store
from tools import devstack
from tools.client import connect

SOURCE, EVENT = "catalog", "stock_adjusted"
BATCH_CONSUMERS = {"analytics"}  # services whose events arrive in @handles_batch


class UnitConsumer(ShopService):
    """One event, one transaction, one write: the least a saga step does."""

    name = "bench_consumer"
    store = Store()

    @handles(SOURCE, EVENT)
    def on_stock_adjusted(self, envelope):
        with self.store.transaction() as tx:
            tx.db.seen.update_one({"_id": envelope["data"]["product_id"]}, {"$inc": {"n": 1}},
                                  upsert=True, session=tx.session)


class UnitRpc(ShopService):
    name = "bench_rpc"

    @rpc(schema={"n": Int()})
    def echo(self, n):
        return {"n": n}


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _settings(service: str, mongo_uri: str, amqp_uri: str) -> Settings:
    return dataclasses.replace(Settings.from_env(service), mongo_uri=mongo_uri, amqp_uri=amqp_uri,
                               database=f"bench_{service}", http_port=devstack.free_port(),
                               log_level="WARNING")


def consume(mongo_uri: str, amqp_uri: str, mongod_pid: int, events: int) -> dict:
    """`events` stock_adjusted envelopes queued first, then consumed by a fresh container."""
    settings = _settings(UnitConsumer.name, mongo_uri, amqp_uri)
    with Connection(amqp_uri) as connection:
        declare_service(connection, UnitConsumer.name, {(SOURCE, EVENT)}, settings.delivery_limit)
    conn = amqp_connection(amqp_uri, confirm_publish=True)  # every event is queued before timing
    channel = conn.channel()
    for i in range(events):
        envelope = build_envelope(SOURCE, EVENT, {"product_id": f"prd_u{i}", "delta": 1,
                                                  "reason": "bench", "on_hand": 1, "available": 1,
                                                  "version": i + 1})
        channel.basic_publish(amqp.Message(json.dumps(envelope), content_type="application/json",
                                           delivery_mode=2),
                              exchange=event_exchange(SOURCE).name, routing_key=EVENT)
    conn.close()
    client = MongoClient(mongo_uri)
    inbox = client[settings.database].inbox
    container = ServiceContainer(UnitConsumer, settings.nameko_config())
    wall, cpu, mongod = time.perf_counter(), time.process_time(), process_cpu_s(mongod_pid)
    container.start()
    deadline = time.monotonic() + 300
    while inbox.count_documents({}) < events and time.monotonic() < deadline:
        eventlet.sleep(0.05)
    done = inbox.count_documents({})
    result = _per_message(done, wall, cpu, mongod, mongod_pid, "events")
    if done < events:  # the rate and the CPU then include the wait: not a unit cost
        result["incomplete"] = f"{events - done} of {events} events not applied within 300 s"
    container.stop()
    client.drop_database(settings.database)
    client.close()
    return result


def rpc_calls(mongo_uri: str, amqp_uri: str, mongod_pid: int, calls: int) -> dict:
    """`calls` back-to-back calls on one kept connection, after a warm-up."""
    settings = _settings(UnitRpc.name, mongo_uri, amqp_uri)
    container = ServiceContainer(UnitRpc, settings.nameko_config())
    container.start()
    try:
        with connect(amqp_uri, timeout=30) as proxy:
            for i in range(20):
                proxy.bench_rpc.echo(i)
            wall, cpu, mongod = time.perf_counter(), time.process_time(), process_cpu_s(mongod_pid)
            for i in range(calls):
                proxy.bench_rpc.echo(i)
            return _per_message(calls, wall, cpu, mongod, mongod_pid, "calls")
    finally:
        container.stop()


def _per_message(count: int, wall: float, cpu: float, mongod: float, mongod_pid: int, unit: str) -> dict:
    wall_s = time.perf_counter() - wall
    cpu_s = time.process_time() - cpu
    mongod_s = process_cpu_s(mongod_pid) - mongod
    return {unit: count, "per_s": round(count / wall_s, 1) if wall_s else None,
            "cpu_ms": round(1000 * cpu_s / count, 2) if count else None,
            "mongod_cpu_ms": round(1000 * mongod_s / count, 2) if count else None}


def floor(per_order: dict, units: dict) -> dict:
    """The CPU an order costs in chassis work alone (a lower bound: emitting and relaying the
    order's events, and every read and write beyond one per step, come on top), from this
    run's counts and unit costs, and what 2 cores could carry at that cost."""
    consumed = units["event_consumed"]
    consume_ms = consumed["cpu_ms"] + consumed["mongod_cpu_ms"]
    rpc_ms = units["rpc_call"]["cpu_ms"]
    # One by one: analytics folds its events in batches, at a fraction of this unit's cost.
    by_consumer = per_order.get("event_deliveries_by_consumer") or {}
    one_by_one = sum(n for service, n in by_consumer.items() if service not in BATCH_CONSUMERS) \
        if by_consumer else per_order["event_deliveries"]
    parts = {"one_by_one_deliveries": round(one_by_one, 2),
             "deliveries_ms": round(one_by_one * consume_ms, 1),
             "rpc_ms": round(per_order["rpc_calls"] * rpc_ms, 1)}
    total = sum(parts.values())
    measured = per_order.get("cpu_ms_services_and_mongod")
    return {**parts, "chassis_floor_ms": round(total, 1), "measured_ms": measured,
            "floor_orders_per_s_on_2_cores": round(2000 / total, 1) if total else None,
            "measured_orders_per_s_on_2_cores": round(2000 / measured, 1) if measured else None}

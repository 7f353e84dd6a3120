"""`python -m bench [--messages N] [--writes N]`: measures the raw broker and
raw store baselines and the chassis paths built on them, in the same run, on
the same machine, and prints one JSON document. Ratios, not absolute numbers,
are what to compare between runs."""
from __future__ import annotations

from shared.green import patch

patch()  # before every other import

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

from kombu import Connection, Exchange, Queue  # noqa: E402
from pymongo import MongoClient  # noqa: E402

from shared import devstack  # noqa: E402
from shared.outbox import OutboxRelay  # noqa: E402
from shared.store import Tx  # noqa: E402


def broker_baseline(amqp_uri: str, messages: int) -> dict:
    """Publish with confirms to a durable quorum queue, then consume with acks."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    exchange = Exchange(name, type="direct", durable=True)
    queue = Queue(name, exchange=exchange, routing_key=name, durable=True,
                  queue_arguments={"x-queue-type": "quorum"})
    body = {"event_id": "x" * 26,
            "data": {"order_id": "ord_x", "lines": [{"product_id": "p", "quantity": 1}]}}
    with Connection(amqp_uri, transport_options={"confirm_publish": True}) as conn:
        channel = conn.channel()
        queue(channel).declare()
        producer = conn.Producer(channel=channel, exchange=exchange, routing_key=name, serializer="json")
        started = time.perf_counter()
        for _ in range(messages):
            producer.publish(body, delivery_mode=2)
        publish_s = time.perf_counter() - started
        received = 0

        def on_message(_, message):
            nonlocal received
            received += 1
            message.ack()

        started = time.perf_counter()
        with conn.Consumer(queue, callbacks=[on_message], prefetch_count=100):
            while received < messages:
                conn.drain_events(timeout=10)
        consume_s = time.perf_counter() - started
        queue(channel).delete()
        exchange(channel).delete()
    return {"messages": messages, "publish_confirmed_per_s": round(messages / publish_s, 1),
            "consume_acked_per_s": round(messages / consume_s, 1)}


def store_baseline(mongo_uri: str, writes: int) -> dict:
    client = MongoClient(mongo_uri, w="majority")
    coll = client.bench[f"raw_{uuid.uuid4().hex[:6]}"]
    started = time.perf_counter()
    for i in range(writes):
        coll.insert_one({"i": i, "payload": "x" * 200})
    elapsed = time.perf_counter() - started
    coll.drop()
    return {"writes": writes, "majority_writes_per_s": round(writes / elapsed, 1)}


def outbox_path(mongo_uri: str, amqp_uri: str, events: int) -> dict:
    """The chassis write path: one transaction (state + outbox row), then the
    relay publishes with confirms and marks the row published."""
    client = MongoClient(mongo_uri, w="majority", tz_aware=True)
    db = client[f"bench_{uuid.uuid4().hex[:6]}"]
    relay = OutboxRelay(db, "catalog", amqp_uri)
    with Connection(amqp_uri) as conn:
        from shared.topology import consumers_of_source, declare_suite

        declare_suite(conn, consumers_of_source("catalog"))
    started = time.perf_counter()
    for i in range(events):
        with client.start_session() as session:
            with session.start_transaction():
                db.stock.update_one({"_id": f"p{i % 50}"}, {"$inc": {"on_hand": 1}}, upsert=True,
                                    session=session)
                tx = Tx(db, session, "catalog")
                tx.emit("stock_adjusted", {"product_id": f"p{i % 50}", "delta": 1, "reason": "bench",
                                           "on_hand": 1, "available": 1, "version": i + 1})
        relay.publish_all(tx.envelopes)
    elapsed = time.perf_counter() - started
    pending = relay.pending()
    client.drop_database(db.name)
    # Leave no benchmark events behind in the consumers' queues.
    with Connection(amqp_uri) as conn:
        for service in consumers_of_source("catalog"):
            conn.default_channel.queue_purge(f"evt--{service}")
    return {"events": events, "transactional_events_per_s": round(events / elapsed, 1),
            "left_pending": pending}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    base_amqp = os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
    vhost = f"shop-bench-{uuid.uuid4().hex[:8]}"
    devstack.create_vhost(vhost)
    amqp_uri = devstack.with_vhost(base_amqp, vhost)
    with tempfile.TemporaryDirectory() as tmp:
        mongod = devstack.Mongod(Path(tmp) / "db", devstack.free_port())
        mongod.start()
        try:
            broker = broker_baseline(amqp_uri, args.messages)
            store = store_baseline(mongod.uri, args.writes)
            outbox = outbox_path(mongod.uri, amqp_uri, args.events)
        finally:
            mongod.stop()
            devstack.delete_vhost(vhost)
    rate = outbox["transactional_events_per_s"]
    outbox["vs_raw_publish"] = round(rate / broker["publish_confirmed_per_s"], 3)
    outbox["vs_raw_majority_write"] = round(rate / store["majority_writes_per_s"], 3)
    print(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                      "raw_broker": broker, "raw_store": store, "chassis_outbox": outbox}, indent=2))


if __name__ == "__main__":
    main()

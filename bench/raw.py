"""The raw baselines: what the broker and mongod do on this machine with no
chassis in between, measured with the plainest clients (py-amqp, pymongo).
Every chassis and saga figure is divided by these."""
from __future__ import annotations

import time
import uuid
from urllib.parse import unquote, urlparse

import amqp
from pymongo import MongoClient
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

# About the size of a real envelope (order_placed with two lines is ~700 bytes).
BODY = b'{"event_id":"evt_' + b"x" * 26 + b'","data":{"order_id":"ord_x","lines":[' \
    + b'{"product_id":"prd_x","quantity":1,"unit_price":7900}' * 6 + b"]}}"


def amqp_connection(amqp_uri: str, confirm_publish: bool = False) -> amqp.Connection:
    parsed = urlparse(amqp_uri)
    vhost = unquote(parsed.path[1:]) if len(parsed.path) > 1 else "/"
    conn = amqp.Connection(host=f"{parsed.hostname}:{parsed.port or 5672}",
                           userid=unquote(parsed.username or "guest"),
                           password=unquote(parsed.password or "guest"),
                           virtual_host=vhost, confirm_publish=confirm_publish)
    conn.connect()
    return conn


def _quorum_queue(channel, name: str) -> None:
    channel.queue_declare(name, durable=True, auto_delete=False,
                          arguments={"x-queue-type": "quorum"})


def _publish_one_by_one(conn: amqp.Connection, queue: str, messages: int) -> float:
    """Each publish waits for its confirm before the next (what the relay does today)."""
    channel = conn.channel()
    channel.confirm_select()
    acked = 0

    def on_ack(delivery_tag, multiple):
        nonlocal acked
        acked = delivery_tag

    channel.events["basic_ack"].add(on_ack)
    started = time.perf_counter()
    for tag in range(1, messages + 1):
        channel.basic_publish(amqp.Message(BODY, delivery_mode=2), exchange="", routing_key=queue)
        while acked < tag:
            conn.drain_events(timeout=10)
    elapsed = time.perf_counter() - started
    channel.close()
    return elapsed


def _publish_pipelined(conn: amqp.Connection, queue: str, messages: int, window: int) -> tuple[float, int]:
    """Up to `window` unconfirmed messages in flight; acks (often `multiple=True`)
    are matched to delivery tags as they come. Returns (seconds, multiple acks seen)."""
    channel = conn.channel()
    channel.confirm_select()
    outstanding: set[int] = set()
    multiples = 0

    def on_ack(delivery_tag, multiple):
        nonlocal multiples
        if multiple:
            multiples += 1
            outstanding.difference_update([t for t in outstanding if t <= delivery_tag])
        else:
            outstanding.discard(delivery_tag)

    def on_nack(delivery_tag, multiple):
        raise RuntimeError(f"broker nacked delivery tag {delivery_tag} (multiple={multiple})")

    channel.events["basic_ack"].add(on_ack)
    channel.events["basic_nack"].add(on_nack)
    started = time.perf_counter()
    for tag in range(1, messages + 1):
        while len(outstanding) >= window:
            conn.drain_events(timeout=10)
        channel.basic_publish(amqp.Message(BODY, delivery_mode=2), exchange="", routing_key=queue)
        outstanding.add(tag)
    while outstanding:
        conn.drain_events(timeout=10)
    elapsed = time.perf_counter() - started
    channel.close()
    return elapsed, multiples


def _consume_acked(conn: amqp.Connection, queue: str, messages: int, prefetch: int,
                   ack_every: int) -> float:
    channel = conn.channel()
    channel.basic_qos(0, prefetch, False)
    received = 0
    last_tag = 0

    def on_message(message):
        nonlocal received, last_tag
        received += 1
        last_tag = message.delivery_tag
        if received % ack_every == 0:
            channel.basic_ack(last_tag, multiple=True)

    channel.basic_consume(queue, callback=on_message)
    started = time.perf_counter()
    while received < messages:
        conn.drain_events(timeout=10)
    channel.basic_ack(last_tag, multiple=True)
    elapsed = time.perf_counter() - started
    channel.close()
    return elapsed


def broker_baseline(amqp_uri: str, messages: int, window: int = 256, prefetch: int = 200,
                    ack_every: int = 50) -> dict:
    """Confirmed publishes to a durable quorum queue, one by one and pipelined,
    then an acked consume of everything published."""
    queue = f"bench-raw-{uuid.uuid4().hex[:8]}"
    conn = amqp_connection(amqp_uri)
    try:
        setup = conn.channel()
        _quorum_queue(setup, queue)
        one_by_one = max(messages // 5, 200)
        single_s = _publish_one_by_one(conn, queue, one_by_one)
        pipelined_s, multiples = _publish_pipelined(conn, queue, messages, window)
        consume_s = _consume_acked(conn, queue, one_by_one + messages, prefetch, ack_every)
        setup.queue_delete(queue)
        setup.close()
    finally:
        conn.close()
    return {
        "queue": "quorum, durable, persistent messages",
        "message_bytes": len(BODY),
        "publish_confirm_each": {"messages": one_by_one, "per_s": round(one_by_one / single_s, 1),
                                 "ms_per_message": round(single_s / one_by_one * 1000, 3)},
        "publish_confirm_pipelined": {"messages": messages, "window": window,
                                      "per_s": round(messages / pipelined_s, 1),
                                      "multiple_acks": multiples},
        "consume_acked": {"messages": one_by_one + messages, "prefetch": prefetch,
                          "ack_multiple_every": ack_every,
                          "per_s": round((one_by_one + messages) / consume_s, 1)},
    }


def store_baseline(mongo_uri: str, writes: int) -> dict:
    """Majority inserts one by one, then transactions of two majority inserts
    (what a command with its outbox row costs at the least)."""
    client = MongoClient(mongo_uri, w="majority")
    db = client[f"bench_raw_{uuid.uuid4().hex[:6]}"]
    try:
        payload = "x" * 600
        started = time.perf_counter()
        for i in range(writes):
            db.raw.insert_one({"i": i, "payload": payload})
        write_s = time.perf_counter() - started
        db.state.insert_one({"_id": "warm"})
        db.outbox.insert_one({"_id": "warm"})
        transactions = max(writes // 2, 100)
        started = time.perf_counter()
        for i in range(transactions):
            with client.start_session() as session:
                with session.start_transaction(read_concern=ReadConcern("snapshot"),
                                               write_concern=WriteConcern("majority")):
                    db.state.insert_one({"i": i, "payload": payload}, session=session)
                    db.outbox.insert_one({"i": i, "payload": payload}, session=session)
        tx_s = time.perf_counter() - started
    finally:
        client.drop_database(db.name)
        client.close()
    return {
        "majority_insert": {"writes": writes, "per_s": round(writes / write_s, 1),
                            "ms_per_write": round(write_s / writes * 1000, 3)},
        "two_insert_transaction": {"transactions": transactions, "per_s": round(transactions / tx_s, 1),
                                   "ms_per_transaction": round(tx_s / transactions * 1000, 3)},
    }

"""Operator commands for the broker topology and dead letters.

    python -m tools.admin declare [SERVICE ...]     idempotent; all consumers by default
    python -m tools.admin dlq list SERVICE [--limit N] [--json]
    python -m tools.admin dlq replay SERVICE [--limit N]
    (outbox list|retry: `shop outbox ...`, tools/cli.py)

Replay sends each dead-lettered message back to that service's own queue
only (not to its other consumers), then removes it from the dead-letter queue."""
from __future__ import annotations

import argparse
import json
import sys

from kombu import Connection, Exchange

from shared.config import Settings
from shared.messaging.topology import (
    dead_letter_queue_name,
    declare_service,
    declare_suite,
    service_queue_name,
)


def handled_by(service: str) -> set[tuple[str, str]]:
    """(source, event_type) of the service class's own handlers, when its code
    is here (the image): the init step then binds exactly what the service will."""
    from shared.messaging.subscriptions import EventHandlerEntrypoint

    try:
        from shared.run import service_class

        cls = service_class(service)
    except (ImportError, SystemExit):
        return set()
    return {(e.source, e.event_type) for attr in vars(cls).values()
            for e in getattr(attr, "nameko_entrypoints", ()) if isinstance(e, EventHandlerEntrypoint)}


def declare(amqp_uri: str, services: list[str] | None, delivery_limit: int) -> list[str]:
    """With services named: what each of them owns, as its own broker user may
    (a pod's init step). Without: the whole suite (a broker user allowed everything)."""
    with Connection(amqp_uri) as conn:
        if not services:
            return declare_suite(conn, None, delivery_limit)
        for service in services:
            declare_service(conn, service, handled_by(service), delivery_limit)
        return sorted(services)


def _describe(message) -> dict:
    try:
        body = message.payload if message.content_type else message.body
    except Exception:  # dead-lettered because it could not be decoded
        body = None
    headers = message.headers or {}
    deaths = headers.get("x-death") or [{}]
    return {
        "event_id": body.get("event_id") if isinstance(body, dict) else None,
        "event_type": body.get("event_type") if isinstance(body, dict) else None,
        "source": body.get("source") if isinstance(body, dict) else None,
        # Sent by the consumer with why (subscriptions.py), else by the broker's limit.
        "reason": headers.get("shop-dead-reason") or deaths[0].get("reason"),
        "error": headers.get("shop-dead-error"),
        "failures": headers.get("shop-dead-failures"),
        "deliveries": headers.get("x-delivery-count"),
    }


def list_dead_letters(amqp_uri: str, service: str, limit: int = 100) -> list[dict]:
    """Peek: read up to `limit` messages and leave them in the queue."""
    out = []
    with Connection(amqp_uri) as conn:
        channel = conn.channel()
        for _ in range(limit):
            message = channel.basic_get(dead_letter_queue_name(service), no_ack=False)
            if message is None:
                break
            decoded = channel.message_to_python(message)
            out.append(_describe(decoded))
        channel.close()  # unacknowledged messages go back to the queue
    return out


def replay_dead_letters(amqp_uri: str, service: str, limit: int = 1000) -> int:
    replayed = 0
    with Connection(amqp_uri, transport_options={"confirm_publish": True}) as conn:
        channel = conn.channel()
        producer = conn.Producer(channel=channel)
        for _ in range(limit):
            raw = channel.basic_get(dead_letter_queue_name(service), no_ack=False)
            if raw is None:
                break
            message = channel.message_to_python(raw)
            headers = {k: v for k, v in (message.headers or {}).items()
                       if not k.startswith(("x-", "shop-dead-"))}
            producer.publish(message.body, exchange=Exchange(""), routing_key=service_queue_name(service),
                             headers=headers, content_type=message.content_type,
                             content_encoding=message.content_encoding, mandatory=True,
                             delivery_mode=2)
            message.ack()
            replayed += 1
    return replayed


def dead_letter_depth(amqp_uri: str, service: str) -> int:
    with Connection(amqp_uri) as conn:
        _, count, _ = conn.default_channel.queue_declare(dead_letter_queue_name(service), passive=True)
        return count


def _service_db(service: str):
    """The service's own database, from the same environment the service reads."""
    from shared.storage.store import connect

    settings = Settings.from_env(service)
    return connect(settings.mongo_uri)[settings.database]


def list_outbox(service: str, state: str = "parked", limit: int = 50) -> list[dict]:
    from shared.messaging import outbox

    return outbox.list_rows(_service_db(service), state, limit)


def retry_outbox(service: str, event_ids: list[str] | None = None) -> int:
    """Parked rows become due now; the service's relay sweep publishes them."""
    from shared.messaging import outbox

    return outbox.retry_parked(_service_db(service), event_ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.admin", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_declare = sub.add_parser("declare", help="declare every event queue, binding and dead-letter queue")
    p_declare.add_argument("services", nargs="*")
    p_dlq = sub.add_parser("dlq", help="list or replay a service's dead-lettered events")
    p_dlq.add_argument("action", choices=["list", "replay"])
    p_dlq.add_argument("service")
    p_dlq.add_argument("--limit", type=int, default=100)
    p_dlq.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    settings = Settings.from_env("admin")
    if args.command == "declare":
        names = declare(settings.amqp_uri, args.services, settings.delivery_limit)
        print(json.dumps({"declared": names}))
        return 0
    if args.action == "list":
        rows = list_dead_letters(settings.amqp_uri, args.service, args.limit)
        if args.json:
            print(json.dumps(rows))
        else:
            print(f"{'event_id':<34} {'source':<12} {'event_type':<26} {'reason':<10} deliveries")
            for row in rows:
                print(f"{str(row['event_id']):<34} {str(row['source']):<12} "
                      f"{str(row['event_type']):<26} {str(row['reason']):<10} {row['deliveries']}")
            print(f"{len(rows)} message(s)")
        return 0
    count = replay_dead_letters(settings.amqp_uri, args.service, args.limit)
    print(json.dumps({"replayed": count, "service": args.service}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Broker topology: exchange and queue names, and their idempotent declaration.

One durable quorum queue per consuming service (`evt--<service>`), bound to
every event type the service handles on each source's nameko event exchange
(`<source>.events`, topic), with a delivery limit and a dead-letter exchange
that routes to `evt--<service>.dlq`. RPC queues are nameko's own (classic)."""
from __future__ import annotations

from collections.abc import Iterable

from amqp.exceptions import PreconditionFailed
from kombu import Connection, Exchange, Queue, binding
from nameko.standalone.events import get_event_exchange

from shared.events import TRACKING_SOURCE
from shared.events.base import load_all, subscriptions_of
from shared.logs import get_logger

log = get_logger(__name__)


def event_exchange(source: str) -> Exchange:
    # nameko's own declaration, so any `@event_handler(source, type)` outside
    # the suite can bind to the same exchange without a PRECONDITION_FAILED.
    return get_event_exchange(source, {})


def service_queue_name(service: str) -> str:
    return f"evt--{service}"


def dead_letter_exchange_name(service: str) -> str:
    return f"evt--{service}.dlx"


def dead_letter_queue_name(service: str) -> str:
    return f"evt--{service}.dlq"


def dead_letter_exchange(service: str) -> Exchange:
    return Exchange(dead_letter_exchange_name(service), type="fanout", durable=True)


def dead_letter_queue(service: str) -> Queue:
    return Queue(dead_letter_queue_name(service), exchange=dead_letter_exchange(service),
                 durable=True, queue_arguments={"x-queue-type": "quorum"})


def catalog_bindings(service: str) -> set[tuple[str, str]]:
    """(source, event_type) pairs the event catalog says `service` consumes."""
    return {(spec.source, spec.event_type) for spec in subscriptions_of(service)
            if spec.source != TRACKING_SOURCE}


def service_queue(service: str, bindings: Iterable[tuple[str, str]], delivery_limit: int) -> Queue:
    pairs = sorted(set(bindings))
    return Queue(
        service_queue_name(service),
        bindings=[binding(event_exchange(source), routing_key=event_type)
                  for source, event_type in pairs],
        durable=True,
        queue_arguments={
            "x-queue-type": "quorum",
            # A handler that keeps failing is dead-lettered after this many
            # deliveries instead of looping forever.
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": dead_letter_exchange_name(service),
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )


def declare_service(connection: Connection, service: str, handled: Iterable[tuple[str, str]] = (),
                    delivery_limit: int = 50) -> Queue:
    """Declare `service`'s queue, its bindings and its dead-letter queue."""
    channel = connection.default_channel
    dlq = dead_letter_queue(service)
    dlq(channel).declare()
    bindings = catalog_bindings(service) | set(handled)
    for source, _ in bindings:
        event_exchange(source)(channel).declare()
    queue = service_queue(service, bindings, delivery_limit)
    try:
        queue(channel).declare()
    except PreconditionFailed as exc:
        # The queue exists with other arguments (e.g. an older x-delivery-limit):
        # queue arguments cannot change in place. Keep consuming the existing
        # queue with every binding, and say how to move it to the new arguments.
        log.error("queue_arguments_differ", queue=queue.name, error=str(exc)[:300],
                  hint="drain it and delete it so the next start re-declares it, "
                       "or set the limit with a policy (deploy/k8s)")
        bound = queue(connection.channel())
        bound.queue_declare(passive=True)
        for item in queue.bindings:
            item.bind(bound)
    return queue


def broker_events():
    """Every catalog event that travels on the broker (tracking events arrive over HTTP)."""
    return [spec for spec in load_all().values() if spec.source != TRACKING_SOURCE]


def consuming_services() -> set[str]:
    return {consumer for spec in broker_events() for consumer in spec.consumers}


def consumers_of_source(source: str) -> set[str]:
    return {consumer for spec in broker_events() if spec.source == source
            for consumer in spec.consumers}


def declare_suite(connection: Connection, services: Iterable[str] | None = None,
                  delivery_limit: int = 50) -> list[str]:
    """Declare the queues of `services` (default: every consumer in the catalog)."""
    names = sorted(set(services) if services is not None else consuming_services())
    for name in names:
        declare_service(connection, name, delivery_limit=delivery_limit)
    for source in {spec.source for spec in broker_events()}:
        event_exchange(source)(connection.default_channel).declare()
    return names

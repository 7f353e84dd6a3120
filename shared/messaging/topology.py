"""Broker topology: exchange and queue names, and their idempotent declaration.

One durable quorum queue per consuming service (`evt--<service>`), bound to
every event type the service handles on each source's nameko event exchange
(`<source>.events`, topic), with a delivery limit and a dead-letter exchange
that routes to `evt--<service>.dlq`. RPC queues are nameko's own (classic,
mirrored to every node by a policy: RPC_QUEUE_MIRRORING).

Each service declares only what it owns (least privilege: its broker user
may touch nothing else, deploy/k8s); a producer never declares its
consumers' queues, it checks them passively (`missing_queues`)."""
from __future__ import annotations

import re
from collections.abc import Iterable

from amqp.exceptions import ChannelError, PreconditionFailed
from kombu import Connection, Exchange, Queue, binding
from nameko.standalone.events import get_event_exchange

from shared.events import TRACKING_SOURCE
from shared.events.base import load_all, subscriptions_of
from shared.observability.logs import get_logger

log = get_logger(__name__)

# The broker's delivery limit on every `evt--<service>` queue: only a far
# backstop (the application counts real handler failures); the Kubernetes
# queue policies and ConfigMap carry the same value (deploy/tools/generate.py).
DEFAULT_DELIVERY_LIMIT = 50

# nameko declares `rpc-<service>` and each caller's `rpc.reply-<service>-<uuid>` as
# classic durable queues, which live on one broker node: while that node is down such a
# queue is unavailable everywhere (declares and consumes fail with "home node down"), so
# RPC to the service, or a caller's replies, stall until it is back. A policy mirrors
# them to every node so a survivor takes over. The messages stay non-persistent
# (shared/messaging/rpc.py): a lost request or reply times out and is repeated with its
# request id, so a quorum queue's disk writes would buy nothing. Classic mirroring is
# deprecated and gone in RabbitMQ 4.0; moving there means declaring these queues as
# quorum queues instead. The same policy runs in the test clusters (tools/devstack.py)
# and in the Kubernetes manifests (deploy/tools/generate.py).
RPC_QUEUE_MIRRORING = {"ha-mode": "all", "ha-sync-mode": "automatic"}


def rpc_queues_pattern(service: str | None = None) -> str:
    """The policy pattern of one service's RPC request and reply queues (any service's
    when None); never an event queue."""
    name = re.escape(service) if service else r"[^.]+"
    return rf"^rpc(-{name}|\.reply-{name}-[0-9a-f-]+)$"


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


def service_queue(service: str, bindings: Iterable[tuple[str, str]],
                  delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> Queue:
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


def sources_consumed(service: str, handled: Iterable[tuple[str, str]] = ()) -> set[str]:
    """The sources whose `<source>.events` exchange `service` binds its queue to."""
    return {source for source, _ in catalog_bindings(service) | set(handled)}


def _declare_exchange(channel, exchange: Exchange) -> None:
    channel.exchange_declare(exchange=exchange.name, type=exchange.type, durable=exchange.durable,
                             auto_delete=bool(exchange.auto_delete), arguments=exchange.arguments or None)


def declare_own_exchange(connection: Connection, service: str) -> Exchange:
    """Declare `service`'s own event exchange (what a producer owns and publishes on)."""
    exchange = event_exchange(service)
    with connection.channel() as channel:
        _declare_exchange(channel, exchange)
    return exchange


def declare_service(connection: Connection, service: str, handled: Iterable[tuple[str, str]] = (),
                    delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> Queue:
    """Declare what `service` owns, and nothing of another service's: its own
    event exchange, its dead-letter exchange and queue, its event queue and the
    queue's bindings. Idempotent, on a channel of its own, so it is safe to call
    again at any time (a repair loop, a reconnect) while the service consumes;
    give it a connection of its own too (not the consumer's, whose socket
    another green thread is reading), e.g. `queue_consumer.connection`.

    The queue is declared only after every binding source exchange, and the
    bindings right after it, so a consumer queue that exists is (but for a
    moment) bound to everything it consumes: a producer that sees the queue
    (`missing_queues`) may publish to it. A source exchange is declared here
    too (the same arguments as its producer's, a no-op once it exists): a
    queue cannot be bound to an exchange that does not exist, and a consumer
    must start before its producers have ever run."""
    pairs = sorted(catalog_bindings(service) | set(handled))
    queue = service_queue(service, pairs, delivery_limit)
    dlx, dlq = dead_letter_exchange(service), dead_letter_queue(service)
    with connection.channel() as channel:
        _declare_exchange(channel, event_exchange(service))
        for source in sorted({source for source, _ in pairs} - {service}):
            _declare_exchange(channel, event_exchange(source))
        _declare_exchange(channel, dlx)
        channel.queue_declare(queue=dlq.name, durable=True, auto_delete=False,
                              arguments=dlq.queue_arguments)
        channel.queue_bind(queue=dlq.name, exchange=dlx.name, routing_key="")
        try:
            channel.queue_declare(queue=queue.name, durable=True, auto_delete=False,
                                  arguments=queue.queue_arguments)
        except PreconditionFailed as exc:
            # The queue exists with other arguments (an older x-delivery-limit, say):
            # arguments cannot change in place. Keep it and its bindings, and say how
            # to move it (the broker closed this channel: bind on a fresh one).
            log.error("queue_arguments_differ", queue=queue.name, error=str(exc)[:300],
                      hint="drain and delete the queue so the next start re-declares it, "
                           "or set the limit with a policy (deploy/k8s)")
            channel = connection.channel()
            channel.queue_declare(queue=queue.name, passive=True)
        for source, event_type in pairs:
            channel.queue_bind(queue=queue.name, exchange=event_exchange(source).name,
                               routing_key=event_type)
    return queue


def expected_consumer_queues(source: str) -> dict[str, set[str]]:
    """For each event `source` publishes, the queues the catalog says must
    receive it (`evt--<consumer>`); an event nobody consumes maps to an empty set."""
    return {spec.event_type: {service_queue_name(consumer) for consumer in spec.consumers}
            for spec in broker_events() if spec.source == source}


def missing_queues(connection: Connection, names: Iterable[str]) -> set[str]:
    """The queues among `names` that do not exist, checked passively (a passive
    declare needs no permission and never creates anything). Each check has
    its own channel: the broker closes the channel of a NOT_FOUND."""
    missing = set()
    for name in sorted(set(names)):
        channel = connection.channel()
        try:
            channel.queue_declare(queue=name, passive=True)
        except ChannelError as exc:
            if getattr(exc, "code", None) != 404:
                raise
            missing.add(name)
        finally:
            try:
                channel.close()
            except Exception:  # already closed by the broker's 404
                pass
    return missing


def broker_events():
    """Every catalog event that travels on the broker (tracking events arrive over HTTP)."""
    return [spec for spec in load_all().values() if spec.source != TRACKING_SOURCE]


def consuming_services() -> set[str]:
    return {consumer for spec in broker_events() for consumer in spec.consumers}


def consumers_of_source(source: str) -> set[str]:
    return {consumer for spec in broker_events() if spec.source == source
            for consumer in spec.consumers}


def declare_suite(connection: Connection, services: Iterable[str] | None = None,
                  delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> list[str]:
    """What each of `services` owns (default: every consumer in the catalog), and
    every source's exchange: for one broker user allowed everything (`make up`,
    tests); in Kubernetes each service declares its own part (its init step)."""
    names = sorted(set(services) if services is not None else consuming_services())
    for name in names:
        declare_service(connection, name, delivery_limit=delivery_limit)
    for source in sorted({spec.source for spec in broker_events()}):
        declare_own_exchange(connection, source)
    return names

"""Event subscriptions: one queue per consuming service, one dispatcher.

`@handles("order", "order_placed")` marks a service method as the handler of
that event. Every handler of a service shares the service's quorum queue
`evt--<service>`; the router reads the envelope's `source` and `event_type`
and runs the matching handler in a worker. Outcomes:
- handled (or a duplicate skipped by the inbox): acked;
- the handler raised: requeued; the queue's delivery limit dead-letters it;
- a malformed envelope: rejected straight to the dead-letter queue."""
from __future__ import annotations

from functools import partial

from eventlet.event import Event
from marshmallow import ValidationError
from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import Entrypoint, ProviderCollector, SharedExtension
from nameko.messaging import HeaderDecoder, QueueConsumer

from shared import metrics
from shared.config import settings_of
from shared.events.base import Envelope
from shared.inbox import DuplicateEvent
from shared.logs import get_logger
from shared.retry import BROKER_LINK_ERRORS, retrying
from shared.topology import dead_letter_queue_name, declare_service

log = get_logger(__name__)

DUPLICATE = "__duplicate_event__"


def _settle_safely(settle):
    def settle_or_log(self, message):
        try:
            settle(self, message)
        except BROKER_LINK_ERRORS as exc:
            log.warning("message_settle_lost", action=settle.__name__, error=type(exc).__name__)

    settle_or_log.shop_safe = True
    return settle_or_log


# nameko's QueueConsumer (behind every RPC entrypoint, RPC reply listener and event
# consumer of a container) catches only amqp's ConnectionError when it acks or
# requeues: a socket reset by a broker restart (ConnectionResetError) escaped the
# worker and killed the whole container. The message was not settled, so the
# broker redelivers it (the inbox, or the caller's idempotency key, absorbs it).
if not getattr(QueueConsumer.ack_message, "shop_safe", False):
    QueueConsumer.ack_message = _settle_safely(QueueConsumer.ack_message)
    QueueConsumer.requeue_message = _settle_safely(QueueConsumer.requeue_message)


class EventQueueConsumer(QueueConsumer):
    """nameko's QueueConsumer on its own connection, remembering whether it is
    consuming (for /health/ready)."""

    consuming = False

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        self.consuming = True
        super().on_consume_ready(connection, channel, consumers, **kwargs)

    def on_connection_error(self, exc, interval):
        self.consuming = False
        super().on_connection_error(exc, interval)

    def on_connection_revived(self):
        self.consuming = True


class EventRouter(SharedExtension, ProviderCollector):
    """Consumes `evt--<service>` and hands each message to its handler."""

    queue_consumer = EventQueueConsumer()

    def __init__(self):
        super().__init__()
        self.queue = None
        self._unregistering = set()
        self._unregistered = Event()

    @property
    def handled(self) -> set[tuple[str, str]]:
        return {(p.source, p.event_type) for p in self._providers}

    @property
    def consuming(self) -> bool:
        return bool(self.queue_consumer.consuming)

    def setup(self):
        if self.queue is not None:
            return
        self.settings = settings_of(self.container)
        self.service = self.container.service_name
        handled = {(e.source, e.event_type) for e in self.container.entrypoints
                   if isinstance(e, EventHandlerEntrypoint)}
        # Declared before consuming, with every binding the catalog lists,
        # so events published before this service ever ran are waiting.
        with self.queue_consumer.connection as connection:
            self.queue = declare_service(connection, self.service, handled,
                                         self.settings.delivery_limit)
        self.queue_consumer.register_provider(self)

    def start(self):
        self.container.spawn_managed_thread(self._watch_dead_letters, identifier="dlq_watch")

    def stop(self):
        if not self._providers_registered and self.queue is not None:
            self.queue_consumer.unregister_provider(self)
            self._unregistered.send(True)

    def unregister_provider(self, provider):
        self._unregistering.add(provider)
        if not (self._providers - self._unregistering) and not self._unregistered.ready():
            if self.queue is not None:
                self.queue_consumer.unregister_provider(self)
            self._unregistered.send(True)
        self._unregistered.wait()
        super().unregister_provider(provider)

    def handle_message(self, body, message):
        try:
            envelope = Envelope().load(body if isinstance(body, dict) else {})
            if not isinstance(body, dict):
                raise ValidationError({"_schema": ["The message body is not a JSON object."]})
        except ValidationError as exc:
            metrics.EVENTS_DEAD_LETTERED.labels(self.service, "malformed").inc()
            log.error("event_malformed_dead_lettered", fields=exc.messages,
                      routing_key=message.delivery_info.get("routing_key"))
            self._reject(message)
            return
        for provider in self._providers:
            if (provider.source, provider.event_type) == (envelope["source"], envelope["event_type"]):
                provider.handle_event(body, message)
                return
        metrics.EVENTS_CONSUMED.labels(self.service, envelope["event_type"], "unhandled").inc()
        log.warning("event_unhandled", event_type=envelope["event_type"], source=envelope["source"],
                    event_id=envelope["event_id"])
        self.queue_consumer.ack_message(message)

    def _reject(self, message):
        if message.channel.connection:
            try:
                message.reject(requeue=False)
            except BROKER_LINK_ERRORS as exc:
                log.warning("event_reject_lost", error=type(exc).__name__)

    def _watch_dead_letters(self):
        import eventlet

        while True:
            try:
                with self.queue_consumer.connection as connection:
                    _, count, _ = connection.default_channel.queue_declare(
                        dead_letter_queue_name(self.service), passive=True)
                metrics.DEAD_LETTER_DEPTH.labels(self.service).set(count)
            except Exception as exc:
                log.debug("dlq_depth_unavailable", error=type(exc).__name__)
            eventlet.sleep(15)


class EventHandlerEntrypoint(Entrypoint, HeaderDecoder):
    router = EventRouter()

    def __init__(self, source: str, event_type: str, **kwargs):
        self.source = source
        self.event_type = event_type
        super().__init__(**kwargs)

    def setup(self):
        self.router.register_provider(self)

    def stop(self):
        self.router.unregister_provider(self)

    def handle_event(self, envelope: dict, message) -> None:
        context_data = self.unpack_message_headers(message)
        if envelope.get("correlation_id"):
            context_data["correlation_id"] = envelope["correlation_id"]
        try:
            self.container.spawn_worker(self, (envelope,), {}, context_data=context_data,
                                        handle_result=partial(self.handle_result, message))
        except ContainerBeingKilled:
            self.router.queue_consumer.requeue_message(message)

    def handle_result(self, message, worker_ctx, result=None, exc_info=None):
        service = self.container.service_name
        if exc_info is None:
            outcome = "duplicate" if result == DUPLICATE else "ok"
            if outcome == "duplicate":
                metrics.EVENTS_DUPLICATE.labels(service, self.event_type).inc()
            metrics.EVENTS_CONSUMED.labels(service, self.event_type, outcome).inc()
            self.router.queue_consumer.ack_message(message)
        else:
            metrics.EVENTS_CONSUMED.labels(service, self.event_type, "error").inc()
            deliveries = (message.headers or {}).get("x-delivery-count", 0)
            log.error("event_handler_failed_requeued", event_type=self.event_type,
                      event_id=worker_ctx.args[0].get("event_id"), delivery_count=deliveries,
                      error=type(exc_info[1]).__name__)
            self.router.queue_consumer.requeue_message(message)
        return result, exc_info


def handles(source: str, event_type: str):
    """Decorate `on_<event_type>(self, envelope)` as the service's handler."""

    def decorate(fn):
        wrapped = retrying(_skip_duplicates(fn), kind="event")
        return EventHandlerEntrypoint.decorator(source, event_type)(wrapped)

    return decorate


def _skip_duplicates(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(self, envelope):
        try:
            return fn(self, envelope)
        except DuplicateEvent:
            return DUPLICATE

    return wrapper

"""Event subscriptions: one queue per consuming service, one dispatcher.

`@handles("order", "order_placed")` marks a service method as the handler of
that event; `@handles_batch(max_size=500)` marks one method that takes every
other event of the service's queue in batches. Every handler of a service
shares the service's quorum queue `evt--<service>`; the router reads the
envelope's `source` and `event_type` and runs the matching handler in a
worker. Outcomes:
- handled (or a duplicate skipped by the inbox): acked;
- the handler raised: the failure is counted per (consumer, event_id) in the
  service's database (`failures.py`), the message is requeued after a short
  pause, and after EVENT_MAX_FAILURES failures it is sent to the dead-letter
  queue with the reason and error; a crash or restart counts nothing;
- a malformed envelope, a body that cannot be decoded, or an event type the
  service has no handler for: straight to the dead-letter queue, with a reason
  (`shop-dead-reason` header: malformed, undecodable, unhandled, handler_failed).

The service's queue and bindings are declared at start-up and re-declared
every TOPOLOGY_CHECK_INTERVAL seconds (idempotent), which repairs a deleted
queue or binding; the counter `shop_topology_repairs_total` counts repairs. A
queue found deleted is re-created by the router's own consumer reconnecting
(kombu declares its queue and bindings), never under the old channel (routing.py
says why).

The router's queue consumer is watched (`consumers.py`): one the broker dropped
is found and reconnected; the router's batch buffer counts as "in hand"."""
from __future__ import annotations

import functools
from functools import partial

import eventlet
from eventlet.event import Event
from eventlet.semaphore import Semaphore
from marshmallow import ValidationError
from nameko.exceptions import ContainerBeingKilled
from nameko.extensions import Entrypoint, ProviderCollector, SharedExtension
from nameko.messaging import HeaderDecoder

from shared.config import settings_of
from shared.events.base import Envelope
from shared.messaging import failures
from shared.messaging.consumers import WatchedQueueConsumer
from shared.messaging.inbox import DuplicateEvent
from shared.messaging.keyed import HOT_KEYS
from shared.messaging.publisher import OK, ConfirmedPublisher, Outgoing
from shared.messaging.topology import (
    dead_letter_exchange_name,
    dead_letter_queue_name,
    declare_service,
    missing_queues,
    service_queue_name,
)
from shared.observability import metrics
from shared.observability.context import current_event
from shared.observability.logs import get_logger
from shared.retry import retrying
from shared.validation import Precompiled

log = get_logger(__name__)

DUPLICATE = "__duplicate_event__"
MALFORMED, UNDECODABLE, UNHANDLED, HANDLER_FAILED = "malformed", "undecodable", "unhandled", "handler_failed"
REQUEUE_PAUSE_MAX = 5.0
# Checked on every delivery: one schema, compiled once (building a marshmallow schema
# costs about 0.7 ms, measured in analytics; loading one costs more than the check);
# a body that passes is used as it came.
ENVELOPE = Precompiled(Envelope())


class EventQueueConsumer(WatchedQueueConsumer):
    """The watched queue consumer on a connection of its own, with the router's prefetch,
    handing bodies kombu cannot decode to the router instead of dropping them."""

    router = None

    @property
    def prefetch_count(self):
        return self.router.prefetch if self.router is not None else self.container.max_workers

    def get_consumers(self, consumer_cls, channel):
        consumers = super().get_consumers(consumer_cls, channel)
        for provider, consumer in self._consumers.items():
            consumer.on_decode_error = partial(provider.undecodable, self)
        return consumers

    def busy(self) -> bool:
        return super().busy() or bool(self.router is not None and self.router._buffer)


class EventRouter(SharedExtension, ProviderCollector):
    """Consumes `evt--<service>` and hands each message to its handler."""

    queue_consumer = EventQueueConsumer()

    def __init__(self):
        super().__init__()
        self.queue = None
        self._unregistering = set()
        self._leaving = False  # unregistering from the queue consumer (once)
        self._unregistered = Event()
        self._buffer: list = []
        self._flusher = None
        self._dead_letters = None
        self._dead_letter_lock = Semaphore()

    @property
    def consuming(self) -> bool:
        return bool(self.queue_consumer.consuming)

    @property
    def batch_provider(self):
        return next((p for p in self._providers if isinstance(p, BatchHandlerEntrypoint)), None)

    @property
    def prefetch(self) -> int:
        if self.settings.event_prefetch:
            return self.settings.event_prefetch
        batch = self.batch_provider
        return max(self.container.max_workers, 2 * batch.max_size if batch else 0)

    def setup(self):
        if self.queue is not None:
            return
        self.settings = settings_of(self.container)
        self.service = self.container.service_name
        self.handled = {(e.source, e.event_type) for e in self.container.entrypoints
                        if isinstance(e, EventHandlerEntrypoint)}
        # Declared before consuming, with every binding the catalog lists,
        # so events published before this service ever ran are waiting.
        with self.queue_consumer.connection as connection:
            self.queue = declare_service(connection, self.service, self.handled,
                                         self.settings.delivery_limit)
        self.queue_consumer.router = self
        self.queue_consumer.register_provider(self)

    def start(self):
        self.container.spawn_managed_thread(self._watch_dead_letters, identifier="dead_letter_watch")
        self.container.spawn_managed_thread(self._keep_declared, identifier="topology_check")

    def stop(self):
        if not self._providers_registered and self.queue is not None and not self._leaving:
            self._leaving = True
            self.queue_consumer.unregister_provider(self)
            self._unregistered.send(True)
        self._close_dead_letters()

    def kill(self):
        self._close_dead_letters()

    def unregister_provider(self, provider):
        self._unregistering.add(provider)
        if isinstance(provider, BatchHandlerEntrypoint):
            self._flush()
        # The last provider leaves the queue consumer, once. Marked before the wait: a
        # batch flush above can yield, and the other provider, finding everyone
        # unregistering and `_unregistered` not yet sent, would otherwise leave again.
        if not (self._providers - self._unregistering) and not self._leaving:
            self._leaving = True
            if self.queue is not None:
                self.queue_consumer.unregister_provider(self)
            self._unregistered.send(True)
        self._unregistered.wait()
        super().unregister_provider(provider)

    @property
    def db(self):
        from shared.storage.store import Store

        stores = [d for d in self.container.dependencies if isinstance(d, Store)]
        return stores[0].db if stores else None

    # -- dispatch -----------------------------------------------------------------------
    def handle_message(self, body, message):
        try:
            if not isinstance(body, dict):
                raise ValidationError({"_schema": ["The message body is not a JSON object."]})
            ENVELOPE.check(body)
            envelope = body
        except ValidationError as exc:
            log.error("event_malformed_dead_lettered", fields=exc.messages,
                      routing_key=message.delivery_info.get("routing_key"))
            self.dead_letter(message, MALFORMED, str(exc.messages)[:300])
            return
        for provider in self._providers:
            if isinstance(provider, EventHandlerEntrypoint) and \
                    (provider.source, provider.event_type) == (envelope["source"], envelope["event_type"]):
                provider.handle_event(body, message)
                return
        batch = self.batch_provider
        if batch is not None and batch not in self._unregistering:
            self._buffer.append((body, message))
            if len(self._buffer) >= batch.max_size:
                self._flush()
            elif self._flusher is None:
                self._flusher = eventlet.spawn_after(batch.max_wait, self._flush)
            return
        metrics.EVENTS_CONSUMED.labels(self.service, envelope["event_type"], UNHANDLED).inc()
        log.error("event_unhandled_dead_lettered", event_type=envelope["event_type"],
                  source=envelope["source"], event_id=envelope["event_id"])
        self.dead_letter(message, UNHANDLED, f"no handler for {envelope['source']}.{envelope['event_type']}")

    def _flush(self):
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        items, self._buffer = self._buffer, []
        batch = self.batch_provider
        if items and batch is not None:
            batch.handle_batch(items)
        elif items:  # the batch handler is gone (stopping): let another consumer have them
            for _, message in items:
                self.queue_consumer.requeue_message(message)

    def undecodable(self, queue_consumer, message, exc):
        log.error("event_undecodable_dead_lettered", error=type(exc).__name__,
                  content_type=message.content_type,
                  routing_key=(message.delivery_info or {}).get("routing_key"))
        self.dead_letter(message, UNDECODABLE, f"{type(exc).__name__}: {exc}"[:300])

    # -- failures and dead letters ------------------------------------------------------
    def failed(self, envelope: dict, message, exc: BaseException, event_type: str) -> None:
        """A handler failed on `envelope`: count it; dead-letter after the limit,
        else requeue after a pause (in a managed thread: never holds a worker)."""
        error = f"{type(exc).__name__}: {exc}"
        try:
            count = failures.record_failure(self.db, self.service, envelope["event_id"], error)
        except Exception as store_exc:  # the store is away: a failure we cannot count yet
            log.warning("event_failure_not_counted", error=type(store_exc).__name__)
            count = None
        limit = self.settings.event_max_failures
        log.error("event_handler_failed", event_type=event_type, event_id=envelope.get("event_id"),
                  failures=count, limit=limit, error=type(exc).__name__, message=str(exc)[:300])
        if count is not None and count >= limit:
            if self.dead_letter(message, HANDLER_FAILED, error[:300], failures=count):
                failures.mark_dead_lettered(self.db, self.service, envelope["event_id"])
            return
        pause = min(0.2 * (2 ** ((count or 1) - 1)), REQUEUE_PAUSE_MAX)

        def requeue_later():
            eventlet.sleep(pause)
            self.queue_consumer.requeue_message(message)

        self.container.spawn_managed_thread(requeue_later, identifier="event_requeue")

    def dead_letter(self, message, reason: str, error: str, failures: int | None = None) -> bool:
        """Publish the message to the dead-letter exchange with why, then ack it.
        If that publish is not confirmed the message is requeued instead."""
        headers = dict(message.headers or {})
        headers.update({"shop-dead-reason": reason, "shop-dead-error": error,
                        "shop-dead-routing-key": (message.delivery_info or {}).get("routing_key") or "",
                        "shop-dead-exchange": (message.delivery_info or {}).get("exchange") or ""})
        if failures is not None:
            headers["shop-dead-failures"] = failures
        raw = message.body if isinstance(message.body, (bytes, bytearray)) else str(message.body).encode()
        key = message.properties.get("message_id") or f"dl-{id(message)}"
        outgoing = Outgoing(key, dead_letter_exchange_name(self.service),
                            headers["shop-dead-routing-key"], bytes(raw), headers,
                            content_type=message.content_type or "application/octet-stream",
                            content_encoding=message.content_encoding or "binary")
        with self._dead_letter_lock:
            if self._dead_letters is None:
                self._dead_letters = ConfirmedPublisher(self.settings.amqp_uri,
                                                        heartbeat=self.settings.amqp_heartbeat,
                                                        confirm_timeout=self.settings.confirm_timeout)
            outcome = self._dead_letters.publish_window([outgoing])[key]
        if outcome != OK:
            log.error("dead_letter_publish_failed", reason=reason, outcome=outcome)
            self.queue_consumer.requeue_message(message)
            return False
        metrics.EVENTS_DEAD_LETTERED.labels(self.service, reason).inc()
        self.queue_consumer.ack_message(message)
        return True

    def _close_dead_letters(self):
        if self._dead_letters is not None:
            self._dead_letters.close()
            self._dead_letters = None

    # -- background checks --------------------------------------------------------------
    def _watch_dead_letters(self):
        """The dead-letter queue's depth, for `ShopDeadLetteredEvents`."""
        queue = dead_letter_queue_name(self.service)
        while True:
            eventlet.sleep(self.settings.consumer_check_interval)
            try:
                dead, _ = self.queue_consumer.counts([queue])[queue]
            except Exception as exc:
                log.debug("dead_letter_check_unavailable", error=type(exc).__name__)
                continue
            metrics.DEAD_LETTER_DEPTH.labels(self.service).set(dead)

    def _keep_declared(self):
        """Re-declare our queue and bindings (idempotent); a queue that had gone is a repair."""
        queue = service_queue_name(self.service)
        while True:
            eventlet.sleep(self.settings.topology_check_interval)
            try:
                with self.queue_consumer.connection as connection:
                    if missing_queues(connection, [queue]):
                        self._recreate_by_reconnecting(queue)
                    declare_service(connection, self.service, self.handled, self.settings.delivery_limit)
                metrics.TOPOLOGY_MISSING.labels(self.service, queue).set(0)
            except Exception as exc:
                log.warning("topology_check_failed", error=type(exc).__name__)

    def _recreate_by_reconnecting(self, queue: str) -> None:
        """Our queue is gone: drop the consuming connection and let the consumer's
        reconnect declare the queue (with its bindings). Declaring it under the old
        channel could leave that channel consuming the new queue without delivering."""
        metrics.TOPOLOGY_MISSING.labels(self.service, queue).set(1)
        metrics.TOPOLOGY_REPAIRS.labels(self.service, queue).inc()
        log.error("own_queue_missing", queue=queue)
        self.queue_consumer.reconnect()
        with eventlet.Timeout(self.settings.topology_check_interval, False):
            while not self.queue_consumer.consuming:
                eventlet.sleep(0.05)


class RoutedEntrypoint(Entrypoint, HeaderDecoder):
    """An entrypoint fed by the service's EventRouter."""

    router = EventRouter()

    def setup(self):
        self.router.register_provider(self)

    def stop(self):
        self.router.unregister_provider(self)

    def context_of(self, envelope: dict, message) -> dict:
        """nameko's context headers, with the envelope's correlation id."""
        context_data = self.unpack_message_headers(message)
        if envelope.get("correlation_id"):
            context_data["correlation_id"] = envelope["correlation_id"]
        return context_data


class EventHandlerEntrypoint(RoutedEntrypoint):
    def __init__(self, source: str, event_type: str, steps: bool = False, **kwargs):
        self.source = source
        self.event_type = event_type
        self.multi_step = steps
        super().__init__(**kwargs)

    def handle_event(self, envelope: dict, message) -> None:
        try:
            self.container.spawn_worker(self, (envelope,), {},
                                        context_data=self.context_of(envelope, message),
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
            self.router.failed(worker_ctx.args[0], message, exc_info[1], self.event_type)
        return result, exc_info


class BatchHandlerEntrypoint(RoutedEntrypoint):
    """Takes up to `max_size` received messages at once (waiting at most
    `max_wait` seconds for a batch to fill) in one worker. A batch that fails
    is split: each of its messages runs alone, so only a poison message is
    counted as failing."""

    def __init__(self, max_size: int = 500, max_wait: float = 0.05, **kwargs):
        self.max_size = max_size
        self.max_wait = max_wait
        super().__init__(**kwargs)

    def handle_batch(self, items: list) -> None:
        envelopes = [body for body, _ in items]
        messages = [message for _, message in items]
        context_data = self.context_of(envelopes[0], messages[0])
        try:
            self.container.spawn_worker(self, (envelopes,), {}, context_data=context_data,
                                        handle_result=partial(self.handle_result, items))
        except ContainerBeingKilled:
            for message in messages:
                self.router.queue_consumer.requeue_message(message)

    def handle_result(self, items, worker_ctx, result=None, exc_info=None):
        service = self.container.service_name
        if exc_info is None:
            handling = current_event.get()  # still the worker's: teardown comes after
            fresh = set(handling.get("fresh_ids") or ()) if handling and "fresh_ids" in handling else None
            for body, message in items:
                event_type = body.get("event_type", "?")
                if fresh is not None and body.get("event_id") not in fresh:
                    metrics.EVENTS_DUPLICATE.labels(service, event_type).inc()
                    metrics.EVENTS_CONSUMED.labels(service, event_type, "duplicate").inc()
                else:  # applied now (a second copy in the same batch is a duplicate)
                    if fresh is not None:
                        fresh.discard(body.get("event_id"))
                    metrics.EVENTS_CONSUMED.labels(service, event_type, "ok").inc()
                self.router.queue_consumer.ack_message(message)
        elif len(items) > 1:
            log.warning("event_batch_failed_split", size=len(items), error=type(exc_info[1]).__name__)

            def one_by_one():
                for item in items:
                    self.handle_batch([item])

            self.container.spawn_managed_thread(one_by_one, identifier="event_batch_split")
        else:
            body, message = items[0]
            metrics.EVENTS_CONSUMED.labels(service, body.get("event_type", "?"), "error").inc()
            self.router.failed(body, message, exc_info[1], body.get("event_type", "?"))
        return result, exc_info


def handles(source: str, event_type: str, steps: bool = False, one_at_a_time=None):
    """Decorate `on_<event_type>(self, envelope)` as the service's handler.
    `steps=True`: the handler opens several transactions, each keyed in the inbox.
    `one_at_a_time=lambda data: [...]`: the keys of the hot documents the handler writes;
    handlers sharing a key run one after the other in this process (keyed.py)."""

    def decorate(fn):
        wrapped = retrying(_skip_duplicates(fn), kind="event")
        if one_at_a_time is not None:
            wrapped = _one_at_a_time(wrapped, one_at_a_time)
        return EventHandlerEntrypoint.decorator(source, event_type, steps=steps)(wrapped)

    return decorate


def _one_at_a_time(fn, keys_of):
    @functools.wraps(fn)
    def wrapper(self, envelope):
        with HOT_KEYS.holding(keys_of(envelope.get("data") or {})):
            return fn(self, envelope)

    return wrapper


def handles_batch(max_size: int = 500, max_wait: float = 0.05):
    """Decorate `on_event_batch(self, envelopes)`: every event of the service's
    queue without its own `@handles`, in batches. Its first transaction records
    the whole batch in the inbox and exposes `tx.fresh`, the envelopes not
    applied before: fold only those."""

    def decorate(fn):
        wrapped = retrying(fn, kind="event")
        return BatchHandlerEntrypoint.decorator(max_size=max_size, max_wait=max_wait)(wrapped)

    return decorate


def _skip_duplicates(fn):
    @functools.wraps(fn)
    def wrapper(self, envelope):
        try:
            result = fn(self, envelope)
        except DuplicateEvent:
            return DUPLICATE
        handling = current_event.get()
        if handling is not None and handling["steps"] and handling["skipped"] == handling["steps"]:
            return DUPLICATE  # every step had been applied before
        return result

    return wrapper

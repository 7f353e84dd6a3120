"""nameko's QueueConsumer (the thread that reads a container's queues: RPC requests,
RPC replies, events), made safe to stop and watched on the broker's side.

- Settling a message over a dead socket logs instead of killing the container, and
  `unregister_provider` can no longer hang a container's stop (below).
- `WatchedQueueConsumer` checks, every CONSUMER_CHECK_INTERVAL seconds, each queue it
  consumes. A consumer the broker dropped while kombu still believes in it (seen in
  the cluster soak after quorum-queue leaders moved under a killed or cut-off node:
  the connection alive, the channel open, no consumer on it) shows, while this
  process has nothing in hand, as a queue with no consumer at all, or with messages
  ready while this process received none. Found so at two checks in a row, the
  consuming connection is dropped, so kombu reconnects and declares its consumers
  anew (`shop_consumer_restarts_total`, alert `ShopConsumerLost`). The same test finds
  a consumer RabbitMQ re-attached, without a cancel, to an event queue deleted and
  re-created at once by another replica: it holds up to its prefetch and delivers
  nothing, so what comes beyond waits as ready. A queue another replica
  still consumes hides a lost consumer from both tests only while that replica
  serves everything, which is when it costs nothing; the reply queue is this
  process's alone, so its check is exact.
"""
from __future__ import annotations

import socket
from collections import Counter
from contextlib import suppress

import eventlet
from eventlet.event import Event
from nameko.extensions import ProviderCollector
from nameko.messaging import QueueConsumer

from shared.config import settings_of
from shared.observability import metrics
from shared.observability.logs import get_logger
from shared.retry import BROKER_LINK_ERRORS

log = get_logger(__name__)

LOST_AFTER_CHECKS = 2


def _settle_safely(settle):
    def settle_or_log(self, message):
        try:
            settle(self, message)
        except BROKER_LINK_ERRORS as exc:
            log.warning("message_settle_lost", action=settle.__name__, error=type(exc).__name__)

    settle_or_log.shop_safe = True
    return settle_or_log


# nameko's QueueConsumer catches only amqp's ConnectionError when it acks or requeues:
# a socket reset by a broker restart (ConnectionResetError) escaped the worker and
# killed the whole container. The message was not settled, so the broker redelivers it
# (the inbox, or the caller's idempotency key, absorbs it).
if not getattr(QueueConsumer.ack_message, "shop_safe", False):
    QueueConsumer.ack_message = _settle_safely(QueueConsumer.ack_message)
    QueueConsumer.requeue_message = _settle_safely(QueueConsumer.requeue_message)


def thread_ended(consumer: QueueConsumer) -> bool:
    return consumer._gt is not None and consumer._gt.dead


def _unregister_provider(self, provider):
    """nameko's, which waits for the consumer thread to cancel the provider's consumer.
    nameko's waited forever in two cases, and a container's stop with it: a second
    call for the same provider replaced the first call's wake-up (only one was ever
    sent), and a consumer thread that had ended (the only one that could cancel).
    Here a second call waits for the same wake-up, a provider already cancelled
    returns at once, and a dead thread's connection is gone with it: nothing to cancel."""
    if not self._consumers_ready.ready():
        self._last_provider_unregistered.send()
        return
    if provider not in self._consumers and provider not in self._pending_remove_providers:
        ProviderCollector.unregister_provider(self, provider)
        return
    removed = self._pending_remove_providers.setdefault(provider, Event())
    while not removed.ready():
        if thread_ended(self):
            self._pending_remove_providers.pop(provider, None)
            self._consumers.pop(provider, None)
            break
        with eventlet.Timeout(1, False):
            removed.wait()
    ProviderCollector.unregister_provider(self, provider)


_unregister_provider.shop_safe = True
if not getattr(QueueConsumer.unregister_provider, "shop_safe", False):
    QueueConsumer.unregister_provider = _unregister_provider


def queue_label(queue: str) -> str:
    """The metric label of a queue: reply queues carry a uuid per process, so one label."""
    return "rpc.reply" if queue.startswith("rpc.reply-") else queue


class WatchedQueueConsumer(QueueConsumer):
    """A QueueConsumer that knows whether it is consuming (kombu's on_consume_ready,
    after every reconnect), counts what each queue delivers, and reconnects a consumer
    the broker has dropped (module docstring)."""

    consuming = False
    live_connection = None

    def __init__(self):
        super().__init__()
        self.received: Counter = Counter()  # messages delivered, per queue
        self._suspect: Counter = Counter()  # checks in a row that found a queue's consumer lost
        self._watching = False

    def start(self):
        if not self._watching:
            self._watching = True
            self.container.spawn_managed_thread(self._watch, identifier=f"{type(self).__name__}.watch")
        super().start()

    def handle_message(self, provider, body, message):
        self.received[provider.queue.name] += 1
        super().handle_message(provider, body, message)

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        # `on_connection_revived` comes before the consumers are on the broker: it proves nothing.
        self.consuming = True
        self.live_connection = connection
        super().on_consume_ready(connection, channel, consumers, **kwargs)

    def on_connection_error(self, exc, interval):
        self.consuming = False
        super().on_connection_error(exc, interval)

    @property
    def thread_alive(self) -> bool:
        return not thread_ended(self)

    def busy(self) -> bool:
        """Something received is still in hand: a consumer then may rightly receive nothing."""
        return bool(self.container._worker_threads)

    def reconnect(self) -> None:
        """Drop the consuming connection under the consumer thread: its next read ends,
        and kombu connects again and declares its consumers anew."""
        connection, self.live_connection = self.live_connection, None
        self.consuming = False
        sock = getattr(getattr(connection, "connection", None), "sock", None)
        if sock is not None:
            with suppress(OSError):  # already closed: the thread is reconnecting anyway
                sock.shutdown(socket.SHUT_RDWR)

    def check(self, queue: str, ready: int, consumers: int, received: int) -> bool:
        """One check of `queue`: `ready` messages and `consumers` on the broker, `received`
        here since the last check. Reconnects (and returns True) at the second check in
        a row that finds the consumer lost."""
        # Never while something received is in hand: reconnecting hands it back to the broker,
        # which gives it to another replica while this one still runs it. A consumer that
        # is really gone receives nothing more, so what is in hand soon ends.
        lost = self.consuming and not self.busy() and (consumers == 0 or (ready > 0 and received == 0))
        self._suspect[queue] = self._suspect[queue] + 1 if lost else 0
        if self._suspect[queue] < LOST_AFTER_CHECKS:
            return False
        self._suspect.clear()
        log.error("consumer_lost", queue=queue, ready=ready, consumers=consumers)
        metrics.CONSUMER_RESTARTS.labels(self.container.service_name, queue_label(queue)).inc()
        self.reconnect()
        return True

    def _watch(self):
        interval = settings_of(self.container).consumer_check_interval
        while True:
            seen = Counter(self.received)
            eventlet.sleep(interval)
            queues = sorted({provider.queue.name for provider in list(self._providers)})
            try:
                counts = self.counts(queues)
            except Exception as exc:  # the broker is away: the connection's own errors say so
                log.debug("consumer_check_unavailable", error=type(exc).__name__)
                continue
            for queue, (ready, consumers) in counts.items():
                self.check(queue, ready, consumers, self.received[queue] - seen[queue])

    def counts(self, queues: list[str]) -> dict[str, tuple[int, int]]:
        """(ready, consumers) of each queue, by a passive declare on a connection of its own."""
        counts = {}
        with self.connection as connection:
            for queue in queues:
                channel = connection.channel()
                try:
                    _, ready, consumers = channel.queue_declare(queue, passive=True)
                    counts[queue] = ready, consumers
                finally:
                    with suppress(Exception):
                        channel.close()
        return counts

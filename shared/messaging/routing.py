"""Which queues an event must reach, and whether they exist right now.

`mandatory` publishing only proves that *some* queue matched: an event whose
consumer lost its queue (deleted by hand, a broker that lost its definitions)
would reach the other consumers and silently miss that one. Before a window
of events goes out, the relay asks `ConsumerQueues.missing_for` about the
queues of every consumer the event catalog lists for those event types
(passive declares on a channel of their own, since a failed passive declare
closes its channel; answers are cached for `ttl` seconds, and forgotten at
once when a publish comes back unroutable).

An event for a missing queue is held in the outbox (retried with backoff), the
gauge `shop_topology_missing_queues` says which, and the consumer's own periodic
check re-declares the queue. A producer never re-creates a consumer's queue, not
even where it may (`TOPOLOGY_DECLARE=all`): RabbitMQ may send no cancel to the
consumer of a deleted quorum queue, and a queue re-created under the same name
while that consumer's channel lives takes the channel back as a consumer that
holds what it is sent and delivers nothing (tests/chassis/test_engine.py). Only
the consumer re-creates its queue, after letting go of its old channel
(subscriptions.EventRouter._keep_declared)."""
from __future__ import annotations

import time

from shared.messaging.topology import expected_consumer_queues, missing_queues
from shared.observability import metrics


class ConsumerQueues:
    def __init__(self, source: str, *, ttl: float = 2.0):
        self.source = source
        self.ttl = ttl
        self.expected = expected_consumer_queues(source)
        self._seen: dict[str, float] = {}  # queue → when it was last seen to exist

    def on_connect(self, connection) -> None:
        self._seen.clear()

    def forget(self, event_type: str) -> None:
        for queue in self.expected.get(event_type, ()):
            self._seen.pop(queue, None)

    def missing_for(self, publisher, service: str, event_types) -> dict[str, set[str]]:
        """event_type → its consumer queues that do not exist."""
        wanted = set().union(*(self.expected.get(t, set()) for t in event_types)) if event_types else set()
        now = time.monotonic()
        stale = {q for q in wanted if now - self._seen.get(q, -1e9) > self.ttl}
        absent = missing_queues(publisher.connection, stale) if stale else set()
        for queue in stale - absent:
            self._seen[queue] = now
        for queue in wanted:
            metrics.TOPOLOGY_MISSING.labels(service, queue).set(1 if queue in absent else 0)
        return {t: self.expected.get(t, set()) & absent for t in event_types}

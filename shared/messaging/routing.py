"""Which queues an event must reach, and whether they exist right now.

`mandatory` publishing only proves that *some* queue matched: an event whose
consumer lost its queue (deleted by hand, a broker that lost its definitions)
would reach the other consumers and silently miss that one. Before a window
of events goes out, the relay asks `ConsumerQueues.missing_for` about the
queues of every consumer the event catalog lists for those event types
(passive declares on a channel of their own, since a failed passive declare
closes its channel; answers are cached for `ttl` seconds, and forgotten at
once when a publish comes back unroutable).

A missing queue is re-declared when this process may declare the suite's
topology (`TOPOLOGY_DECLARE=all`, local and test stacks); otherwise (least
privilege, Kubernetes) its events are held in the outbox, the gauge
`shop_topology_missing_queues` says which, and the consumer's own periodic
check re-declares it."""
from __future__ import annotations

import time

from shared.messaging.topology import declare_service, expected_consumer_queues, missing_queues
from shared.observability import metrics
from shared.observability.logs import get_logger

log = get_logger(__name__)


class ConsumerQueues:
    def __init__(self, source: str, *, may_declare: bool, delivery_limit: int, ttl: float = 2.0):
        self.source = source
        self.may_declare = may_declare
        self.delivery_limit = delivery_limit
        self.ttl = ttl
        self.expected = expected_consumer_queues(source)
        self._seen: dict[str, float] = {}  # queue → when it was last seen to exist

    def on_connect(self, connection) -> None:
        self._seen.clear()

    def forget(self, event_type: str) -> None:
        for queue in self.expected.get(event_type, ()):
            self._seen.pop(queue, None)

    def missing_for(self, publisher, service: str, event_types) -> dict[str, set[str]]:
        """event_type → its consumer queues that do not exist (after any repair)."""
        wanted = set().union(*(self.expected.get(t, set()) for t in event_types)) if event_types else set()
        now = time.monotonic()
        stale = {q for q in wanted if now - self._seen.get(q, -1e9) > self.ttl}
        absent = missing_queues(publisher.connection, stale) if stale else set()
        if absent and self.may_declare:
            for queue in sorted(absent):
                consumer = queue.removeprefix("evt--")
                declare_service(publisher.connection, consumer, delivery_limit=self.delivery_limit)
                metrics.TOPOLOGY_REPAIRS.labels(service, queue).inc()
                log.warning("consumer_queue_redeclared", queue=queue)
            absent = missing_queues(publisher.connection, absent)
        for queue in stale - absent:
            self._seen[queue] = now
        for queue in wanted:
            metrics.TOPOLOGY_MISSING.labels(service, queue).set(1 if queue in absent else 0)
        return {t: self.expected.get(t, set()) & absent for t in event_types}

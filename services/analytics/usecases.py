"""Analytics' use cases, called by the service's entrypoints: a batch of events (a
stream batch or a `/track` request) stored and folded in ONE transaction on a counter
shard leased for the batch; a `/track` request validated, admitted and ingested;
the aggregates rebuilt from the raw store."""
from __future__ import annotations

import random
from collections import deque
from contextlib import contextmanager

from eventlet.semaphore import Semaphore
from pymongo.errors import DuplicateKeyError

from services.analytics import config, domain, schemas, store
from shared.observability.logs import get_logger
from shared.retry import call_with_retries

log = get_logger(__name__)
# One stream batch in flight per process (see ingest_stream_batch).
STREAM_BATCHES = Semaphore(1)


class ShardLeases:
    """The shards free in this process, handed to in-flight ingestions one each, so
    concurrent transactions of one process never write the same bucket document.
    Replicas start from independent random orders; with more events in flight than
    shards the event's hash shard is used. Only a conflict-avoidance hint: what an
    event folded into is recorded on its raw document, not kept here."""

    def __init__(self, shards: int):
        self.shards = shards
        order = list(range(shards))
        random.shuffle(order)
        self.free = deque(order)

    @contextmanager
    def lease(self, event_id: str):
        leased = bool(self.free)
        shard = self.free.popleft() if leased else domain.shard_of(event_id, self.shards)
        try:
            yield shard
        finally:
            if leased:
                self.free.append(shard)  # reused last: its transaction has committed long before


_LEASES: dict[int, ShardLeases] = {}


def leases(shards: int) -> ShardLeases:
    """The process-wide ShardLeases for `shards` shards."""
    if shards not in _LEASES:
        _LEASES[shards] = ShardLeases(shards)
    return _LEASES[shards]


def ingest_batch(shop_store, settings, envelopes: list[dict], validated: bool = False) -> list[str]:
    """Store and fold a batch in ONE transaction, every event of the batch into one
    counter shard leased for the batch: the process's concurrent batches never write
    the same bucket document, so they do not abort each other."""
    with leases(config.counter_shards(settings)).lease(envelopes[0]["event_id"]) as shard:
        with shop_store.transaction() as tx:
            statuses = store.ingest_batch(tx.db, tx.session, envelopes, config.timezone(settings),
                                          shard, validated=validated)
    _log_unfolded(envelopes, statuses)
    return statuses


def ingest_stream_batch(shop_store, settings, envelopes: list[dict]) -> None:
    """A batch of the event stream, in one transaction: its inbox rows (the chassis
    records them in the first transaction and leaves in `tx.fresh` the events this
    consumer never applied) and the batch fold. One stream batch at a time per
    process: with a backlog the chassis hands out batches back to back, and
    concurrent batches of one order's or one member's events write the same
    summaries and abort each other (measured: every batch retried); the next batch
    waits instead, and replicas add the parallelism. The raw store's own look-up
    still drops an event already stored by another path (a rebuild, or a replay
    with a new inbox)."""
    shards = config.counter_shards(settings)
    with STREAM_BATCHES, leases(shards).lease(envelopes[0]["event_id"]) as shard:
        with shop_store.transaction() as tx:
            fresh = tx.fresh
            statuses = (store.ingest_batch(tx.db, tx.session, fresh, config.timezone(settings), shard)
                        if fresh else [])
    _log_unfolded(fresh, statuses)


def _log_unfolded(envelopes: list[dict], statuses: list[str]) -> None:
    for envelope, status in zip(envelopes, statuses, strict=True):
        if status in ("unknown", "invalid"):
            log.warning("event_kept_unfolded", status=status, event_type=envelope["event_type"],
                        source=envelope["source"], event_id=envelope["event_id"])


def track(shop_store, settings, service_name: str, body, admit=None) -> dict:
    """One `/track` request = one batch = one transaction: validated first (all or
    nothing), then stored and folded together, retried whole on a transient error.
    Idempotent per event_id."""
    envelopes = schemas.events_of(body, config.track_max_batch(settings), settings.currency)
    if admit is not None:
        admit(envelopes)

    def ingest_once() -> list[str]:
        try:
            return ingest_batch(shop_store, settings, envelopes, validated=True)
        except DuplicateKeyError:
            # A concurrent request committed one of these event ids after our
            # look-up; the transaction is aborted, and a re-run sees it stored.
            return ingest_batch(shop_store, settings, envelopes, validated=True)

    statuses = call_with_retries(ingest_once, settings, service_name, "http", "track")
    duplicates = statuses.count("duplicate")
    return {"id": "track", "accepted": len(statuses) - duplicates, "duplicates": duplicates,
            "event_ids": [e["event_id"] for e in envelopes]}


def rebuild(db, settings) -> dict:
    """Recompute every aggregate from the raw store (consumers should be stopped)."""
    result = store.rebuild(db, config.timezone(settings), shards=config.counter_shards(settings))
    log.info("analytics_rebuilt", **result)
    return result

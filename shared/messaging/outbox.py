"""Outbox: events are written in the same transaction as the state change and
published after commit, outside the request, by a relay in each process.

A row's life: `pending` (committed, not yet confirmed by the broker) →
`published` (kept a day, then expired), or → `parked` after
OUTBOX_MAX_ATTEMPTS failed publishes (visible in metrics and in
`shop outbox list`, sent again by `shop outbox retry`).

- The committing process hands its envelopes to its relay (woken at once); the
  relay publishes them in windows with pipelined confirms and marks each window
  in one write. Each row is leased to the committing process for
  OUTBOX_SWEEP_GRACE seconds, so other replicas leave it alone.
- The sweep (every OUTBOX_SWEEP_INTERVAL, in every replica) is the backstop
  for what a crash left behind: it claims due rows whose lease ran out with a
  conditional update (one replica wins each row), oldest due first. A failed
  publish pushes the row's next attempt back (doubling), so rows that keep
  failing never starve newer ones.
- Before a window goes out, the queues of every consumer of its events are
  checked (`routing.ConsumerQueues`): `mandatory` only proves that some queue
  matched, so an event whose consumer lost its queue is held, not published,
  until that consumer re-declares it."""
from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta

import eventlet
from eventlet.event import Event
from eventlet.queue import Empty, LightQueue
from eventlet.semaphore import Semaphore
from marshmallow import ValidationError
from pymongo import ASCENDING, IndexModel, UpdateOne

from shared.clock import to_iso, utcnow
from shared.errors import ValidationFailed
from shared.events.base import SCHEMA_VERSION, spec_for
from shared.ids import new_id
from shared.messaging.publisher import OK, UNROUTABLE, ConfirmedPublisher, Outgoing
from shared.messaging.topology import event_exchange
from shared.observability import metrics
from shared.observability.context import current_event, get_correlation_id
from shared.observability.logs import get_logger

COLLECTION = "outbox"
PENDING, PUBLISHED, PARKED = "pending", "published", "parked"
# Published rows are kept a day for inspection, then expire.
PUBLISHED_RETENTION_SECONDS = 24 * 3600
DEFAULT_LEASE_SECONDS = 5.0

INDEXES = [
    IndexModel([("next_attempt_at", ASCENDING)], name="pending_by_due",
               partialFilterExpression={"pending": True}),
    IndexModel([("created_at", ASCENDING)], name="pending_by_age",
               partialFilterExpression={"pending": True}),
    IndexModel([("state", ASCENDING), ("created_at", ASCENDING)], name="by_state"),
    IndexModel([("published_at", ASCENDING)], expireAfterSeconds=PUBLISHED_RETENTION_SECONDS),
]

log = get_logger(__name__)


def build_envelope(source: str, event_type: str, data: dict, occurred_at=None) -> dict:
    """Validate `data` against the event's schema and wrap it in the envelope.

    A payload that breaks the contract is a bug in the producer: it raises
    ValidationFailed before anything is written."""
    spec = spec_for(source, event_type)
    try:
        spec.validate(data)
    except ValidationError as exc:
        raise ValidationFailed(f"event {event_type} breaks its schema",
                               {"fields": exc.messages, "event_type": event_type}) from None
    cause = current_event.get()
    return {
        "event_id": new_id("evt"),
        "event_type": event_type,
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "occurred_at": to_iso(occurred_at or utcnow()),
        "correlation_id": get_correlation_id(),
        "causation_id": cause.get("cause_id") if cause else None,
        "data": data,
    }


def outbox_row(envelope: dict, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> dict:
    now = utcnow()
    return {"_id": envelope["event_id"], "event_type": envelope["event_type"],
            "envelope": envelope, "created_at": now, "pending": True, "state": PENDING,
            "attempts": 0, "next_attempt_at": now,
            # The committing process publishes it; other replicas' sweeps wait this long.
            "lease_until": now + timedelta(seconds=lease_seconds)}


def outgoing(envelope: dict) -> Outgoing:
    return Outgoing.json(envelope["event_id"], event_exchange(envelope["source"]).name,
                         envelope["event_type"], envelope,
                         {"nameko.correlation_id": envelope.get("correlation_id") or ""})


class OutboxRelay:
    """Publishes the committed outbox rows of one service's database."""

    def __init__(self, db, service: str, amqp_uri: str, *, routing=None, window: int = 200,
                 max_attempts: int = 10, backoff: float = 1.0, backoff_max: float = 60.0,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS, confirm_timeout: float = 5.0,
                 heartbeat: int = 30):
        self.db = db
        self.service = service
        self.routing = routing
        self.window = window
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.lease_seconds = lease_seconds
        self.heartbeat = heartbeat
        self.publisher = ConfirmedPublisher(amqp_uri, heartbeat=heartbeat,
                                            confirm_timeout=confirm_timeout,
                                            on_connect=self._on_connect)
        # The relay's thread and the sweep's both publish through this one connection:
        # two green threads reading one socket is an error (eventlet refuses it), and
        # the window's confirms are counted per channel.
        self._publishing = Semaphore()
        self._queue: LightQueue = LightQueue()
        self._stopped = Event()
        self._running = False

    # -- the committing process's path --------------------------------------------------
    def submit(self, envelopes: Iterable[dict]) -> None:
        """Hand envelopes committed by this process to the relay (never blocks)."""
        for envelope in envelopes:
            self._queue.put((envelope, 0, time.monotonic()))

    def run(self) -> None:
        """The relay's green thread: publish what is submitted, window by window,
        until `stop` asks it to publish what is left and end."""
        idle = max(self.heartbeat / 3, 1.0)
        self._running = True
        try:
            while True:
                try:
                    first = self._queue.get(timeout=idle)
                except Empty:
                    with self._publishing:
                        self.publisher.heartbeat_check()
                    continue
                batch, stopping = ([] if first is None else [first]), first is None
                while len(batch) < self.window or stopping:
                    try:
                        item = self._queue.get_nowait()
                    except Empty:
                        break
                    if item is None:
                        stopping = True
                    else:
                        batch.append(item)
                if batch:
                    try:
                        self.publish_rows([(envelope, attempts) for envelope, attempts, _ in batch],
                                          submitted=[at for _, _, at in batch])
                    except Exception as exc:  # store away: the rows stay pending for the sweep
                        log.warning("outbox_relay_failed", error=type(exc).__name__, rows=len(batch))
                if stopping:
                    return
        finally:
            self._running = False
            self._stopped.send(True)

    def stop(self, timeout: float = 3.0) -> None:
        """Ask the relay to publish what is still queued and end (best effort:
        what it cannot publish in time stays pending for a sweep)."""
        if self._running:
            self._queue.put(None)
            try:
                with eventlet.Timeout(timeout):
                    self._stopped.wait()
            except eventlet.Timeout:
                log.warning("outbox_flush_incomplete", rows=self._queue.qsize())
        self.publisher.close()

    def backlog(self) -> int:
        return self._queue.qsize()

    # -- publishing ---------------------------------------------------------------------
    def _on_connect(self, connection) -> None:
        # What our events need, re-declared on every (re)connect.
        event_exchange(self.service)(connection.default_channel).declare()
        if self.routing is not None:
            self.routing.on_connect(connection)

    def publish_rows(self, rows: list[tuple[dict, int]], submitted: list[float] | None = None) -> int:
        """Publish `(envelope, attempts)` rows in windows; mark each outcome. Returns
        how many were confirmed."""
        confirmed = 0
        for start in range(0, len(rows), self.window):
            chunk = rows[start:start + self.window]
            confirmed += self._publish_window(chunk, (submitted or [])[start:start + self.window])
        return confirmed

    def _publish_window(self, rows: list[tuple[dict, int]], submitted: list[float]) -> int:
        with self._publishing:
            outcomes, held = self._send(rows)
        return self._mark(rows, outcomes, held, submitted)

    def _send(self, rows: list[tuple[dict, int]]) -> tuple[dict[str, str], set[str]]:
        held = set()
        if self.routing is not None:
            event_types = {envelope["event_type"] for envelope, _ in rows}
            missing = self.routing.missing_for(self.publisher, self.service, event_types)
            held = {event_type for event_type, queues in missing.items() if queues}
            for event_type in held:
                log.error("event_held_consumer_queue_missing", event_type=event_type,
                          queues=sorted(missing[event_type]))
        sendable = [(e, a) for e, a in rows if e["event_type"] not in held]
        outcomes = self.publisher.publish_window(outgoing(e) for e, _ in sendable) if sendable else {}
        return outcomes, held

    def _mark(self, rows: list[tuple[dict, int]], outcomes: dict[str, str], held: set[str],
              submitted: list[float]) -> int:
        now = utcnow()
        published = [e["event_id"] for e, _ in rows if outcomes.get(e["event_id"]) == OK]
        if published:
            self.db[COLLECTION].update_many(
                {"_id": {"$in": published}},
                {"$set": {"state": PUBLISHED, "published_at": now},
                 "$unset": {"pending": "", "lease_until": "", "next_attempt_at": "", "lease_owner": ""}})
        updates = []
        for envelope, attempts in rows:
            event_id, event_type = envelope["event_id"], envelope["event_type"]
            outcome = "held" if event_type in held else outcomes.get(event_id)
            if outcome == OK:
                metrics.EVENTS_PUBLISHED.labels(self.service, event_type).inc()
                continue
            metrics.PUBLISH_FAILURES.labels(self.service, event_type).inc()
            updates.append(self._failure_update(event_id, event_type, attempts, outcome, now))
            if outcome == UNROUTABLE and self.routing is not None:
                self.routing.forget(event_type)  # look again before the next window
        if updates:
            self.db[COLLECTION].bulk_write(updates, ordered=False)
        for at in submitted:
            metrics.OUTBOX_RELAY_SECONDS.labels(self.service).observe(time.monotonic() - at)
        return len(published)

    def _failure_update(self, event_id: str, event_type: str, attempts: int, outcome: str,
                        now) -> UpdateOne:
        if outcome == "held":
            # Waiting for a consumer's queue is not the row's failure: no attempt counted.
            return UpdateOne({"_id": event_id, "pending": True},
                             {"$set": {"next_attempt_at": now + timedelta(seconds=2),
                                       "lease_until": now, "last_error": "consumer queue missing"}})
        attempts += 1
        if attempts >= self.max_attempts:
            metrics.OUTBOX_PARKED_TOTAL.labels(self.service, event_type).inc()
            log.error("outbox_row_parked", event_id=event_id, event_type=event_type,
                      attempts=attempts, last_error=outcome)
            return UpdateOne({"_id": event_id, "pending": True},
                             {"$set": {"state": PARKED, "attempts": attempts, "parked_at": now,
                                       "last_error": outcome},
                              "$unset": {"pending": "", "lease_until": "", "next_attempt_at": ""}})
        delay = min(self.backoff * (2 ** (attempts - 1)), self.backoff_max)
        log.warning("event_publish_failed", event_id=event_id, event_type=event_type,
                    outcome=outcome, attempts=attempts, retry_in_s=delay)
        return UpdateOne({"_id": event_id, "pending": True},
                         {"$set": {"attempts": attempts, "last_error": outcome, "lease_until": now,
                                   "next_attempt_at": now + timedelta(seconds=delay)}})

    # -- the backstop -------------------------------------------------------------------
    def sweep(self, batch: int = 500) -> int:
        """Claim due rows whose lease ran out (one replica wins each) and publish them."""
        coll = self.db[COLLECTION]
        now = utcnow()
        due = {"pending": True, "next_attempt_at": {"$lte": now}, "lease_until": {"$lte": now}}
        ids = [row["_id"] for row in coll.find(due, {"_id": 1}).sort("next_attempt_at", 1).limit(batch)]
        sent = 0
        if ids:
            token = new_id("lease")
            coll.update_many({"_id": {"$in": ids}, **due},
                             {"$set": {"lease_owner": token,
                                       "lease_until": now + timedelta(seconds=self.lease_seconds)}})
            rows = list(coll.find({"_id": {"$in": ids}, "lease_owner": token, "pending": True}))
            rows.sort(key=lambda row: row["next_attempt_at"])
            sent = self.publish_rows([(row["envelope"], row.get("attempts", 0)) for row in rows])
            if sent:
                metrics.OUTBOX_SWEPT.labels(self.service).inc(sent)
                log.info("outbox_swept", published=sent, claimed=len(rows))
        self.report()
        return sent

    def report(self) -> None:
        coll = self.db[COLLECTION]
        metrics.OUTBOX_PENDING.labels(self.service).set(coll.count_documents({"pending": True}))
        metrics.OUTBOX_PARKED.labels(self.service).set(coll.count_documents({"state": PARKED}))
        oldest = coll.find_one({"pending": True}, sort=[("created_at", 1)], projection={"created_at": 1})
        age = (utcnow() - oldest["created_at"]).total_seconds() if oldest else 0.0
        metrics.OUTBOX_OLDEST_SECONDS.labels(self.service).set(max(age, 0.0))

    def pending(self) -> int:
        return self.db[COLLECTION].count_documents({"pending": True})


# -- operators' view (shop outbox list|retry) -------------------------------------------
def list_rows(db, state: str = PARKED, limit: int = 50) -> list[dict]:
    query = {"pending": True} if state == PENDING else {"state": state}
    rows = db[COLLECTION].find(query).sort("created_at", 1).limit(limit)
    return [{"event_id": row["_id"], "event_type": row["event_type"], "state": row.get("state"),
             "attempts": row.get("attempts", 0), "last_error": row.get("last_error"),
             "created_at": to_iso(row["created_at"]),
             "next_attempt_at": to_iso(row["next_attempt_at"]) if row.get("next_attempt_at") else None}
            for row in rows]


def retry_parked(db, event_ids: list[str] | None = None) -> int:
    """Make parked rows due again now, with a fresh attempt budget."""
    query: dict = {"state": PARKED}
    if event_ids:
        query["_id"] = {"$in": event_ids}
    now = utcnow()
    result = db[COLLECTION].update_many(query, {
        "$set": {"pending": True, "state": PENDING, "attempts": 0, "next_attempt_at": now,
                 "lease_until": now},
        "$unset": {"parked_at": ""}})
    return result.modified_count

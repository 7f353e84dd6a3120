"""Outbox: events are written in the same transaction as the state change and
published after commit by the relay; a periodic sweep re-publishes whatever a
crash between commit and publish left behind.

Publishing uses confirms and `mandatory`: an event no queue is bound for is an
error (logged, counted, kept pending), not silently dropped."""
from __future__ import annotations

from datetime import timedelta

from marshmallow import ValidationError
from nameko.amqp.publish import Publisher, UndeliverableMessage
from pymongo import ASCENDING, IndexModel

from shared import metrics
from shared.clock import to_iso, utcnow
from shared.context import current_event, get_correlation_id
from shared.errors import ValidationFailed
from shared.events.base import SCHEMA_VERSION, spec_for
from shared.ids import new_id
from shared.logs import get_logger
from shared.topology import event_exchange

COLLECTION = "outbox"
# Published rows are kept a day for inspection, then expire.
PUBLISHED_RETENTION_SECONDS = 24 * 3600

INDEXES = [
    IndexModel([("created_at", ASCENDING)], name="pending_by_age",
               partialFilterExpression={"pending": True}),
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
        "causation_id": cause["envelope"]["event_id"] if cause else None,
        "data": data,
    }


def outbox_row(envelope: dict) -> dict:
    return {"_id": envelope["event_id"], "event_type": envelope["event_type"],
            "envelope": envelope, "created_at": utcnow(), "pending": True}


class OutboxRelay:
    """Publishes committed outbox rows of one service's database."""

    def __init__(self, db, service: str, amqp_uri: str):
        self.db = db
        self.service = service
        self.publisher = Publisher(amqp_uri, use_confirms=True, mandatory=True,
                                   serializer="json", retry=True,
                                   retry_policy={"max_retries": 2, "interval_start": 0.1,
                                                 "interval_step": 0.2, "interval_max": 0.5})

    def publish(self, envelope: dict) -> bool:
        """Publish one envelope; on success mark its row published."""
        event_type = envelope["event_type"]
        try:
            self.publisher.publish(
                envelope,
                exchange=event_exchange(envelope["source"]),
                routing_key=event_type,
                declare=[event_exchange(envelope["source"])],
                extra_headers={"nameko.correlation_id": envelope.get("correlation_id") or ""},
                message_id=envelope["event_id"],
            )
        except UndeliverableMessage:
            metrics.PUBLISH_FAILURES.labels(self.service, event_type).inc()
            log.error("event_unroutable", event_type=event_type, event_id=envelope["event_id"],
                      hint="no queue is bound for it: run the declare command")
            return False
        except Exception as exc:  # broker gone: the sweep publishes it later
            metrics.PUBLISH_FAILURES.labels(self.service, event_type).inc()
            log.warning("event_publish_failed", event_type=event_type,
                        event_id=envelope["event_id"], error=type(exc).__name__)
            return False
        metrics.EVENTS_PUBLISHED.labels(self.service, event_type).inc()
        try:
            self.db[COLLECTION].update_one(
                {"_id": envelope["event_id"]},
                {"$unset": {"pending": ""}, "$set": {"published_at": utcnow()}})
        except Exception as exc:  # published but not marked: the sweep re-sends, the inbox dedups
            log.warning("outbox_mark_failed", event_id=envelope["event_id"], error=type(exc).__name__)
        return True

    def publish_all(self, envelopes: list[dict]) -> int:
        return sum(1 for envelope in envelopes if self.publish(envelope))

    def sweep(self, grace_seconds: float, batch: int = 500) -> int:
        """Re-publish rows still pending `grace_seconds` after their commit."""
        cutoff = utcnow() - timedelta(seconds=grace_seconds)
        rows = list(self.db[COLLECTION].find(
            {"pending": True, "created_at": {"$lt": cutoff}}).sort("created_at", 1).limit(batch))
        sent = 0
        for row in rows:
            if self.publish(row["envelope"]):
                sent += 1
        if sent:
            metrics.OUTBOX_SWEPT.labels(self.service).inc(sent)
            log.info("outbox_swept", published=sent, found=len(rows))
        self.report()
        return sent

    def report(self) -> None:
        pending = self.db[COLLECTION].count_documents({"pending": True})
        metrics.OUTBOX_PENDING.labels(self.service).set(pending)
        oldest = self.db[COLLECTION].find_one({"pending": True}, sort=[("created_at", 1)])
        age = (utcnow() - oldest["created_at"]).total_seconds() if oldest else 0.0
        metrics.OUTBOX_OLDEST_SECONDS.labels(self.service).set(max(age, 0.0))

    def pending(self) -> int:
        return self.db[COLLECTION].count_documents({"pending": True})

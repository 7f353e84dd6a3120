"""Handler failures counted by the application, per (consumer, event_id).

The broker's delivery count also counts crashes, restarts and the prefetch
window a killed process held: a crash-looping pod would dead-letter healthy
events. So a message goes to the dead-letter queue only after
EVENT_MAX_FAILURES real failures of its handler, recorded here; the queue's
`x-delivery-limit` stays as a far backstop. A dead-lettered event that an
operator replays starts again from one failure."""
from __future__ import annotations

from pymongo import ASCENDING, IndexModel, ReturnDocument

from shared.clock import utcnow

COLLECTION = "event_failures"
RETENTION_SECONDS = 14 * 24 * 3600

INDEXES = [IndexModel([("at", ASCENDING)], expireAfterSeconds=RETENTION_SECONDS)]


def record_failure(db, consumer: str, event_id: str, error: str) -> int:
    """Count one failure and return the count so far (1 again after a dead-letter)."""
    now = utcnow()
    row = db[COLLECTION].find_one_and_update(
        {"_id": f"{consumer}:{event_id}"},
        [{"$set": {
            "consumer": consumer, "event_id": event_id, "last_error": error[:300], "at": now,
            "count": {"$cond": [{"$eq": ["$dead_lettered", True]}, 1,
                                {"$add": [{"$ifNull": ["$count", 0]}, 1]}]},
            "dead_lettered": False}}],
        upsert=True, return_document=ReturnDocument.AFTER)
    return row["count"]


def mark_dead_lettered(db, consumer: str, event_id: str) -> None:
    db[COLLECTION].update_one({"_id": f"{consumer}:{event_id}"},
                              {"$set": {"dead_lettered": True, "dead_lettered_at": utcnow()}})


def failures_of(db, consumer: str, event_id: str) -> int:
    row = db[COLLECTION].find_one({"_id": f"{consumer}:{event_id}"})
    return row["count"] if row else 0

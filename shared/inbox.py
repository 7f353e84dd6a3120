"""Inbox: a consumer records `(consumer, event_id)` in the same transaction as
the effect, so a redelivered event changes nothing the second time."""
from __future__ import annotations

from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from shared.clock import utcnow

COLLECTION = "inbox"
# Redeliveries and sweeps re-publish within minutes; two weeks is ample.
RETENTION_SECONDS = 14 * 24 * 3600

INDEXES = [IndexModel([("at", ASCENDING)], expireAfterSeconds=RETENTION_SECONDS)]


class DuplicateEvent(Exception):
    """The event was already applied by this consumer."""


def record(db, session, consumer: str, envelope: dict) -> None:
    """Insert the inbox row inside `session`'s transaction, or raise DuplicateEvent."""
    try:
        db[COLLECTION].insert_one(
            {"_id": f"{consumer}:{envelope['event_id']}", "consumer": consumer,
             "event_id": envelope["event_id"], "event_type": envelope.get("event_type"),
             "source": envelope.get("source"), "at": utcnow()},
            session=session)
    except DuplicateKeyError:
        raise DuplicateEvent(envelope["event_id"]) from None

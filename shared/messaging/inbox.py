"""Inbox: a consumer records `(consumer, event_id)` in the same transaction as
the effect, so a redelivered event changes nothing the second time.

- A one-step handler (the default) records `consumer:event_id` in its
  transaction; a redelivery raises DuplicateEvent there and the handler ends.
  A second transaction in such a handler is refused (StepsUndeclared), so a
  later step can never be skipped by the first one's inbox row.
- A handler declared `@handles(..., steps=True)` keys every transaction by its
  ordinal (`consumer:event_id`, `consumer:event_id#1`, ...): on a re-run, a
  step already applied runs on a transaction that is then aborted (its writes
  discarded), and the handler goes on to the next step, so a re-run skips
  only what already happened.
- A batch handler records the rows of the whole batch in its transaction and
  is told which envelopes are new (`tx.fresh`)."""
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


class StepsUndeclared(RuntimeError):
    """A one-step handler opened a second transaction."""


def key(consumer: str, event_id: str, step: int = 0) -> str:
    return f"{consumer}:{event_id}" if step == 0 else f"{consumer}:{event_id}#{step}"


def _row(consumer: str, envelope: dict, step: int, now) -> dict:
    return {"_id": key(consumer, envelope["event_id"], step), "consumer": consumer,
            "event_id": envelope["event_id"], "event_type": envelope.get("event_type"),
            "source": envelope.get("source"), "step": step, "at": now}


def record(db, session, consumer: str, envelope: dict, step: int = 0) -> None:
    """Insert the step's inbox row inside `session`'s transaction, or raise DuplicateEvent."""
    try:
        db[COLLECTION].insert_one(_row(consumer, envelope, step, utcnow()), session=session)
    except DuplicateKeyError:
        raise DuplicateEvent(envelope["event_id"]) from None


def record_batch(db, session, consumer: str, envelopes: list[dict]) -> list[dict]:
    """Record every envelope of a batch not seen before; return those, in order.

    Look-up first: inside a transaction a duplicate-key error would abort it.
    A concurrent consumer inserting the same row makes this a write conflict,
    which the transient retry re-runs."""
    keys = {key(consumer, e["event_id"]): e for e in envelopes}
    seen = {row["_id"] for row in db[COLLECTION].find({"_id": {"$in": list(keys)}}, {"_id": 1},
                                                      session=session)}
    fresh, now, taken = [], utcnow(), set()
    for row_key, envelope in keys.items():
        if row_key not in seen and row_key not in taken:
            taken.add(row_key)
            fresh.append(envelope)
    if fresh:
        db[COLLECTION].insert_many([_row(consumer, e, 0, now) for e in fresh], ordered=False,
                                   session=session)
    return fresh

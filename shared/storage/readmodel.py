"""Read models of another service's aggregates, kept by the owner's version.

An event that carries an aggregate's state carries `version`: the owner's counter for that
aggregate, incremented in the same transaction as the change. A read model applies such an
event only if its version is higher than the one it stored, so late delivery, clock skew
between producers and millisecond ties of `occurred_at` cannot bring an old value back.

A read-model document may hold several *sections* (the product's listing, its stock level, a
member's tier, one consent), each with its own stored version (`version_field`). Every event
that touches a section carries the whole section, so skipping a lower version loses nothing.

An event published before versions existed has no `version`: it counts as 0 (`LEGACY`). It
fills a section that has no version yet or only legacy values, last applied wins among them,
and never overwrites a section a versioned event set."""
from __future__ import annotations

from pymongo.errors import DuplicateKeyError

LEGACY = 0


def version_of(data: dict) -> int:
    """The aggregate version an event's `data` carries; `LEGACY` when it carries none."""
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        return LEGACY
    return version


def newer(version_field: str, version: int) -> dict:
    """Query filter: the stored `version_field` is lower than `version`, or missing.

    `$not` (rather than `$lt`) also matches a document that has no such field yet: one
    created by another section, or stored before versions existed. A legacy event replaces
    only another legacy value (`$gt 0` fails), never a versioned one."""
    return {version_field: {"$not": {("$gte" if version > LEGACY else "$gt"): version}}}


def apply_if_newer(collection, doc_id: str, version: int, fields: dict, *, session=None,
                   version_field: str = "version", on_insert: dict | None = None,
                   guard: dict | None = None) -> bool:
    """Set `fields` (dotted paths allowed) and `version_field` on `doc_id` if `version` is
    higher than the stored one and `guard` (a query filter) holds; create the document
    (with `on_insert`) if it does not exist. True if applied, False if ignored.

    Outside a transaction this is one conditional upsert. If the document exists but is not
    newer, the upsert tries to insert a second `_id` and gets DuplicateKeyError; a race of two
    first writers gives the same error to the loser, whose version may still be the higher,
    so it retries once without upsert (the document now exists).

    Inside a transaction a DuplicateKeyError aborts the whole transaction, so the update
    and the insert are two steps: a conditional update, then an insert only if `_id` is
    absent. Both read the transaction's snapshot; a concurrent writer of the same document
    makes the commit fail with a write conflict and the chassis re-runs the handler."""
    applies = {"_id": doc_id, **(guard or {}), **newer(version_field, version)}
    changes = {**fields, version_field: version}
    initial = {k: v for k, v in (on_insert or {}).items()
               if not any(_overlaps(k, f) for f in changes)}
    if session is not None and session.in_transaction:
        if collection.update_one(applies, {"$set": changes}, session=session).matched_count:
            return True
        created = collection.update_one({"_id": doc_id}, {"$setOnInsert": {**initial, **changes}},
                                        upsert=True, session=session)
        return created.upserted_id is not None
    update = {"$set": changes, **({"$setOnInsert": initial} if initial else {})}
    try:
        collection.update_one(applies, update, upsert=True, session=session)
        return True
    except DuplicateKeyError:
        return collection.update_one(applies, {"$set": changes}, session=session).matched_count > 0


def _overlaps(a: str, b: str) -> bool:
    """Whether two update paths touch the same field (MongoDB refuses such an update)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")

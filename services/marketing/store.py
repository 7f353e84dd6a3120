"""Marketing's MongoDB: collections, indexes, and the conditional updates every write relies on
(coupon counters, reservations, message de-duplication); the events they stage are composed by
`domain`, the documents' outward shape by `views`. Functions taking `tx` run inside the
caller's transaction (`tx.db`, `tx.session`, `tx.emit`)."""
from __future__ import annotations

from datetime import datetime, timedelta

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.marketing import domain, metrics
from shared.errors import Conflict, NotFound
from shared.ids import new_id

INDEXES = {
    "promotions": [IndexModel([("status", ASCENDING), ("starts_at", ASCENDING)])],
    "coupons": [IndexModel([("promotion_id", ASCENDING)])],
    "coupon_reservations": [IndexModel([("status", ASCENDING), ("expires_at", ASCENDING)])],
    "campaigns": [IndexModel([("status", ASCENDING), ("next_dispatch_at", ASCENDING)])],
    "recipients": [IndexModel([("campaign_id", ASCENDING), ("status", ASCENDING)])],
    "messages": [IndexModel([("dedupe_key", ASCENDING)], unique=True),
                 IndexModel([("member_id", ASCENDING), ("sent_at", DESCENDING)])],
    "parked_notifications": [IndexModel([("order_id", ASCENDING)])],
    "exposures": [IndexModel([("experiment_key", ASCENDING)])],
    "products": [IndexModel([("units", DESCENDING)]),
                 IndexModel([("category", ASCENDING), ("units", DESCENDING)])],
}


def get_doc(db, collection: str, doc_id: str, message: str, details: dict) -> dict:
    """The stored document `doc_id` of `collection`, or NotFound(message, details)."""
    doc = db[collection].find_one({"_id": doc_id})
    if doc is None:
        raise NotFound(message, details)
    return doc


def insert_new(store, collection: str, doc: dict, conflict: Conflict,
               event: tuple[str, dict] | None = None) -> None:
    """Insert `doc` (and emit `event`) in one transaction; `conflict` if its `_id` exists,
    also when a concurrent insert wins the race (unique `_id`)."""
    try:
        with store.transaction() as tx:
            if tx.db[collection].find_one({"_id": doc["_id"]}, session=tx.session):
                raise conflict
            tx.db[collection].insert_one(doc, session=tx.session)
            if event is not None:
                tx.emit(*event)
    except DuplicateKeyError:
        raise conflict from None


# --- coupons --------------------------------------------------------------------------------

def _member_key(code: str, member_id: str) -> str:
    return f"{code}|{member_id}"


def member_uses(db, code: str, member_id: str, session=None) -> int:
    doc = db.coupon_members.find_one({"_id": _member_key(code, member_id)}, session=session)
    return doc["count"] if doc else 0


def _take(tx, coupon: dict, member_id: str, force: bool = False) -> None:
    """Count one use of `coupon` by `member_id`, never beyond its limits (unless `force`)."""
    code = coupon["_id"]
    guard = {} if force else {"$or": [{"max_redemptions": None},
                                      {"$expr": {"$lt": ["$used", "$max_redemptions"]}}]}
    taken = tx.db.coupons.find_one_and_update({"_id": code, **guard}, {"$inc": {"used": 1}},
                                              session=tx.session)
    if taken is None:
        metrics.COUPON_RESERVATIONS.labels("exhausted").inc()
        raise Conflict(f"coupon {code} is exhausted", {"code": code, "reason": "exhausted"})
    limit = taken.get("per_member_limit")
    key = _member_key(code, member_id)
    if limit is not None and not force and member_uses(tx.db, code, member_id, tx.session) >= limit:
        metrics.COUPON_RESERVATIONS.labels("member_limit_reached").inc()
        raise Conflict(f"coupon {code} already used by this member",
                       {"code": code, "reason": "member_limit_reached"})
    # Writing the member's counter also makes concurrent takes by one member conflict.
    tx.db.coupon_members.update_one(
        {"_id": key}, {"$inc": {"count": 1}, "$setOnInsert": {"code": code, "member_id": member_id}},
        upsert=True, session=tx.session)


def _give_back(tx, code: str, member_id: str, was_redeemed: bool) -> None:
    inc = {"used": -1, **({"redeemed": -1} if was_redeemed else {})}
    tx.db.coupons.update_one({"_id": code}, {"$inc": inc}, session=tx.session)
    tx.db.coupon_members.update_one({"_id": _member_key(code, member_id), "count": {"$gt": 0}},
                                    {"$inc": {"count": -1}}, session=tx.session)


def reserve_coupon(tx, *, order_id: str, coupon: dict, member_id: str, discount: int,
                   now: datetime, ttl: timedelta) -> dict:
    """Reserve `coupon` for `order_id`, once per order id (re-pricing refreshes the discount)."""
    code = coupon["_id"]
    existing = tx.db.coupon_reservations.find_one({"_id": order_id}, session=tx.session)
    if existing is not None:
        if existing["status"] == "released" and existing.get("release_reason") != "expired":
            raise Conflict(f"order {order_id} is already closed",
                           {"order_id": order_id, "reason": "order_closed"})
        if existing.get("code") == code and existing["status"] in ("reserved", "redeemed"):
            changes = {"discount": discount}
            if existing["status"] == "reserved":
                changes["expires_at"] = now + ttl
            tx.db.coupon_reservations.update_one({"_id": order_id}, {"$set": changes},
                                                 session=tx.session)
            metrics.COUPON_RESERVATIONS.labels("already_reserved").inc()
            return {**existing, **changes}
        if existing["status"] in ("reserved", "redeemed") and existing.get("code"):
            release_reservation(tx, order_id, "repriced", now)
    _take(tx, coupon, member_id)
    doc = {"code": code, "promotion_id": coupon["promotion_id"], "member_id": member_id,
           "discount": discount, "status": "reserved", "reserved_at": now,
           "expires_at": now + ttl, "release_reason": None}
    tx.db.coupon_reservations.update_one({"_id": order_id}, {"$set": doc}, upsert=True,
                                         session=tx.session)
    metrics.COUPON_RESERVATIONS.labels("reserved").inc()
    return {"_id": order_id, **doc}


HOLDING = ["reserved", "redeemed"]


def holds_coupon(db, order_id: str) -> bool:
    """Whether `order_id` holds a coupon that a release would give back."""
    return db.coupon_reservations.find_one({"_id": order_id, "status": {"$in": HOLDING}},
                                           {"_id": 1}) is not None


def release_reservation(tx, order_id: str, reason: str, now: datetime, *,
                        only_expired: bool = False) -> dict | None:
    """Give the coupon of `order_id` back (reserved or redeemed → released), once."""
    filter_ = {"_id": order_id, "status": {"$in": HOLDING}}
    if only_expired:
        filter_ = {"_id": order_id, "status": "reserved", "expires_at": {"$lte": now}}
    before = tx.db.coupon_reservations.find_one_and_update(
        filter_, {"$set": {"status": "released", "release_reason": reason, "released_at": now}},
        session=tx.session)
    if before is None:
        return None
    if before.get("code"):
        _give_back(tx, before["code"], before["member_id"], before["status"] == "redeemed")
        tx.emit("coupon_released", domain.coupon_use_event(before))
        metrics.COUPON_OUTCOMES.labels("released").inc()
    return before


def close_order(tx, order_id: str, reason: str, now: datetime) -> None:
    """An order was cancelled or rejected: release its coupon, or leave a tombstone so a late
    reservation for it is refused."""
    if release_reservation(tx, order_id, reason, now) is None:
        tx.db.coupon_reservations.update_one(
            {"_id": order_id},
            {"$setOnInsert": {"status": "released", "release_reason": reason, "code": None,
                              "released_at": now}},
            upsert=True, session=tx.session)


def redeem_reservation(tx, order_id: str, now: datetime) -> dict | None:
    """The order was paid: reserved → redeemed (coupon_redeemed). A reservation the TTL already
    released is taken again (the member paid with the discount), even beyond the limit."""
    res = tx.db.coupon_reservations.find_one_and_update(
        {"_id": order_id, "status": "reserved"},
        {"$set": {"status": "redeemed", "redeemed_at": now}},
        session=tx.session, return_document=ReturnDocument.AFTER)
    if res is None:
        res = tx.db.coupon_reservations.find_one_and_update(
            {"_id": order_id, "status": "released", "release_reason": "expired"},
            {"$set": {"status": "redeemed", "redeemed_at": now, "release_reason": None}},
            session=tx.session, return_document=ReturnDocument.AFTER)
        if res is None or not res.get("code"):
            return None
        coupon = tx.db.coupons.find_one({"_id": res["code"]}, session=tx.session)
        if coupon is not None:
            _take(tx, coupon, res["member_id"], force=True)
    if not res.get("code"):
        return None
    tx.db.coupons.update_one({"_id": res["code"]}, {"$inc": {"redeemed": 1}}, session=tx.session)
    tx.emit("coupon_redeemed", domain.coupon_use_event(res))
    metrics.COUPON_OUTCOMES.labels("redeemed").inc()
    return res


def expired_reservations(db, now: datetime, limit: int = 200) -> list[str]:
    return [d["_id"] for d in db.coupon_reservations.find(
        {"status": "reserved", "expires_at": {"$lte": now}}, {"_id": 1}).limit(limit)]


# --- messages -------------------------------------------------------------------------------

def deliver(tx, adapter, *, member_id: str, channel: str, kind: str, campaign_id: str | None,
            content: dict, dedupe_key: str, now: datetime) -> dict | None:
    """Send one message through `adapter` unless one with `dedupe_key` was already sent."""
    if tx.db.messages.find_one({"dedupe_key": dedupe_key}, {"_id": 1}, session=tx.session):
        metrics.MESSAGES.labels(channel, kind, "duplicate").inc()
        return None
    cost = adapter.cost(channel)
    message = {"id": new_id("msg"), "member_id": member_id, "campaign_id": campaign_id,
               "channel": channel, "kind": kind, "subject": content.get("subject", ""),
               "body": content.get("body", ""), "cost": cost, "dedupe_key": dedupe_key,
               "sent_at": now}
    adapter.send(tx, message)
    tx.emit("message_sent", domain.message_sent_event(message))
    metrics.MESSAGES.labels(channel, kind, "sent").inc()
    return message

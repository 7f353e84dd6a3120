"""The member service's MongoDB: collections, indexes and the queries and
atomic updates behind each use case (the shapes of answers: views.py). Every
function that writes takes the open transaction `tx` (state and outbox commit
together).

Collections:
- members          profile (personal data), consent, tier, points balance, order counters
- consent_history  append-only: every consent change with its time
- ledger           append-only points entries (earn, redeem, expire, reverse)
- point_lots       what each earn left spendable, FIFO-consumed, expired by the timer
- orders           order facts from order events: paid total, refunds, points earned/reversed
"""
from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument

from services.member import domain, metrics
from services.member.config import MemberConfig
from shared.clock import as_utc
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.ids import new_id

INDEXES = {
    "members": [
        # Uniqueness on the normalised email; erased members drop theirs.
        IndexModel([("email_norm", ASCENDING)], name="email_unique", unique=True,
                   partialFilterExpression={"email_norm": {"$type": "string"}}),
        IndexModel([("erased", ASCENDING), ("last_order_at", ASCENDING)], name="by_last_order"),
        IndexModel([("erased", ASCENDING), ("registered_at", ASCENDING)], name="by_registration"),
        IndexModel([("tier_review_at", ASCENDING)], name="tier_review",
                   partialFilterExpression={"tier_review_at": {"$type": "date"}}),
        IndexModel([("consent.email.granted", ASCENDING), ("_id", ASCENDING)], name="contact_email"),
        IndexModel([("consent.sms.granted", ASCENDING), ("_id", ASCENDING)], name="contact_sms"),
    ],
    "consent_history": [IndexModel([("member_id", ASCENDING), ("at", ASCENDING)])],
    "ledger": [
        IndexModel([("member_id", ASCENDING), ("at", DESCENDING)], name="by_member"),
        # The idempotency key of each movement: earn:<order>, reverse:<order>:<n>,
        # redeem:<member>:<request>, expire:<lot>.
        IndexModel([("key", ASCENDING)], name="key_unique", unique=True,
                   partialFilterExpression={"key": {"$type": "string"}}),
    ],
    "point_lots": [
        IndexModel([("member_id", ASCENDING), ("expires_at", ASCENDING)], name="by_member_expiry"),
        IndexModel([("expires_at", ASCENDING)], name="expiring",
                   partialFilterExpression={"remaining": {"$gt": 0}}),
    ],
    "orders": [IndexModel([("member_id", ASCENDING), ("paid_at", ASCENDING)], name="by_member_paid")],
}


# Every change of a member that an event announces (and a profile update, whose fields
# get_member returns) moves the member's `version` by one in the same update; the event
# carries the version of its own change, and read models elsewhere keep the highest
# (shared/storage/readmodel.py). Order counters (orders_count, spend) carry no version: no event
# announces them as state.
BUMP = {"version": 1}


# --------------------------------------------------------------------------- members

def get_member_doc(db, member_id: str, session=None) -> dict:
    doc = db.members.find_one({"_id": member_id}, session=session)
    if doc is None:
        raise NotFound(f"member {member_id} not found", {"member_id": member_id})
    return doc


def live_member_doc(db, member_id: str, session=None) -> dict:
    """A member that still exists as a person (not erased)."""
    doc = get_member_doc(db, member_id, session)
    if doc.get("erased"):
        raise Conflict("member was erased", {"member_id": member_id, "fields": {"member_id": ["erased"]}})
    return doc


def email_taken(db, email_norm: str, session=None, except_id: str | None = None) -> bool:
    query: dict = {"email_norm": email_norm}
    if except_id:
        query["_id"] = {"$ne": except_id}
    return db.members.count_documents(query, limit=1, session=session) > 0


def duplicate_email() -> Conflict:
    # Never echo the address: errors are logged.
    return Conflict("email already registered", {"fields": {"email": ["already registered"]}})


def new_member_doc(data: dict, member_id: str, now: datetime, base_tier: str) -> dict:
    consent = {ch: {"granted": bool(data["consent"].get(ch, False)), "at": now}
               for ch in ("email", "sms")}
    return {
        "_id": member_id,
        "email": data["email"],
        "email_norm": domain.normalise_email(data["email"]),
        "name": data["name"],
        "phone": data.get("phone"),
        "birth_year": data.get("birth_year"),
        "gender": data.get("gender"),
        "region": data.get("region"),
        "interests": domain.normalise_interests(data.get("interests") or []),
        "consent": consent,
        "tier": base_tier,
        "tier_changed_at": now,
        "tier_review_at": None,
        "points_balance": 0,
        "orders_count": 0,
        "net_spend": 0,
        "first_order_at": None,
        "last_order_at": None,
        "registered_at": now,
        "updated_at": now,
        "erased": False,
        "erased_at": None,
        "version": 1,
    }


def window_orders(db, member_id: str, now: datetime, config: MemberConfig, session=None):
    start = domain.window_start(now, config.tiers.window)
    return [domain.PaidOrder(as_utc(o["paid_at"]), o["total"], o.get("refunded", 0))
            for o in db.orders.find({"member_id": member_id, "paid": True, "paid_at": {"$gt": start}},
                                    {"paid_at": 1, "total": 1, "refunded": 1}, session=session)]


def record_consent(tx, member_id: str, channel: str, granted: bool, now: datetime, source: str) -> None:
    tx.db.consent_history.insert_one({"_id": new_id("cns"), "member_id": member_id, "channel": channel,
                                      "granted": granted, "at": now, "source": source},
                                     session=tx.session)


def consent_history(db, member_id: str) -> list[dict]:
    return list(db.consent_history.find({"member_id": member_id}).sort([("at", 1), ("_id", 1)]))


def erase(tx, member_id: str, now: datetime) -> int | None:
    """Irreversibly drop the member's personal data; keep the anonymous
    account (tier, balance, counters) and the ledger. The member's version after
    the erasure, None if already erased."""
    nulls = {field: None for field in domain.PERSONAL_FIELDS}
    nulls["interests"] = []
    erased = tx.db.members.find_one_and_update(
        {"_id": member_id, "erased": False},
        {"$set": {**nulls, "erased": True, "erased_at": now, "updated_at": now,
                  "consent": {ch: {"granted": False, "at": now} for ch in ("email", "sms")}},
         "$unset": {"email_norm": ""}, "$inc": BUMP},
        projection={"version": 1}, return_document=ReturnDocument.AFTER, session=tx.session)
    if erased is None:
        return None
    for ch in ("email", "sms"):
        record_consent(tx, member_id, ch, False, now, "erasure")
    # Our own outbox keeps published envelopes a day: redact the persona fields
    # member_registered carried, so nothing about the person stays here.
    tx.db.outbox.update_many(
        {"envelope.data.member_id": member_id, "event_type": "member_registered"},
        {"$set": {"envelope.data.region": None, "envelope.data.gender": None,
                  "envelope.data.birth_year": None, "envelope.data.interests": []}},
        session=tx.session)
    return erased["version"]


# --------------------------------------------------------------------------- points

def _append(tx, member_id: str, kind: str, points: int, balance: int, now: datetime, key: str,
            order_id: str | None = None, reason: str | None = None, request_id: str | None = None) -> dict:
    entry = {"_id": new_id("pts"), "member_id": member_id, "kind": kind, "points": points,
             "balance": balance, "order_id": order_id, "reason": reason, "request_id": request_id,
             "key": key, "at": now}
    tx.db.ledger.insert_one(entry, session=tx.session)
    metrics.POINTS.labels(kind).inc(abs(points))
    return entry


def _consume_lots(tx, member_id: str, points: int, now: datetime, first_order: str | None = None) -> int:
    """Take `points` from the member's spendable lots, the given order's lot
    first, then the soonest to expire. Returns what the lots could not cover."""
    query = {"member_id": member_id, "remaining": {"$gt": 0}, "expires_at": {"$gt": now}}
    lots = list(tx.db.point_lots.find(query, {"remaining": 1, "order_id": 1, "expires_at": 1},
                                      session=tx.session).sort([("expires_at", 1), ("_id", 1)]))
    if first_order:
        lots.sort(key=lambda lot: lot.get("order_id") != first_order)
    takes, left = domain.plan_consumption([(lot["_id"], lot["remaining"]) for lot in lots], points)
    for lot_id, take in takes:
        # Serialised by the member's balance update in the same transaction.
        tx.db.point_lots.update_one({"_id": lot_id}, {"$inc": {"remaining": -take}}, session=tx.session)
    return left


def earn(tx, member_id: str, points: int, order_id: str, now: datetime, config: MemberConfig) -> dict:
    after = tx.db.members.find_one_and_update({"_id": member_id},
                                              {"$inc": {"points_balance": points, **BUMP}},
                                              return_document=ReturnDocument.AFTER, session=tx.session)
    balance = after["points_balance"]
    remaining = domain.lot_remaining_after_earn(points, balance - points)
    tx.db.point_lots.insert_one({"_id": new_id("lot"), "member_id": member_id, "order_id": order_id,
                                 "points": points, "remaining": remaining, "earned_at": now,
                                 "expires_at": config.points.expires_at(now)}, session=tx.session)
    entry = _append(tx, member_id, "earn", points, balance, now, f"earn:{order_id}", order_id=order_id)
    tx.emit("points_earned", domain.points_event(member_id, points, after, order_id))
    return entry


def reverse(tx, member_id: str, points: int, order_id: str, sequence: int, now: datetime) -> dict:
    """Take back points an order earned. The balance may go negative when they
    were already spent (a debt the next earn pays back first)."""
    after = tx.db.members.find_one_and_update({"_id": member_id},
                                              {"$inc": {"points_balance": -points, **BUMP}},
                                              return_document=ReturnDocument.AFTER, session=tx.session)
    _consume_lots(tx, member_id, points, now, first_order=order_id)
    balance = after["points_balance"]
    entry = _append(tx, member_id, "reverse", -points, balance, now, f"reverse:{order_id}:{sequence}",
                    order_id=order_id)
    tx.emit("points_reversed", domain.points_event(member_id, points, after, order_id))
    return entry


def redeem_key(member_id: str, request_id: str) -> str:
    return f"redeem:{member_id}:{request_id}"


def find_redeem(db, member_id: str, request_id: str, session=None) -> dict | None:
    return db.ledger.find_one({"key": redeem_key(member_id, request_id)}, session=session)


def redeem(tx, member_id: str, points: int, reason: str, request_id: str | None, now: datetime) -> dict:
    """Spend points: one conditional $inc guarded by the balance, so concurrent
    redemptions can never take the balance below zero."""
    after = tx.db.members.find_one_and_update(
        {"_id": member_id, "erased": False, "points_balance": {"$gte": points}},
        {"$inc": {"points_balance": -points, **BUMP}},
        return_document=ReturnDocument.AFTER, session=tx.session)
    if after is None:
        doc = live_member_doc(tx.db, member_id, tx.session)
        raise ValidationFailed("points: more than the balance",
                               {"fields": {"points": [f"exceeds the balance of {doc['points_balance']}"]},
                                "balance": doc["points_balance"]})
    _consume_lots(tx, member_id, points, now)
    key = redeem_key(member_id, request_id) if request_id else f"redeem:{member_id}:{new_id('req')}"
    entry = _append(tx, member_id, "redeem", -points, after["points_balance"], now, key,
                    reason=reason, request_id=request_id)
    tx.emit("points_redeemed", domain.points_event(member_id, points, after))
    return entry


def due_lots(db, now: datetime, limit: int) -> list[str]:
    query = {"remaining": {"$gt": 0}, "expires_at": {"$lte": now}}
    return [lot["_id"] for lot in db.point_lots.find(query, {"_id": 1}).sort("expires_at", 1).limit(limit)]


def expire_lot(tx, lot_id: str, now: datetime) -> int:
    """Expire what is left of one lot; claimed by a conditional update so two
    replicas never expire it twice. Returns the points expired (0 if none)."""
    before = tx.db.point_lots.find_one_and_update(
        {"_id": lot_id, "remaining": {"$gt": 0}, "expires_at": {"$lte": now}},
        {"$set": {"remaining": 0, "expired_at": now}},
        return_document=ReturnDocument.BEFORE, session=tx.session)
    if before is None:
        return 0
    points = before["remaining"]
    member_id = before["member_id"]
    after = tx.db.members.find_one_and_update({"_id": member_id},
                                              {"$inc": {"points_balance": -points, **BUMP}},
                                              return_document=ReturnDocument.AFTER, session=tx.session)
    _append(tx, member_id, "expire", -points, after["points_balance"], now, f"expire:{lot_id}")
    tx.emit("points_expired", domain.points_event(member_id, points, after))
    return points


def latest_ledger_entries(db, member_id: str, limit: int) -> list[dict]:
    return list(db.ledger.find({"member_id": member_id}).sort([("at", -1), ("_id", -1)]).limit(limit))


def expiring_lots(db, member_id: str, now: datetime, limit: int = 10) -> list[dict]:
    return list(db.point_lots.find({"member_id": member_id, "remaining": {"$gt": 0},
                                    "expires_at": {"$gt": now}}).sort("expires_at", 1).limit(limit))


# --------------------------------------------------------------------------- orders, spend, tiers

def upsert_order(tx, order_id: str, member_id: str) -> dict:
    return tx.db.orders.find_one_and_update(
        {"_id": order_id},
        {"$setOnInsert": {"member_id": member_id, "paid": False, "paid_at": None, "total": None,
                          "refunded": 0, "refund_ids": [], "earned": None, "reversed": 0,
                          "reversals": 0, "counted_net": 0, "counted_order": False}},
        upsert=True, return_document=ReturnDocument.AFTER, session=tx.session)


def mark_paid(tx, order: dict, total: int, merchandise: int, paid_at: datetime) -> dict:
    """Record the order as paid (order_paid or, if that never arrived, order_completed).
    The earliest time seen wins; the total is recorded once."""
    update: dict = {"$min": {"paid_at": paid_at}} if order.get("paid_at") else {"$set": {"paid_at": paid_at}}
    if not order["paid"]:
        update.setdefault("$set", {}).update({"paid": True, "total": total, "merchandise": merchandise})
    return tx.db.orders.find_one_and_update({"_id": order["_id"]}, update,
                                            return_document=ReturnDocument.AFTER, session=tx.session)


def add_refund(tx, order: dict, refund_id: str, amount: int) -> dict | None:
    """Add a refund once per refund id; None if it was already counted."""
    return tx.db.orders.find_one_and_update(
        {"_id": order["_id"], "refund_ids": {"$ne": refund_id}},
        {"$inc": {"refunded": amount}, "$push": {"refund_ids": refund_id}},
        return_document=ReturnDocument.AFTER, session=tx.session)


def sync_counters(tx, order: dict, member: dict | None) -> dict:
    """Bring the member's lifetime counters in line with this order's net
    paid amount (idempotent: the order remembers what it contributed)."""
    paid = order["paid"]
    net = max(0, (order["total"] or 0) - order["refunded"]) if paid else 0
    counted = paid and net > 0
    delta_spend = net - order["counted_net"]
    delta_orders = int(counted) - int(order["counted_order"])
    order = tx.db.orders.find_one_and_update(
        {"_id": order["_id"]}, {"$set": {"counted_net": net, "counted_order": counted}},
        return_document=ReturnDocument.AFTER, session=tx.session)
    if member is not None:
        update: dict = {"$inc": {"net_spend": delta_spend, "orders_count": delta_orders}}
        if paid:
            update["$max"] = {"last_order_at": order["paid_at"]}
            update["$min"] = {"first_order_at": order["paid_at"]}
        if member.get("last_order_at") is None and paid:
            update.pop("$max")
            update.pop("$min")
            update["$set"] = {"last_order_at": order["paid_at"], "first_order_at": order["paid_at"]}
        tx.db.members.update_one({"_id": member["_id"]}, update, session=tx.session)
    return order


def refresh_tier(tx, member_id: str, now: datetime, config: MemberConfig) -> str | None:
    """Recompute the tier from paid spend in the rolling window; on a change,
    update it conditionally and emit tier_changed. Returns the new tier or None."""
    member = tx.db.members.find_one({"_id": member_id}, session=tx.session)
    if member is None:
        return None
    orders = window_orders(tx.db, member_id, now, config, tx.session)
    spend = domain.window_spend(orders, now, config.tiers.window)
    review_at = domain.next_review_at(orders, now, config.tiers.window)
    new = config.tiers.tier_for(spend)
    old = member["tier"]
    changes: dict = {"tier_review_at": review_at}
    changed = new.name != old and not member.get("erased")
    if changed:
        changes.update({"tier": new.name, "tier_changed_at": now})
    if not changed:
        tx.db.members.update_one({"_id": member_id, "tier": old}, {"$set": changes}, session=tx.session)
        return None
    after = tx.db.members.find_one_and_update({"_id": member_id, "tier": old},
                                              {"$set": changes, "$inc": BUMP}, projection={"version": 1},
                                              return_document=ReturnDocument.AFTER, session=tx.session)
    if after is None:
        return None
    direction = config.tiers.direction(old, new.name)
    tx.emit("tier_changed", domain.tier_changed_event(member_id, old, new, direction, spend,
                                                     after["version"]))
    metrics.TIER_CHANGES.labels(direction).inc()
    return new.name


def members_due_for_review(db, now: datetime, limit: int) -> list[str]:
    return [m["_id"] for m in db.members.find({"tier_review_at": {"$lte": now}}, {"_id": 1})
            .sort("tier_review_at", 1).limit(limit)]


# --------------------------------------------------------------------------- segments and contacts

def segment_query(name: str, now: datetime, config: MemberConfig) -> dict:
    """The members query equal to domain.segment_of(...) == name at `now`."""
    cut = config.segments.cutoffs(now)
    never = {"last_order_at": None}
    if name == "new":
        return {"erased": False, **never, "registered_at": {"$gte": cut["new"]}}
    if name == "active":
        return {"erased": False, "last_order_at": {"$gte": cut["active"]}}
    if name == "at_risk":
        ordered = {"last_order_at": {"$gte": cut["at_risk"], "$lt": cut["active"]}}
        unordered = {**never, "registered_at": {"$gte": cut["at_risk"], "$lt": cut["new"]}}
    elif name == "dormant":
        ordered = {"last_order_at": {"$gte": cut["dormant"], "$lt": cut["at_risk"]}}
        unordered = {**never, "registered_at": {"$gte": cut["dormant"], "$lt": cut["at_risk"]}}
    else:  # churned
        ordered = {"last_order_at": {"$lt": cut["dormant"]}}
        unordered = {**never, "registered_at": {"$lt": cut["dormant"]}}
    return {"erased": False, "$or": [ordered, unordered]}


SEGMENT_FIELDS = {"registered_at": 1, "last_order_at": 1, "orders_count": 1, "net_spend": 1, "tier": 1}


def segment_page(db, name: str, page: int, page_size: int, now: datetime,
                 config: MemberConfig) -> tuple[list[dict], int]:
    """One page of the members in segment `name` (SEGMENT_FIELDS only) and the segment's size."""
    query = segment_query(name, now, config)
    docs = db.members.find(query, SEGMENT_FIELDS).sort("_id", 1).skip((page - 1) * page_size).limit(page_size)
    return list(docs), db.members.count_documents(query)


def list_contactable(db, channel: str, member_ids: list[str] | None, page: int, page_size: int) -> dict:
    query: dict = {f"consent.{channel}.granted": True, "erased": False}
    if member_ids is not None:
        query["_id"] = {"$in": member_ids}
    docs = db.members.find(query, {"tier": 1}).sort("_id", 1).skip((page - 1) * page_size).limit(page_size)
    return {"channel": channel, "page": page, "page_size": page_size,
            "total": db.members.count_documents(query),
            "items": [{"member_id": d["_id"], "tier": d["tier"]} for d in docs]}

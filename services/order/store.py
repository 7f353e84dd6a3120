"""The order service's MongoDB: orders, refunds, the product and member read models,
and the sandbox provider's books.

Orders are stored as the domain's dict with `_id` = `id`; every save bumps `version`
and is conditional on the version read (optimistic concurrency on top of the
transaction's write-conflict detection). ISO timestamps use one fixed format
(`shared.clock.to_iso`), so they sort and compare as strings."""
from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument

from services.order.domain import states
from shared.clock import to_iso
from shared.errors import Conflict, NotFound

REDACTED = "[redacted]"  # what is left of a member's free text after erasure

INDEXES = {
    "orders": [
        # Retries of place_order with the same key find (and never duplicate) the order.
        IndexModel([("member_id", ASCENDING), ("idempotency_key", ASCENDING)], unique=True,
                   name="idempotency", partialFilterExpression={"idempotency_key": {"$type": "string"}}),
        IndexModel([("member_id", ASCENDING), ("placed_at", DESCENDING)]),
        IndexModel([("status", ASCENDING), ("placed_at", DESCENDING)]),
        IndexModel([("placed_at", DESCENDING)]),
        IndexModel([("payment.state", ASCENDING), ("payment.next_attempt_at", ASCENDING)],
                   partialFilterExpression={"payment.state": "due"}, name="payment_due"),
    ],
    "refunds": [
        IndexModel([("order_id", ASCENDING)]),
        IndexModel([("state", ASCENDING), ("next_attempt_at", ASCENDING)],
                   partialFilterExpression={"state": "pending"}, name="refund_due"),
    ],
    "products": [],
    "members": [],
}


def _load(doc: dict | None) -> dict | None:
    if doc is None:
        return None
    doc = dict(doc)
    doc["id"] = doc.pop("_id")
    return doc


class OrderRepo:
    def __init__(self, db, session=None):
        self.db = db
        self.session = session

    def find(self, order_id: str) -> dict | None:
        return _load(self.db.orders.find_one({"_id": order_id}, session=self.session))

    def get(self, order_id: str) -> dict:
        order = self.find(order_id)
        if order is None:
            raise NotFound(f"no order {order_id}", {"order_id": order_id})
        return order

    def by_idempotency_key(self, member_id: str, key: str) -> dict | None:
        return _load(self.db.orders.find_one({"member_id": member_id, "idempotency_key": key},
                                             session=self.session))

    def insert(self, order: dict) -> None:
        doc = {k: v for k, v in order.items() if k != "id"}
        self.db.orders.insert_one({"_id": order["id"], **doc}, session=self.session)

    def save(self, order: dict) -> None:
        version = order.get("version", 0)
        doc = {k: v for k, v in order.items() if k != "id"}
        doc["version"] = version + 1
        result = self.db.orders.replace_one({"_id": order["id"], "version": version}, doc,
                                            session=self.session)
        if result.matched_count != 1:
            raise Conflict("the order changed meanwhile; retry", {"order_id": order["id"]})
        order["version"] = version + 1

    # -- payment attempts -------------------------------------------------------------
    def claim_payment(self, order_id: str, now: datetime, lease_until: datetime) -> dict | None:
        """Take the lease of a due capture attempt (one replica wins) and count the attempt."""
        doc = self.db.orders.find_one_and_update(
            {"_id": order_id, "status": states.CONFIRMED, "payment.state": "due",
             "payment.next_attempt_at": {"$lte": now},
             "$or": [{"payment.lease_until": None}, {"payment.lease_until": {"$lte": now}}]},
            {"$set": {"payment.lease_until": lease_until}, "$inc": {"payment.attempts": 1, "version": 1}},
            return_document=ReturnDocument.AFTER)
        return _load(doc)

    def payments_due(self, now: datetime, limit: int = 100) -> list[str]:
        cursor = self.db.orders.find(
            {"payment.state": "due", "status": states.CONFIRMED,
             "payment.next_attempt_at": {"$lte": now},
             "$or": [{"payment.lease_until": None}, {"payment.lease_until": {"$lte": now}}]},
            {"_id": 1}).sort("payment.next_attempt_at", 1).limit(limit)
        return [doc["_id"] for doc in cursor]

    def expiry_candidates(self, placed_before: str, limit: int = 200) -> list[str]:
        cursor = self.db.orders.find(
            {"status": {"$in": [states.PENDING, states.CONFIRMED]}, "placed_at": {"$lte": placed_before}},
            {"_id": 1}).sort("placed_at", 1).limit(limit)
        return [doc["_id"] for doc in cursor]

    def list(self, *, member_id=None, status=None, since=None, until=None, page=1, page_size=20):
        query: dict = {}
        if member_id:
            query["member_id"] = member_id
        if status:
            query["status"] = status
        if since or until:
            query["placed_at"] = {}
            if since:
                query["placed_at"]["$gte"] = to_iso(since)
            if until:
                query["placed_at"]["$lt"] = to_iso(until)
        total = self.db.orders.count_documents(query)
        cursor = self.db.orders.find(query).sort([("placed_at", DESCENDING), ("_id", DESCENDING)]) \
            .skip((page - 1) * page_size).limit(page_size)
        return [_load(doc) for doc in cursor], total

    def redact_member(self, member_id: str) -> int:
        result = self.db.orders.update_many(
            {"member_id": member_id, "shipping_address.redacted": {"$ne": True}},
            {"$set": {"shipping_address.name": None, "shipping_address.line1": None,
                      "shipping_address.city": None, "shipping_address.postal_code": None,
                      "shipping_address.phone": None, "shipping_address.redacted": True},
             "$inc": {"version": 1}},
            session=self.session)
        # Free text the member wrote: a cancellation note, return reasons.
        self.db.orders.update_many({"member_id": member_id, "cancel_note": {"$ne": None}},
                                   {"$set": {"cancel_note": None}, "$inc": {"version": 1}},
                                   session=self.session)
        self.db.orders.update_many({"member_id": member_id, "returns.0": {"$exists": True}},
                                   {"$set": {"returns.$[].reason": REDACTED}, "$inc": {"version": 1}},
                                   session=self.session)
        # The outbox keeps published envelopes (order_paid carries the address,
        # return_requested the reason): redact them too.
        self.db.outbox.update_many(
            {"envelope.data.member_id": member_id, "envelope.data.shipping_address": {"$type": "object"}},
            {"$set": {f"envelope.data.shipping_address.{key}": None
                      for key in ("name", "line1", "city", "postal_code", "phone")}},
            session=self.session)
        self.db.outbox.update_many(
            {"envelope.data.member_id": member_id, "event_type": "return_requested"},
            {"$set": {"envelope.data.reason": REDACTED}}, session=self.session)
        return result.modified_count


class RefundRepo:
    def __init__(self, db, session=None):
        self.db = db
        self.session = session

    def insert(self, refund: dict) -> None:
        self.db.refunds.insert_one({"_id": refund["id"], **{k: v for k, v in refund.items() if k != "id"}},
                                   session=self.session)

    def of_order(self, order_id: str) -> list[dict]:
        return [_load(doc) for doc in self.db.refunds.find({"order_id": order_id}, session=self.session)
                .sort("requested_at", 1)]

    def claim(self, refund_id: str, now: datetime, lease_until: datetime) -> dict | None:
        return _load(self.db.refunds.find_one_and_update(
            {"_id": refund_id, "state": "pending", "next_attempt_at": {"$lte": now},
             "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}]},
            {"$set": {"lease_until": lease_until}, "$inc": {"attempts": 1}},
            return_document=ReturnDocument.AFTER))

    def due(self, now: datetime, limit: int = 100) -> list[str]:
        cursor = self.db.refunds.find(
            {"state": "pending", "next_attempt_at": {"$lte": now},
             "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}]}, {"_id": 1}).limit(limit)
        return [doc["_id"] for doc in cursor]

    def mark_done(self, refund_id: str, record: dict, now: datetime) -> bool:
        result = self.db.refunds.update_one(
            {"_id": refund_id, "state": "pending"},
            {"$set": {"state": "succeeded", "provider_record": record, "completed_at": to_iso(now),
                      "lease_until": None}},
            session=self.session)
        return result.modified_count == 1

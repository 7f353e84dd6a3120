"""Fulfillment's MongoDB collections, indexes and queries.

`Repo(db, session)` works inside a transaction (`tx.db`, `tx.session`) or,
with `session=None`, for reads. Updates that change a state carry the state
they expect in their filter, so a concurrent change makes them match nothing
(the caller turns that into a Conflict) instead of overwriting it."""
from __future__ import annotations

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument

from services.fulfillment.domain import shipments as shp
from services.fulfillment.domain import tickets as tkt
from shared.errors import NotFound

WAREHOUSES = "warehouses"
SHIPMENTS = "shipments"
RETURNS = "returns"
TICKETS = "tickets"
CANCELLED_ORDERS = "cancelled_orders"  # tombstones: order_cancelled before order_paid
ERASED_MEMBERS = "erased_members"

INDEXES = {
    WAREHOUSES: [IndexModel([("code", ASCENDING)], unique=True, name="code_unique"),
                 IndexModel([("active", ASCENDING), ("region", ASCENDING), ("priority", ASCENDING)])],
    SHIPMENTS: [
        # Exactly one shipment per order, whatever the delivery order of events.
        IndexModel([("order_id", ASCENDING)], unique=True, name="one_shipment_per_order"),
        # The SLA timer's query: undispatched, not yet flagged, by deadline.
        IndexModel([("dispatch_due_at", ASCENDING)], name="awaiting_dispatch_by_deadline",
                   partialFilterExpression={"status": shp.CREATED, "late": False}),
        IndexModel([("late", ASCENDING), ("status", ASCENDING), ("dispatch_due_at", ASCENDING)]),
        IndexModel([("status", ASCENDING), ("created_at", DESCENDING)]),
        IndexModel([("member_id", ASCENDING)]),
    ],
    RETURNS: [IndexModel([("order_id", ASCENDING)])],
    TICKETS: [
        IndexModel([("status", ASCENDING), ("opened_at", DESCENDING)]),
        IndexModel([("member_id", ASCENDING), ("opened_at", DESCENDING)]),
        IndexModel([("first_response_due_at", ASCENDING)], name="awaiting_response_by_deadline",
                   partialFilterExpression={"first_response_breached": None}),
        IndexModel([("resolution_due_at", ASCENDING)], name="awaiting_resolution_by_deadline",
                   partialFilterExpression={"resolution_breached": None}),
    ],
}


def page_of(cursor_factory, count: int, page: int, page_size: int, to_dict) -> dict:
    docs = cursor_factory().skip((page - 1) * page_size).limit(page_size)
    return {"items": [to_dict(d) for d in docs], "page": page, "page_size": page_size,
            "total": count}


class Repo:
    def __init__(self, db, session=None):
        self.db = db
        self.session = session

    def _c(self, name: str):
        return self.db[name]

    # --- warehouses -----------------------------------------------------------------
    def insert_warehouse(self, doc: dict) -> None:
        self._c(WAREHOUSES).insert_one(doc, session=self.session)

    def get_warehouse(self, warehouse_id: str) -> dict:
        doc = self._c(WAREHOUSES).find_one({"_id": warehouse_id}, session=self.session)
        if doc is None:
            raise NotFound(f"no warehouse {warehouse_id}", {"warehouse_id": warehouse_id})
        return doc

    def update_warehouse(self, warehouse_id: str, changes: dict) -> dict:
        doc = self._c(WAREHOUSES).find_one_and_update(
            {"_id": warehouse_id}, {"$set": changes}, return_document=ReturnDocument.AFTER,
            session=self.session)
        if doc is None:
            raise NotFound(f"no warehouse {warehouse_id}", {"warehouse_id": warehouse_id})
        return doc

    def active_warehouses(self) -> list[dict]:
        return list(self._c(WAREHOUSES).find({"active": True}, session=self.session))

    def list_warehouses(self, region, active, page, page_size) -> tuple:
        query: dict = {}
        if region is not None:
            query["region"] = region
        if active is not None:
            query["active"] = active
        coll = self._c(WAREHOUSES)
        return (lambda: coll.find(query).sort([("priority", ASCENDING), ("code", ASCENDING)]),
                coll.count_documents(query))

    # --- shipments -------------------------------------------------------------------
    def get_shipment(self, shipment_id: str) -> dict:
        doc = self._c(SHIPMENTS).find_one({"_id": shipment_id}, session=self.session)
        if doc is None:
            raise NotFound(f"no shipment {shipment_id}", {"shipment_id": shipment_id})
        return doc

    def shipment_for_order(self, order_id: str) -> dict | None:
        return self._c(SHIPMENTS).find_one({"order_id": order_id}, session=self.session)

    def insert_shipment(self, doc: dict) -> None:
        self._c(SHIPMENTS).insert_one(doc, session=self.session)

    def transition_shipment(self, shipment: dict, changes: dict, *, push: dict | None = None) -> dict | None:
        """Apply `changes` if the shipment is still in the state it was read in."""
        update: dict = {"$set": changes}
        if push:
            update["$push"] = push
        return self._c(SHIPMENTS).find_one_and_update(
            {"_id": shipment["_id"], "status": shipment["status"],
             "late": shipment.get("late", False)},
            update, return_document=ReturnDocument.AFTER, session=self.session)

    def add_tracking(self, shipment_id: str, entry: dict, now) -> dict | None:
        """Append a timeline entry unless the same one is there already (None then)."""
        return self._c(SHIPMENTS).find_one_and_update(
            {"_id": shipment_id, "timeline.key": {"$ne": entry["key"]}},
            {"$push": {"timeline": entry}, "$set": {"updated_at": now}},
            return_document=ReturnDocument.AFTER, session=self.session)

    def overdue_shipment_ids(self, now, limit: int) -> list[str]:
        cursor = self._c(SHIPMENTS).find(
            {"status": shp.CREATED, "late": False, "dispatch_due_at": {"$lt": now}},
            {"_id": 1}, session=self.session).sort("dispatch_due_at", ASCENDING).limit(limit)
        return [d["_id"] for d in cursor]

    def list_shipments(self, query: dict, sort_key: str) -> tuple:
        coll = self._c(SHIPMENTS)
        return lambda: coll.find(query).sort([(sort_key, ASCENDING), ("_id", ASCENDING)]), \
            coll.count_documents(query)

    def redact_shipments_of(self, member_id: str, redact, now) -> int:
        count = 0
        for doc in self._c(SHIPMENTS).find({"member_id": member_id}, {"shipping_address": 1},
                                           session=self.session):
            self._c(SHIPMENTS).update_one(
                {"_id": doc["_id"]},
                {"$set": {"shipping_address": redact(doc.get("shipping_address")),
                          "redacted_at": now}}, session=self.session)
            count += 1
        return count

    # --- tombstones ----------------------------------------------------------------------
    def cancellation_of(self, order_id: str) -> dict | None:
        return self._c(CANCELLED_ORDERS).find_one({"_id": order_id}, session=self.session)

    def record_cancellation(self, order_id: str, reason: str | None, now) -> None:
        self._c(CANCELLED_ORDERS).update_one(
            {"_id": order_id}, {"$setOnInsert": {"reason": reason, "at": now}}, upsert=True,
            session=self.session)

    def redact_returns_of(self, member_id: str, now) -> int:
        """The member's return reasons (free text) become `[redacted]`."""
        result = self._c(RETURNS).update_many(
            {"member_id": member_id, "reason": {"$nin": [None, "[redacted]"]}},
            {"$set": {"reason": "[redacted]", "redacted_at": now}}, session=self.session)
        return result.modified_count

    def is_erased(self, member_id: str) -> bool:
        return self._c(ERASED_MEMBERS).find_one({"_id": member_id}, session=self.session) is not None

    def record_erasure(self, member_id: str, now) -> None:
        self._c(ERASED_MEMBERS).update_one({"_id": member_id}, {"$setOnInsert": {"at": now}},
                                           upsert=True, session=self.session)

    # --- returns ----------------------------------------------------------------------
    def get_return(self, return_id: str) -> dict:
        doc = self._c(RETURNS).find_one({"_id": return_id}, session=self.session)
        if doc is None:
            raise NotFound(f"no return {return_id} is expected (return_requested not seen yet)",
                           {"return_id": return_id})
        return doc

    def expect_return(self, doc: dict) -> bool:
        """Record an expected return once; False if it was already recorded."""
        result = self._c(RETURNS).update_one({"_id": doc["_id"]}, {"$setOnInsert": doc},
                                             upsert=True, session=self.session)
        return result.upserted_id is not None

    def transition_return(self, record: dict, changes: dict) -> dict | None:
        return self._c(RETURNS).find_one_and_update(
            {"_id": record["_id"], "status": record["status"]}, {"$set": changes},
            return_document=ReturnDocument.AFTER, session=self.session)

    # --- tickets --------------------------------------------------------------------------
    def insert_ticket(self, doc: dict) -> None:
        self._c(TICKETS).insert_one(doc, session=self.session)

    def get_ticket(self, ticket_id: str) -> dict:
        doc = self._c(TICKETS).find_one({"_id": ticket_id}, session=self.session)
        if doc is None:
            raise NotFound(f"no ticket {ticket_id}", {"ticket_id": ticket_id})
        return doc

    def update_ticket(self, ticket: dict, changes: dict, *, push: dict | None = None) -> dict | None:
        update: dict = {"$set": changes}
        if push:
            update["$push"] = push
        return self._c(TICKETS).find_one_and_update(
            {"_id": ticket["_id"], "status": ticket["status"],
             "first_response_breached": ticket.get("first_response_breached"),
             "resolution_breached": ticket.get("resolution_breached")},
            update, return_document=ReturnDocument.AFTER, session=self.session)

    def tickets_past_deadline(self, now, limit: int) -> list[dict]:
        query = {"status": {"$ne": tkt.RESOLVED}, "$or": [
            {"first_response_at": None, "first_response_breached": None,
             "first_response_due_at": {"$lt": now}},
            {"resolution_breached": None, "resolution_due_at": {"$lt": now}}]}
        return list(self._c(TICKETS).find(query, session=self.session).limit(limit))

    def list_tickets(self, query: dict) -> tuple:
        coll = self._c(TICKETS)
        return (lambda: coll.find(query).sort([("opened_at", DESCENDING), ("_id", DESCENDING)]),
                coll.count_documents(query))

    def redact_tickets_of(self, member_id: str, now) -> int:
        count = 0
        for doc in self._c(TICKETS).find({"member_id": member_id}, {"messages": 1, "resolution": 1},
                                         session=self.session):
            changes = {"messages": tkt.redacted_messages(doc.get("messages", [])),
                       "redacted": True, "redacted_at": now}
            if doc.get("resolution") is not None:
                changes["resolution"] = tkt.REDACTED
            self._c(TICKETS).update_one({"_id": doc["_id"]}, {"$set": changes},
                                        session=self.session)
            count += 1
        return count

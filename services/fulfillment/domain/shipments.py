"""The shipment state machine and its dispatch SLA.

    created ──dispatch──▶ dispatched ──confirm_delivery──▶ delivered
       └──order_cancelled──▶ cancelled

A shipment is created once per paid order. `late` is a flag beside the state,
set once: by the SLA timer while the shipment waits past its dispatch
deadline, or at dispatch when that happens after the deadline."""
from __future__ import annotations

from datetime import datetime, timedelta

from services.fulfillment.domain import Event
from services.fulfillment.domain.allocation import Allocation
from shared.clock import to_iso
from shared.errors import Conflict

CREATED = "created"
DISPATCHED = "dispatched"
DELIVERED = "delivered"
CANCELLED = "cancelled"
STATUSES = (CREATED, DISPATCHED, DELIVERED, CANCELLED)

REDACTED = "[redacted]"
ADDRESS_PERSONAL_FIELDS = ("name", "line1", "line2", "city", "postal_code", "phone", "country",
                           "email")


def merge_lines(lines: list[dict]) -> list[dict]:
    """Order lines → one `{product_id, quantity}` per product, in first-seen order."""
    totals: dict[str, int] = {}
    for line in lines:
        totals[line["product_id"]] = totals.get(line["product_id"], 0) + int(line["quantity"])
    return [{"product_id": pid, "quantity": qty} for pid, qty in totals.items()]


def redact_address(address: dict | None) -> dict:
    """Keep the region (coarse, needed for allocation and KPIs); drop the rest."""
    address = dict(address or {})
    kept = {"region": address.get("region")}
    for key in address:
        if key != "region":
            kept[key] = None
    kept["redacted"] = True
    return kept


def _ref(shipment: dict) -> dict:
    return {"shipment_id": shipment["_id"], "order_id": shipment["order_id"]}


def _history(status: str, now: datetime) -> dict:
    return {"status": status, "at": now}


def new_shipment(shipment_id: str, order: dict, allocation: Allocation, *, paid_at: datetime,
                 now: datetime, dispatch_sla: timedelta,
                 member_erased: bool = False) -> tuple[dict, list[Event]]:
    """A shipment for a paid order (the `order_paid` data), allocated to a warehouse."""
    address = order.get("shipping_address") or {}
    if member_erased:
        address = redact_address(address)
    due = paid_at + dispatch_sla
    lines = merge_lines(order["lines"])
    doc = {
        "_id": shipment_id, "order_id": order["order_id"], "member_id": order["member_id"],
        "status": CREATED, "warehouse_id": allocation.warehouse_id,
        "warehouse_code": allocation.warehouse_code, "allocation_rule": allocation.rule,
        "region": address.get("region"), "shipping_address": address, "lines": lines,
        "paid_at": paid_at, "dispatch_due_at": due, "created_at": now, "updated_at": now,
        "carrier": None, "tracking_number": None, "dispatched_at": None, "delivered_at": None,
        "cancelled_at": None, "cancel_reason": None, "late": False, "late_at": None,
        "timeline": [], "history": [_history(CREATED, now)],
    }
    data = {**_ref(doc), "warehouse_id": allocation.warehouse_id, "member_id": doc["member_id"],
            "dispatch_due_at": to_iso(due), "lines": lines}
    if doc["region"]:
        data["region"] = doc["region"]
    return doc, [("shipment_created", data)]


def cancelled_before_paid(shipment_id: str, order: dict, *, reason: str | None, paid_at: datetime,
                          now: datetime, member_erased: bool = False) -> tuple[dict, list[Event]]:
    """`order_paid` arrived after `order_cancelled` (tombstone): the shipment is
    recorded as cancelled at once, never allocated, and only `shipment_cancelled`
    is published (no `shipment_created`: the order must not move to fulfilling)."""
    address = order.get("shipping_address") or {}
    if member_erased:
        address = redact_address(address)
    doc = {
        "_id": shipment_id, "order_id": order["order_id"], "member_id": order["member_id"],
        "status": CANCELLED, "warehouse_id": None, "warehouse_code": None,
        "allocation_rule": None, "region": address.get("region"), "shipping_address": address,
        "lines": merge_lines(order["lines"]), "paid_at": paid_at, "dispatch_due_at": None,
        "created_at": now, "updated_at": now, "carrier": None, "tracking_number": None,
        "dispatched_at": None, "delivered_at": None, "cancelled_at": now,
        "cancel_reason": reason, "late": False, "late_at": None, "timeline": [],
        "history": [_history(CANCELLED, now)],
    }
    data = _ref(doc)
    if reason:
        data["reason"] = reason
    return doc, [("shipment_cancelled", data)]


def dispatch(shipment: dict, carrier: str, tracking_number: str,
             now: datetime) -> tuple[dict, list[Event]]:
    """created → dispatched. Dispatching twice, or a cancelled shipment, is a Conflict."""
    status = shipment["status"]
    if status != CREATED:
        raise Conflict(f"shipment {shipment['_id']} is {status}, only a created shipment can be "
                       "dispatched", {"shipment_id": shipment["_id"], "status": status})
    changes = {"status": DISPATCHED, "carrier": carrier, "tracking_number": tracking_number,
               "dispatched_at": now, "updated_at": now}
    events: list[Event] = []
    late_now = is_overdue(shipment, now) and not shipment.get("late")
    if late_now:
        changes.update(late=True, late_at=now)
        events.append(("shipment_late", _late_data(shipment)))
    events.append(("shipment_dispatched", {
        **_ref(shipment), "carrier": carrier, "tracking_number": tracking_number,
        "lines": shipment["lines"], "warehouse_id": shipment["warehouse_id"],
        "late": bool(shipment.get("late") or late_now)}))
    return changes, events


def deliver(shipment: dict, now: datetime) -> tuple[dict, list[Event]]:
    """dispatched → delivered. Before dispatch (or twice) it is a Conflict."""
    status = shipment["status"]
    if status != DISPATCHED:
        raise Conflict(f"shipment {shipment['_id']} is {status}, only a dispatched shipment can "
                       "be delivered", {"shipment_id": shipment["_id"], "status": status})
    changes = {"status": DELIVERED, "delivered_at": now, "updated_at": now}
    return changes, [("shipment_delivered", _ref(shipment))]


def cancel(shipment: dict, reason: str | None, now: datetime) -> tuple[dict, list[Event]] | None:
    """created → cancelled on `order_cancelled`. Already cancelled: nothing to do.
    Dispatched or delivered: the goods left; nothing to do here (None)."""
    if shipment["status"] != CREATED:
        return None
    changes = {"status": CANCELLED, "cancelled_at": now, "cancel_reason": reason, "updated_at": now}
    data = _ref(shipment)
    if reason:
        data["reason"] = reason
    return changes, [("shipment_cancelled", data)]


def is_overdue(shipment: dict, now: datetime) -> bool:
    due = shipment.get("dispatch_due_at")
    return due is not None and now > due


def flag_late(shipment: dict, now: datetime) -> tuple[dict, list[Event]] | None:
    """The SLA timer's rule: still waiting for dispatch after the deadline, and
    not flagged yet → flag it once. Otherwise None."""
    if shipment["status"] != CREATED or shipment.get("late") or not is_overdue(shipment, now):
        return None
    return {"late": True, "late_at": now, "updated_at": now}, [("shipment_late",
                                                                _late_data(shipment))]


def _late_data(shipment: dict) -> dict:
    data = _ref(shipment)
    if shipment.get("dispatch_due_at") is not None:
        data["dispatch_due_at"] = to_iso(shipment["dispatch_due_at"])
    if shipment.get("warehouse_id"):
        data["warehouse_id"] = shipment["warehouse_id"]
    return data


def tracking_entry(shipment: dict, event: dict, now: datetime) -> dict:
    """A carrier timeline entry. Only a shipment that left the warehouse has a
    carrier timeline; the same entry twice (a carrier re-sending) is kept once
    (its `key`)."""
    status = shipment["status"]
    if status not in (DISPATCHED, DELIVERED):
        raise Conflict(f"shipment {shipment['_id']} is {status}: tracking starts at dispatch",
                       {"shipment_id": shipment["_id"], "status": status})
    occurred_at = event.get("occurred_at") or now
    entry = {"status": event["status"], "location": event.get("location"),
             "description": event.get("description"), "occurred_at": occurred_at,
             "recorded_at": now}
    entry["key"] = "|".join([entry["status"], entry["location"] or "", to_iso(occurred_at)])
    return entry


def sorted_timeline(timeline: list[dict]) -> list[dict]:
    return sorted(timeline, key=lambda e: (e["occurred_at"], e["recorded_at"]))

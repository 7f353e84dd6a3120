"""The order aggregate as a plain dict, and the saga moves that act on it.

Each function mutates the order it is given and returns the events to emit as
(event_type, data); the caller stores the order and emits them in one transaction."""
from __future__ import annotations

from datetime import datetime, timedelta

from shared.clock import parse_iso, to_iso

from . import states
from .payment import event_lines, paid_event


class OrderRuleBroken(Exception):
    """A business rule refuses the request (mapped to a typed RPC error by the caller)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def new_order(order_id: str, member_id: str, priced: dict, *, currency: str, shipping_address: dict,
              payment: dict, coupon_code: str | None, idempotency_key: str | None,
              attribution: dict | None, now: datetime) -> dict:
    attribution = attribution or {}
    order = {
        "id": order_id,
        "member_id": member_id,
        "status": states.PENDING,
        "lines": [dict(line, returned_quantity=0, refund_reserved_quantity=0, refunded_quantity=0,
                       refunded_amount=0) for line in priced["lines"]],
        "subtotal": priced["subtotal"],
        "discount": priced["discount"],
        "discounts": priced["discounts"],
        "shipping_fee": priced["shipping_fee"],
        "total": priced["total"],
        "currency": currency,
        "coupon_code": coupon_code,
        "promotion_ids": priced["promotion_ids"],
        "attribution": {k: attribution.get(k) for k in ("session_id", "campaign_id", "referral_code")},
        "shipping_address": dict(shipping_address),
        "payment": {"method": payment.get("method", "card"), "token": payment["token"],
                    "state": "none", "attempts": 0, "next_attempt_at": None, "lease_until": None,
                    "ref": None, "last_error": None},
        "payments": [],
        "returns": [],
        "refunded_amount": 0,
        "idempotency_key": idempotency_key,
        "placed_at": to_iso(now),
        "updated_at": to_iso(now),
        "history": [{"status": states.PENDING, "at": to_iso(now), "cause": "placed"}],
        "timestamps": {states.PENDING: to_iso(now)},
        "version": 0,
    }
    return order


def placed_event(order: dict) -> dict:
    return {"order_id": order["id"], "member_id": order["member_id"], "lines": event_lines(order),
            "subtotal": order["subtotal"], "discount": order["discount"],
            "shipping_fee": order["shipping_fee"], "total": order["total"],
            "currency": order["currency"], "coupon_code": order["coupon_code"],
            "promotion_ids": order["promotion_ids"], "attribution": dict(order["attribution"])}


def confirm(order: dict, now: datetime) -> list[tuple]:
    """stock_reserved: pending → confirmed, and the first capture attempt falls due now."""
    entered = states.advance(order, states.CONFIRMED, now, "stock_reserved")
    if not entered:
        return []
    order["payment"].update(state="due", next_attempt_at=now, lease_until=None)
    return [("order_confirmed", {"order_id": order["id"]})]


def reject(order: dict, short_lines: list[dict], now: datetime) -> list[tuple]:
    """stock_reservation_failed: pending → rejected (terminal; marketing releases the coupon)."""
    if order["status"] != states.PENDING:
        return []  # confirmed orders ignore a late or contradictory failure; past states too
    states.advance(order, states.REJECTED, now, "stock_reservation_failed")
    short = [{"product_id": s["product_id"], "requested": s["requested"], "available": s["available"]}
             for s in short_lines]
    order["short_lines"] = short
    return [("order_rejected", {"order_id": order["id"], "reason": "insufficient_stock",
                                "short_lines": short})]


SHIPMENT_TARGETS = {"shipment_created": states.FULFILLING, "shipment_dispatched": states.SHIPPED,
                    "shipment_delivered": states.DELIVERED}


def shipment_progress(order: dict, event_type: str, now: datetime,
                      shipment: dict | None = None) -> list[tuple]:
    """shipment_created/dispatched/delivered: forward jumps allowed, the past ignored.
    An order not yet paid or already cancelled ignores shipment news."""
    if order["status"] in (states.PENDING, states.CONFIRMED, states.REJECTED, states.CANCELLED):
        return []
    if shipment:
        order.setdefault("shipment", {}).update({k: v for k, v in shipment.items() if v is not None})
    try:
        entered = states.advance(order, SHIPMENT_TARGETS[event_type], now, event_type)
    except states.IllegalTransition:
        return []
    events = []
    for state in entered:
        if state in (states.SHIPPED, states.DELIVERED):
            events.append((states.ANNOUNCED[state], {"order_id": order["id"]}))
        elif state == states.COMPLETED:
            events.append(("order_completed", {"order_id": order["id"], "member_id": order["member_id"],
                                               "total": order["total"], "currency": order["currency"],
                                               "lines": event_lines(order)}))
    return events


def cancel(order: dict, reason: str, now: datetime) -> tuple[list[tuple], dict | None]:
    """Cancel before dispatch. Returns the events and, for a paid order, the refund to make
    (the whole total, every line). Raises OrderRuleBroken when too late or mid-payment."""
    if order["status"] == states.CANCELLED:
        raise OrderRuleBroken("the order is already cancelled", "order_id")
    if not states.can_cancel(order["status"]):
        raise OrderRuleBroken(f"an order that is {order['status']} can no longer be cancelled",
                              "order_id")
    lease = order["payment"].get("lease_until")
    if order["status"] == states.CONFIRMED and lease is not None and lease > now:
        raise OrderRuleBroken("a payment attempt is in progress; try again shortly", "order_id")
    was_paid = order["status"] in (states.PAID, states.FULFILLING)
    states.advance(order, states.CANCELLED, now, reason)
    order["cancel_reason"] = reason
    if order["payment"]["state"] == "due":
        order["payment"]["state"] = "abandoned"
    events = [("order_cancelled", {"order_id": order["id"], "member_id": order["member_id"],
                                   "reason": reason, "was_paid": was_paid})]
    refund = None
    if was_paid:
        lines = []
        for line in order["lines"]:
            left = line["quantity"] - line["refund_reserved_quantity"]
            if left <= 0:
                continue
            # Nothing of a cancelled (undispatched) order was returned before: all of it goes back.
            line["refund_reserved_quantity"] = line["quantity"]
            lines.append({"product_id": line["product_id"], "quantity": left,
                          "amount": line["line_total"]})
        refund = {"reason": "cancelled", "return_id": None, "lines": lines,
                  "amount": order["total"]}
    return events, refund


def expired(order: dict, now: datetime, ttl: timedelta) -> bool:
    """Whether a pending/confirmed order has outlived its time to be paid."""
    if order["status"] not in (states.PENDING, states.CONFIRMED):
        return False
    lease = order["payment"].get("lease_until")
    if lease is not None and lease > now:
        return False
    return parse_iso(order["placed_at"]) + ttl <= now


__all__ = ["OrderRuleBroken", "new_order", "placed_event", "confirm", "reject", "shipment_progress",
           "cancel", "expired", "paid_event"]

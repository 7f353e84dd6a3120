"""Returns (after-sales) and refunds.

- A return may be requested on a delivered/completed/partially refunded order within
  the return window (counted from delivery), for quantities not above bought minus
  already requested for return, per product.
- When the goods are received, the returned lines' paid amounts are refunded: each
  line's share is `pricing.refund_share` (its discount share taken off, cumulative
  rounding so the parts add up to the line's paid amount). The shipping fee is not
  refunded on returns (it is on cancellation, with the whole total).
- The order is `refunded` once every unit bought has been refunded, else
  `partially_refunded`.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from shared.clock import parse_iso, to_iso

from . import states
from .order import OrderRuleBroken
from .pricing import refund_share


def request_return(order: dict, return_id: str, lines: list[dict], reason: str, now: datetime,
                   window: timedelta) -> list[tuple]:
    if order["status"] not in states.RETURNABLE:
        raise OrderRuleBroken(f"an order that is {order['status']} cannot be returned", "order_id")
    delivered_at = (order.get("timestamps") or {}).get(states.DELIVERED)
    if delivered_at is None or parse_iso(delivered_at) + window < now:
        raise OrderRuleBroken("the return window has closed", "order_id")
    wanted: dict[str, int] = {}
    for line in lines:
        wanted[line["product_id"]] = wanted.get(line["product_id"], 0) + line["quantity"]
    by_product = {line["product_id"]: line for line in order["lines"]}
    for index, (product_id, quantity) in enumerate(wanted.items()):
        bought = by_product.get(product_id)
        if bought is None:
            raise OrderRuleBroken(f"product {product_id} is not in this order", f"lines.{index}")
        left = bought["quantity"] - bought["returned_quantity"]
        if quantity > left:
            raise OrderRuleBroken(f"only {left} of product {product_id} can still be returned",
                                  f"lines.{index}.quantity")
    for product_id, quantity in wanted.items():
        by_product[product_id]["returned_quantity"] += quantity
    merged = [{"product_id": p, "quantity": q} for p, q in wanted.items()]
    order["returns"].append({"id": return_id, "lines": merged, "reason": reason, "status": "requested",
                             "requested_at": to_iso(now), "received_at": None, "refund_id": None})
    order["updated_at"] = to_iso(now)
    return [("return_requested", {"return_id": return_id, "order_id": order["id"],
                                  "member_id": order["member_id"], "lines": merged,
                                  "reason": reason})]


def receive_return(order: dict, return_id: str, received: list[dict], refund_id: str,
                   now: datetime) -> dict | None:
    """return_received: reserve the refund of what came back (capped at what the return
    asked for). Returns the refund to make, or None (unknown return, or already received)."""
    ret = next((r for r in order["returns"] if r["id"] == return_id), None)
    if ret is None or ret["status"] != "requested":
        return None
    asked = {line["product_id"]: line["quantity"] for line in ret["lines"]}
    got: dict[str, int] = {}
    for line in received:
        if line["product_id"] in asked:
            got[line["product_id"]] = got.get(line["product_id"], 0) + line["quantity"]
    by_product = {line["product_id"]: line for line in order["lines"]}
    lines = []
    for product_id, quantity in got.items():
        quantity = min(quantity, asked[product_id])
        line = by_product[product_id]
        quantity = min(quantity, line["quantity"] - line["refund_reserved_quantity"])
        if quantity <= 0:
            continue
        amount = refund_share(line["line_total"], line["quantity"], line["refund_reserved_quantity"],
                              quantity)
        line["refund_reserved_quantity"] += quantity
        lines.append({"product_id": product_id, "quantity": quantity, "amount": amount})
    ret.update(status="received", received_at=to_iso(now), received_lines=[
        {"product_id": p, "quantity": q} for p, q in got.items()])
    if not lines:
        return None
    ret["refund_id"] = refund_id
    return {"reason": "return", "return_id": return_id, "lines": lines,
            "amount": sum(line["amount"] for line in lines)}


def complete_refund(order: dict, refund: dict, now: datetime) -> list[tuple]:
    """The provider paid the refund back: record it, move the status, announce it."""
    by_product = {line["product_id"]: line for line in order["lines"]}
    for line in refund["lines"]:
        target = by_product[line["product_id"]]
        target["refunded_quantity"] += line["quantity"]
        target["refunded_amount"] += line["amount"]
    order["refunded_amount"] = order.get("refunded_amount", 0) + refund["amount"]
    if refund.get("return_id"):
        for ret in order["returns"]:
            if ret["id"] == refund["return_id"]:
                ret["status"] = "refunded"
    if order["status"] != states.CANCELLED:
        everything = all(line["refunded_quantity"] >= line["quantity"] for line in order["lines"])
        target = states.REFUNDED if everything else states.PARTIALLY_REFUNDED
        states.advance(order, target, now, f"refund_{refund['reason']}")
    order["updated_at"] = to_iso(now)
    return [("order_refunded", {"refund_id": refund["id"], "order_id": order["id"],
                                "member_id": order["member_id"], "return_id": refund.get("return_id"),
                                "amount": refund["amount"], "currency": order["currency"],
                                "reason": refund["reason"], "lines": refund["lines"]})]

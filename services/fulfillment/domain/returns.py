"""Returns received at a warehouse: what was expected (from `return_requested`)
against what arrived, line by line, with each unit's condition.

    expected ──receive──▶ received      (once; a second receive is a Conflict)"""
from __future__ import annotations

from datetime import datetime

from services.fulfillment.domain import Event
from shared.errors import Conflict, ValidationFailed

EXPECTED = "expected"
RECEIVED = "received"
RESELLABLE = "resellable"
DAMAGED = "damaged"
CONDITIONS = (RESELLABLE, DAMAGED)


def expected_return(request: dict, now: datetime) -> dict:
    """The document recorded on `return_requested` (its `return_id` is the id)."""
    totals: dict[str, int] = {}
    for line in request["lines"]:
        totals[line["product_id"]] = totals.get(line["product_id"], 0) + int(line["quantity"])
    return {"_id": request["return_id"], "order_id": request["order_id"],
            "member_id": request["member_id"], "reason": request.get("reason"),
            "status": EXPECTED,
            "expected_lines": [{"product_id": p, "quantity": q} for p, q in totals.items()],
            "received_lines": [], "requested_at": now, "received_at": None, "updated_at": now}


def check_received_lines(expected_lines: list[dict], lines: list[dict] | None) -> list[dict]:
    """The received lines, checked against the expected ones.

    None means "everything expected arrived, resellable". Otherwise each line
    names an expected product; a product may arrive split over conditions, but
    never more units than expected. Lines with the same product and condition
    are merged."""
    if lines is None:
        return [{"product_id": line["product_id"], "quantity": line["quantity"], "condition": RESELLABLE}
                for line in expected_lines]
    expected = {line["product_id"]: line["quantity"] for line in expected_lines}
    merged: dict[tuple[str, str], int] = {}
    per_product: dict[str, int] = {}
    problems: dict[str, list[str]] = {}
    for index, line in enumerate(lines):
        product_id = line["product_id"]
        if product_id not in expected:
            problems[f"lines.{index}.product_id"] = ["not part of this return"]
            continue
        condition = line.get("condition") or RESELLABLE
        merged[(product_id, condition)] = merged.get((product_id, condition), 0) + line["quantity"]
        per_product[product_id] = per_product.get(product_id, 0) + line["quantity"]
    for product_id, quantity in per_product.items():
        if quantity > expected[product_id]:
            problems.setdefault("lines", []).append(
                f"{quantity} units of {product_id} received, only {expected[product_id]} expected")
    if problems:
        raise ValidationFailed.fields(problems, "The received lines do not match the return.")
    return [{"product_id": p, "quantity": q, "condition": c} for (p, c), q in merged.items()]


def receive(record: dict, lines: list[dict] | None, now: datetime) -> tuple[dict, list[Event]]:
    """expected → received, publishing `return_received`."""
    if record["status"] != EXPECTED:
        raise Conflict(f"return {record['_id']} was already received",
                       {"return_id": record["_id"], "status": record["status"]})
    received = check_received_lines(record["expected_lines"], lines)
    changes = {"status": RECEIVED, "received_lines": received, "received_at": now,
               "updated_at": now}
    return changes, [("return_received", {"return_id": record["_id"], "order_id": record["order_id"],
                                          "lines": received})]

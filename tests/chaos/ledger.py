"""The client's own ledger: what every accepted order was promised and must end as.

Reconciliation compares the services against this record, never against the order
database, so an order that a fault pushed into `cancelled` or `rejected` counts as
lost, and every downstream figure (stock, coupon uses, points, shipments, refunds,
analytics) is what the client can compute from its own requests:

- a card token that approves and lines the stock covers: paid, shipped, delivered,
  completed, then returned as the return plan says (all of it, one unit, or kept);
- a declining token: cancelled (payment failed), nothing shipped;
- a line on the contended (scarce) product: paid or rejected (the stock race is the
  catalog's to decide), the ledger accepts either, never anything else;
- returns: the first returned line comes back resellable, the others damaged; the
  refund is the returned lines' paid amount (`⌊line_total × k / quantity⌋`, shipping
  not refunded), so the expected stock, refunds and points follow from the plan.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict

PAID = "paid"          # the paid family: completed, partially_refunded, refunded
CANCELLED = "cancelled"
REJECTED = "rejected"
PAID_STATUSES = {"completed", "partially_refunded", "refunded"}


def return_lines(index: int, lines: list[dict]) -> list[dict] | None:
    """What the member sends back of the paid order `index`: every 8th (index 1) all of
    it, every 8th (index 5) one unit of its first line; None: kept."""
    if index % 8 == 1:
        return [{"product_id": line["product_id"], "quantity": line["quantity"]} for line in lines]
    if index % 8 == 5:
        return [{"product_id": lines[0]["product_id"], "quantity": 1}]
    return None


def condition(return_plan: list[dict], product_id: str) -> str:
    """How the warehouse receives a returned line: the first one resellable, the rest damaged."""
    return "resellable" if return_plan and return_plan[0]["product_id"] == product_id else "damaged"


@dataclasses.dataclass
class Promise:
    """One accepted order, as the client knows it from its request and the reply."""

    index: int
    key: str
    order_id: str
    member_id: str
    lines: list[dict]            # product_id, quantity, line_total (from the reply)
    total: int
    shipping_fee: int
    coupon_code: str | None
    outcomes: frozenset[str]     # allowed: PAID / CANCELLED / REJECTED
    returns: list[dict] | None   # the return plan, applied only if paid

    @property
    def must(self) -> str:
        """The outcome the client expects when nothing is contended."""
        return PAID if PAID in self.outcomes else CANCELLED

    def final_status(self, outcome: str) -> str:
        if outcome != PAID:
            return outcome
        if not self.returns:
            return "completed"
        returned = sum(line["quantity"] for line in self.returns)
        bought = sum(line["quantity"] for line in self.lines)
        return "refunded" if returned == bought else "partially_refunded"

    def refund(self) -> int:
        """What a paid order must have been refunded in all (returned lines' paid amounts)."""
        total = 0
        by_product = {line["product_id"]: line for line in self.lines}
        for line in self.returns or []:
            bought = by_product[line["product_id"]]
            total += bought["line_total"] * line["quantity"] // bought["quantity"]
        return total

    def restocked(self) -> dict[str, int]:
        back: dict[str, int] = defaultdict(int)
        for line in self.returns or []:
            if condition(self.returns, line["product_id"]) == "resellable":
                back[line["product_id"]] += line["quantity"]
        return dict(back)

    @property
    def merchandise(self) -> int:
        """What points are earned on: the line totals (the shipping fee is not merchandise)."""
        return sum(line["line_total"] for line in self.lines)


class Ledger:
    """Every order the services accepted, keyed by order id, as the client recorded it."""

    def __init__(self):
        self.promises: dict[str, Promise] = {}
        self.by_key: dict[str, str] = {}
        self.conflicts: list[str] = []

    def __len__(self) -> int:
        return len(self.promises)

    def __contains__(self, order_id: str) -> bool:
        return order_id in self.promises

    def accept(self, plan: dict, order: dict, scarce_id: str) -> Promise:
        known = self.by_key.get(plan["key"])
        if known is not None and known != order["id"]:
            # the same idempotency key answered with another order: a double placement
            self.conflicts.append(f"key {plan['key']} answered {known} then {order['id']}")
        contended = any(line["product_id"] == scarce_id for line in plan["lines"])
        approves = not plan["token"].startswith("tok_decline")
        outcomes = {PAID if approves else CANCELLED}
        if contended:
            outcomes.add(REJECTED)
        lines = [{"product_id": line["product_id"], "quantity": line["quantity"],
                  "line_total": line["line_total"]} for line in order["lines"]]
        promise = Promise(
            index=plan["index"], key=plan["key"], order_id=order["id"], member_id=plan["member_id"],
            lines=lines, total=order["total"], shipping_fee=order.get("shipping_fee", 0),
            coupon_code=order.get("coupon_code"), outcomes=frozenset(outcomes),
            returns=return_lines(plan["index"], lines))
        self.promises[order["id"]] = promise
        self.by_key[plan["key"]] = order["id"]
        return promise

    def resolve(self, statuses: dict[str, str]) -> dict[str, str | None]:
        """Each promise's outcome given the status the order service reports: the reported
        one when the ledger allows it, else None (lost: the order did not end as promised)."""
        resolved: dict[str, str | None] = {}
        for order_id, promise in self.promises.items():
            status = statuses.get(order_id)
            outcome = PAID if status in PAID_STATUSES else status
            if outcome in promise.outcomes and status == promise.final_status(outcome):
                resolved[order_id] = outcome
            else:
                resolved[order_id] = None
        return resolved

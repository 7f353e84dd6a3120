"""The order state machine: which moves are allowed, which are forward jumps, which are
the past (ignored), and what every applied move records and emits.

    pending → confirmed → paid → fulfilling → shipped → delivered → completed
                                           → partially_refunded → refunded
    pending → rejected;  pending/confirmed/paid/fulfilling → cancelled

Events from other services may arrive late, twice or out of order: a move to a
state already passed (or the current one) is `ignored`; a move forward along the
main line may skip states (`shipment_delivered` before `shipment_dispatched`);
anything else is refused with `IllegalTransition`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.clock import to_iso

PENDING = "pending"
CONFIRMED = "confirmed"
PAID = "paid"
FULFILLING = "fulfilling"
SHIPPED = "shipped"
DELIVERED = "delivered"
COMPLETED = "completed"
PARTIALLY_REFUNDED = "partially_refunded"
REFUNDED = "refunded"
REJECTED = "rejected"
CANCELLED = "cancelled"

# The main line, in order. Terminal side states are not on it.
MAIN_LINE = (PENDING, CONFIRMED, PAID, FULFILLING, SHIPPED, DELIVERED, COMPLETED,
             PARTIALLY_REFUNDED, REFUNDED)
TERMINAL = (REJECTED, CANCELLED, REFUNDED)
STATES = MAIN_LINE + (REJECTED, CANCELLED)
RANK = {state: index for index, state in enumerate(MAIN_LINE)}

# Which states may be entered from which (besides staying put). Forward jumps
# on the fulfillment stretch are listed explicitly.
ALLOWED: dict[str, frozenset[str]] = {
    PENDING: frozenset({CONFIRMED, REJECTED, CANCELLED}),
    CONFIRMED: frozenset({PAID, CANCELLED}),
    PAID: frozenset({FULFILLING, SHIPPED, DELIVERED, CANCELLED}),
    FULFILLING: frozenset({SHIPPED, DELIVERED, CANCELLED}),
    SHIPPED: frozenset({DELIVERED}),
    DELIVERED: frozenset({COMPLETED}),
    COMPLETED: frozenset({PARTIALLY_REFUNDED, REFUNDED}),
    PARTIALLY_REFUNDED: frozenset({PARTIALLY_REFUNDED, REFUNDED}),
    REFUNDED: frozenset(),
    REJECTED: frozenset(),
    CANCELLED: frozenset(),
}

# States a member (or operator) may still cancel from: before dispatch.
CANCELLABLE = (PENDING, CONFIRMED, PAID, FULFILLING)
# States whose order may be returned (after-sales).
RETURNABLE = (DELIVERED, COMPLETED, PARTIALLY_REFUNDED)
# The event each state announces (the saga's events that carry only the order id or more).
ANNOUNCED = {CONFIRMED: "order_confirmed", PAID: "order_paid", SHIPPED: "order_shipped",
             DELIVERED: "order_delivered", COMPLETED: "order_completed",
             REJECTED: "order_rejected", CANCELLED: "order_cancelled"}


class IllegalTransition(Exception):
    """The move is not allowed from the order's current state."""

    def __init__(self, current: str, target: str):
        super().__init__(f"cannot move an order from {current} to {target}")
        self.current = current
        self.target = target


@dataclass(frozen=True)
class Decision:
    """`apply` with the states to record in order (a forward jump records each
    milestone passed on the fulfillment stretch), or `ignore` (already there or past)."""

    action: str
    path: tuple[str, ...] = ()

    @property
    def applies(self) -> bool:
        return self.action == "apply"


IGNORE = Decision("ignore")

# Milestones a forward jump still records (and announces) when it passes them.
_MILESTONES = (SHIPPED, DELIVERED)


def decide(current: str, target: str) -> Decision:
    """What moving an order in `current` to `target` means."""
    if current not in ALLOWED or target not in ALLOWED:
        raise ValueError(f"unknown state {current if current not in ALLOWED else target}")
    if target in ALLOWED[current]:
        if target == current:  # partially_refunded → partially_refunded: another refund
            return Decision("apply", (target,))
        path = tuple(s for s in _MILESTONES
                     if current in RANK and target in RANK and RANK[current] < RANK[s] < RANK[target])
        path += (target,)
        if target == DELIVERED:  # delivered completes at once
            path += (COMPLETED,)
        return Decision("apply", path)
    if target == current:
        return IGNORE
    if current in RANK and target in RANK and RANK[target] < RANK[current]:
        return IGNORE  # the past: a late or repeated event
    if current in (REJECTED, CANCELLED) and target in RANK:
        return IGNORE  # a terminal order ignores late saga events (compensation is elsewhere)
    raise IllegalTransition(current, target)


def advance(order: dict, target: str, now: datetime, cause: str) -> list[str]:
    """Move `order` (a dict with `status` and `history`) towards `target`; returns
    the states entered, empty when the move is ignored. Raises IllegalTransition."""
    decision = decide(order["status"], target)
    if not decision.applies:
        return []
    for state in decision.path:
        order["status"] = state
        order.setdefault("history", []).append({"status": state, "at": to_iso(now), "cause": cause})
        order.setdefault("timestamps", {}).setdefault(state, to_iso(now))
    order["updated_at"] = to_iso(now)
    return list(decision.path)


def can_cancel(status: str) -> bool:
    return status in CANCELLABLE

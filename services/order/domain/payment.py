"""Payment rules: what a provider's answer does to a confirmed order, and when to retry.

Outcomes of one capture attempt (authorise + capture, the order id as the provider's
idempotency key):
- `approved` → the order is `paid` (authorisation and capture recorded); never half-paid:
  an order is `paid` only with a capture of its full total.
- `declined` → `payment_failed`, then `cancelled` (reason `payment_failed`).
- `timeout` / `error` → stays `confirmed`; the next attempt is due after a backoff of
  base × 2^(attempts−1), capped; after `max_attempts` attempts the order is cancelled
  (reason `payment_failed`, failure `provider_unavailable`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.clock import to_iso

from . import states

APPROVED = "approved"
DECLINED = "declined"
TIMEOUT = "timeout"
ERROR = "error"
OUTCOMES = (APPROVED, DECLINED, TIMEOUT, ERROR)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_seconds: float = 2.0
    max_seconds: float = 60.0

    def delay(self, attempts: int) -> timedelta:
        """The wait after the `attempts`-th failed attempt (1-based)."""
        seconds = self.base_seconds * (2 ** max(attempts - 1, 0))
        return timedelta(seconds=min(seconds, self.max_seconds))


@dataclass
class ChargeResult:
    """A provider's answer to authorise-and-capture."""

    outcome: str
    reason: str | None = None
    records: list[dict] = field(default_factory=list)  # authorisation/capture records

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown payment outcome {self.outcome}")

    @property
    def payment_ref(self) -> str | None:
        for record in self.records:
            if record.get("kind") == "capture":
                return record["ref"]
        return None


def apply_charge(order: dict, result: ChargeResult, now: datetime, policy: RetryPolicy) -> list[tuple]:
    """Apply one attempt's result to a `confirmed` order whose `payment.attempts` counts
    this attempt. Returns the events to emit as (event_type, data)."""
    payment = order["payment"]
    payment["lease_until"] = None
    if order["status"] != states.CONFIRMED:
        return []
    if result.outcome == APPROVED:
        captured = [r for r in result.records if r.get("kind") == "capture"]
        if not captured or captured[0].get("amount") != order["total"]:
            raise ValueError("an approved payment must capture the order's full total")
        payment["state"] = "captured"
        payment["ref"] = result.payment_ref
        payment["last_error"] = None
        order.setdefault("payments", []).extend(result.records)
        states.advance(order, states.PAID, now, "payment_captured")
        return [("order_paid", paid_event(order))]
    if result.outcome == DECLINED:
        payment["state"] = "declined"
        payment["last_error"] = result.reason or "declined"
        order.setdefault("payments", []).extend(result.records)
        return fail(order, result.reason or "card_declined", now)
    payment["last_error"] = result.outcome
    if payment["attempts"] >= policy.max_attempts:
        payment["state"] = "abandoned"
        return fail(order, "provider_unavailable", now)
    payment["next_attempt_at"] = now + policy.delay(payment["attempts"])
    return []


def fail(order: dict, reason: str, now: datetime) -> list[tuple]:
    """payment_failed, then cancelled (reason payment_failed, never paid)."""
    order["history"].append({"status": "payment_failed", "at": to_iso(now), "cause": reason})
    states.advance(order, states.CANCELLED, now, "payment_failed")
    order["cancel_reason"] = "payment_failed"
    return [("payment_failed", {"order_id": order["id"], "reason": reason}),
            ("order_cancelled", {"order_id": order["id"], "member_id": order["member_id"],
                                 "reason": "payment_failed", "was_paid": False})]


def event_lines(order: dict) -> list[dict]:
    return [{k: line[k] for k in ("product_id", "category", "quantity", "unit_price",
                                  "discount", "line_total")} for line in order["lines"]]


def paid_event(order: dict) -> dict:
    return {"order_id": order["id"], "member_id": order["member_id"], "lines": event_lines(order),
            "total": order["total"], "currency": order["currency"],
            "shipping_address": dict(order["shipping_address"]),
            "payment_ref": order["payment"]["ref"], "shipping_fee": order["shipping_fee"]}


def payment_due(order: dict, now: datetime) -> bool:
    """Whether a capture attempt may start now (confirmed, due, no live lease)."""
    payment = order.get("payment") or {}
    lease = payment.get("lease_until")
    due = payment.get("next_attempt_at")
    return (order["status"] == states.CONFIRMED and payment.get("state") == "due"
            and (due is None or due <= now) and (lease is None or lease <= now))

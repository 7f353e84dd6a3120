"""Catalog business rules: product and merchant state machines, low-stock
crossings, reservation decisions, ratings. Pure: no I/O, `now` passed in."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.errors import Conflict, ValidationFailed

HOUSE_MERCHANT_ID = "mch_house"

# Products -----------------------------------------------------------------
DRAFT, PUBLISHED, UNPUBLISHED = "draft", "published", "unpublished"
PRODUCT_STATUSES = (DRAFT, PUBLISHED, UNPUBLISHED)

# Merchants ----------------------------------------------------------------
PENDING, APPROVED, REJECTED, SUSPENDED = "pending", "approved", "rejected", "suspended"
MERCHANT_STATUSES = (PENDING, APPROVED, REJECTED, SUSPENDED)

# Reservations (one per order) ---------------------------------------------
RESERVED = "reserved"        # stock held for the order
FAILED = "failed"            # some line was short; nothing held
RELEASED = "released"        # given back on order_cancelled
EXPIRED = "expired"          # given back by the reservation TTL (backstop)
COMMITTED = "committed"      # shipped: on_hand and reserved dropped
CANCELLED = "cancelled"      # tombstone: the cancellation came first, nothing held


def publish(status: str, merchant_status: str | None) -> str | None:
    """The product's new status, or None when it is already published."""
    if status == PUBLISHED:
        return None
    if status not in (DRAFT, UNPUBLISHED):
        raise Conflict(f"a {status} product cannot be published", {"status": status})
    if merchant_status != APPROVED:
        raise Conflict("the product's merchant is not approved",
                       {"merchant_status": merchant_status})
    return PUBLISHED


def unpublish(status: str) -> str | None:
    """The product's new status, or None when it is already off sale."""
    if status == UNPUBLISHED:
        return None
    if status != PUBLISHED:
        raise Conflict(f"a {status} product cannot be unpublished", {"status": status})
    return UNPUBLISHED


_MERCHANT_MOVES = {
    "approve": ({PENDING, SUSPENDED}, APPROVED),
    "reject": ({PENDING}, REJECTED),
    "suspend": ({APPROVED}, SUSPENDED),
}


def merchant_transition(status: str, action: str) -> str | None:
    """The merchant's next status for `action`, None if it is already there.

    pending → approved | rejected; approved → suspended; suspended → approved
    (reinstated). Rejected is terminal: the merchant applies again."""
    allowed, target = _MERCHANT_MOVES[action]
    if status == target:
        return None
    if status not in allowed:
        raise Conflict(f"a {status} merchant cannot be {target}", {"status": status, "action": action})
    return target


# Prices --------------------------------------------------------------------
def price_change(old: int, new: int, by: str | None, now: datetime) -> dict | None:
    """A price-history entry, or None when the price does not change."""
    if old == new:
        return None
    return {"at": now, "old_price": old, "new_price": new, "by": by}


def check_currency(currency: str | None, deployment_currency: str) -> str:
    if currency is not None and currency.upper() != deployment_currency:
        raise ValidationFailed.field("currency", f"must be {deployment_currency}")
    return deployment_currency


# Stock ---------------------------------------------------------------------
@dataclass(frozen=True)
class StockLevel:
    on_hand: int
    reserved: int

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


def adjust(level: StockLevel, delta: int) -> StockLevel:
    """Stock after an operator's change; reserved units cannot be removed."""
    if delta == 0:
        raise ValidationFailed.field("delta", "must not be zero")
    if level.available + delta < 0:
        raise ValidationFailed.field("delta", "would make stock negative")
    return StockLevel(level.on_hand + delta, level.reserved)


def low_stock_transition(available: int, threshold: int, low: bool) -> str | None:
    """Which event a change of `available` fires: `stock_ran_low` once when it
    falls to or below the threshold, `stock_replenished` (re-arming) when it
    rises above it again, else None."""
    if not low and available <= threshold:
        return "stock_ran_low"
    if low and available > threshold:
        return "stock_replenished"
    return None


def is_low(available: int, threshold: int) -> bool:
    return available <= threshold


def merge_lines(lines: Iterable[dict]) -> list[tuple[str, int]]:
    """Order lines as (product_id, quantity), one per product, sorted by id so
    concurrent reservations touch products in the same order."""
    totals: dict[str, int] = {}
    for line in lines:
        totals[line["product_id"]] = totals.get(line["product_id"], 0) + int(line["quantity"])
    return sorted(totals.items())


def short_lines(requested: list[tuple[str, int]], available: dict[str, int]) -> list[dict]:
    """The lines that cannot be reserved with `available` (missing products count as 0)."""
    return [{"product_id": pid, "requested": qty, "available": max(available.get(pid, 0), 0)}
            for pid, qty in requested if available.get(pid, 0) < qty]


def on_order_placed(state: str | None) -> str:
    """What an `order_placed` does given the order's reservation state:
    `reserve` (first time), `skip_cancelled` (a tombstone: the order was
    cancelled first) or `skip` (already decided)."""
    if state is None:
        return "reserve"
    if state == CANCELLED:
        return "skip_cancelled"
    return "skip"


def on_order_cancelled(state: str | None) -> str:
    """`tombstone` (nothing yet), `release` (held stock goes back),
    `close` (failed: just mark it cancelled) or `skip`."""
    if state is None:
        return "tombstone"
    if state == RESERVED:
        return "release"
    if state == FAILED:
        return "close"
    return "skip"


def on_shipment_dispatched(state: str | None) -> str:
    """`commit` held stock; `deduct` on_hand directly when the goods left
    without a live reservation (it expired or was released); else `skip`."""
    if state == RESERVED:
        return "commit"
    if state in (EXPIRED, RELEASED):
        return "deduct"
    return "skip"


def reservation_expires_at(now: datetime, ttl_seconds: int) -> datetime:
    return now + timedelta(seconds=ttl_seconds)


def reservation_expired(reservation: dict, now: datetime) -> bool:
    """A held reservation whose order reached no verdict (not paid) in time."""
    return (reservation.get("state") == RESERVED and not reservation.get("paid")
            and reservation["expires_at"] <= now)


# Reviews -------------------------------------------------------------------
REVIEW_PENDING, REVIEW_APPROVED, REVIEW_REJECTED = "pending", "approved", "rejected"


def moderation_effect(old: str, new: str) -> int:
    """How a moderation decision changes the product's approved-review count
    (+1, -1 or 0); the rating sum moves by that times the rating."""
    if new not in (REVIEW_APPROVED, REVIEW_REJECTED):
        raise ValidationFailed.field("status", "must be approved or rejected")
    if old == new:
        return 0
    if new == REVIEW_APPROVED:
        return 1
    return -1 if old == REVIEW_APPROVED else 0


def rating_average(total: int, count: int) -> float:
    """Mean of approved ratings rounded to 2 decimals; 0.0 when none."""
    return round(total / count, 2) if count else 0.0


def stock_keys(data: dict) -> list[str]:
    """The stock documents an order event's lines write: handlers that share one run one at
    a time in this process (shared.messaging.keyed), instead of conflicting and re-running."""
    return [f"stock:{line['product_id']}" for line in data.get("lines") or ()
            if isinstance(line, dict) and line.get("product_id")]

"""Every discount rule of the suite, as pure functions: promotions (percent_off, amount_off,
threshold 满减), the coupon's promotion, the member tier's discount, stacking, caps and the
deterministic split of each discount across lines in integer minor units. No I/O; `now` is given.

Rules (README.md, "Pricing"):
- A promotion applies when it is active, inside [starts_at, ends_at), automatic (or it is the
  promotion of the coupon given), the member's tier is in its tier scope (if any), and at least
  one line is in its product/category scope (if any).
- Application order: priority (higher first), then starts_at, then id. Each rule works on what
  is left of its eligible lines after the rules before it.
- `exclusive` applies only when nothing was applied before it, and then stops every later
  promotion; `combinable` applies unless an exclusive one was applied.
- A rule's amount: percent_off floor(base * percent); amount_off min(amount, base);
  threshold: `amount` once `base >= min_subtotal` (times floor(base / min_subtotal) when
  `repeat`); then the promotion's `max_discount` cap; then the cart cap (a percent of the subtotal).
- The member tier's percent applies last, to every line, also after an exclusive promotion.
- Split: largest remainder over the eligible lines' remaining amounts (ties to the earlier
  line), so the line shares are integers that sum exactly to the rule's amount.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.clock import parse_iso

KINDS = ("percent_off", "amount_off", "threshold")
TRIGGERS = ("automatic", "coupon")
STACKING = ("exclusive", "combinable")
FULL = 10_000  # basis points in 100 %


def percent_to_bp(percent: float) -> int:
    """A percent (0 < p <= 100, up to two decimals) as basis points."""
    return int(round(float(percent) * 100))


def allocate(total: int, weights: list[int]) -> list[int]:
    """Split `total` over `weights` proportionally in integers summing exactly to `total`
    (largest remainder; ties go to the earlier index). Requires 0 <= total <= sum(weights)."""
    whole = sum(weights)
    if total <= 0 or whole <= 0:
        return [0] * len(weights)
    if total > whole:
        raise ValueError("cannot allocate more than the weights hold")
    shares = [total * w // whole for w in weights]
    remainders = [(total * w) % whole for w in weights]
    left = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        shares[i] += 1
    return shares


def is_live(promotion: dict, now: datetime) -> bool:
    if promotion.get("status", "active") != "active":
        return False
    if parse_iso(promotion["starts_at"]) > now:
        return False
    ends = promotion.get("ends_at")
    return ends is None or now < parse_iso(ends)


def tier_ok(promotion: dict, tier: str | None) -> bool:
    tiers = (promotion.get("scope") or {}).get("tiers") or []
    return not tiers or (tier is not None and tier in tiers)


def in_scope(promotion: dict, line: dict) -> bool:
    scope = promotion.get("scope") or {}
    products = scope.get("product_ids") or []
    categories = scope.get("categories") or []
    if not products and not categories:
        return True
    return line["product_id"] in products or line["category"] in categories


def rule_amount(promotion: dict, base: int) -> int:
    """The discount a promotion gives on `base` (its eligible lines' remaining amount)."""
    if base <= 0:
        return 0
    minimum = promotion.get("min_subtotal") or 0
    if base < minimum:
        return 0
    kind = promotion["kind"]
    if kind == "percent_off":
        amount = base * promotion["percent_bp"] // FULL
    elif kind == "amount_off":
        amount = promotion["amount"]
    elif kind == "threshold":
        times = base // minimum if promotion.get("repeat") and minimum > 0 else 1
        amount = promotion["amount"] * times
    else:
        raise ValueError(f"unknown promotion kind {kind!r}")
    cap = promotion.get("max_discount")
    if cap is not None:
        amount = min(amount, cap)
    return max(0, min(amount, base))


def describe(promotion: dict, currency: str) -> str:
    """Why a promotion gave its discount, in words."""
    kind = promotion["kind"]
    if kind == "percent_off":
        what = f"{promotion['percent_bp'] / 100:g}% off"
    elif kind == "amount_off":
        what = f"{promotion['amount']} {currency} minor units off"
    else:
        what = (f"spend {promotion['min_subtotal']}, save {promotion['amount']}"
                + (" (every time)" if promotion.get("repeat") else "") + f" ({currency} minor units)")
    scope = promotion.get("scope") or {}
    parts = []
    if scope.get("product_ids"):
        parts.append("products " + ", ".join(scope["product_ids"]))
    if scope.get("categories"):
        parts.append("categories " + ", ".join(scope["categories"]))
    if scope.get("tiers"):
        parts.append("tiers " + ", ".join(scope["tiers"]))
    on = " on " + "; ".join(parts) if parts else " on the cart"
    cap = f", capped at {promotion['max_discount']}" if promotion.get("max_discount") is not None else ""
    return f"{promotion.get('name') or promotion['id']}: {what}{on}{cap}"


def price(lines: list[dict], promotions: list[dict], *, now: datetime, currency: str,
          tier: str | None = None, tier_percent_bp: int = 0, coupon: dict | None = None,
          cap_bp: int = FULL) -> dict[str, Any]:
    """Price a cart. `coupon` is `{"code", "promotion_id"}` of a coupon already checked usable.

    No `shipping_fee`: order owns it (order reads a `shipping_fee` in the answer as an offer
    that waives its own fee, so marketing leaves the key out).

    Returns the priced cart; `coupon_applied` says whether the coupon's promotion gave a
    discount (`coupon_reason` when not)."""
    gross = [line["unit_price"] * line["quantity"] for line in lines]
    remaining = list(gross)
    per_line: list[list[dict]] = [[] for _ in lines]
    subtotal = sum(gross)
    cap_total = subtotal * cap_bp // FULL
    discounts: list[dict] = []
    coupon_pid = coupon["promotion_id"] if coupon else None
    coupon_reason = "not_applicable" if coupon else None

    candidates = [p for p in promotions
                  if is_live(p, now) and tier_ok(p, tier)
                  and (p.get("trigger", "automatic") == "automatic" or p["id"] == coupon_pid)]
    candidates.sort(key=lambda p: (-int(p.get("priority", 0)), p["starts_at"], p["id"]))
    exclusive_applied = False

    def apply(rule: str, promotion_id: str | None, kind: str, amount: int, why: str,
              eligible: list[int], extra: dict) -> int:
        nonlocal cap_total
        granted = sum(d["amount"] for d in discounts)
        amount = min(amount, cap_total - granted)
        if amount <= 0:
            return 0
        shares = allocate(amount, [remaining[i] for i in eligible])
        for i, share in zip(eligible, shares, strict=True):
            remaining[i] -= share
            if share:
                per_line[i].append({"rule": rule, "promotion_id": promotion_id, "amount": share})
        discounts.append({"rule": rule, "promotion_id": promotion_id, "kind": kind,
                          "amount": amount, "why": why, **extra})
        return amount

    for promotion in candidates:
        if exclusive_applied:
            break
        is_coupon = promotion["id"] == coupon_pid
        eligible = [i for i, line in enumerate(lines) if in_scope(promotion, line)]
        if not eligible:
            continue
        if promotion.get("stacking", "combinable") == "exclusive" and discounts:
            if is_coupon:
                coupon_reason = "excluded_by_other_promotion"
            continue
        amount = rule_amount(promotion, sum(remaining[i] for i in eligible))
        if amount <= 0:
            if is_coupon:
                coupon_reason = "threshold_not_met"
            continue
        extra = {"code": coupon["code"]} if is_coupon else {}
        why = describe(promotion, currency) + (f" (coupon {coupon['code']})" if is_coupon else "")
        given = apply("coupon" if is_coupon else "promotion", promotion["id"], promotion["kind"],
                      amount, why, eligible, extra)
        if given and is_coupon:
            coupon_reason = None
        if given and promotion.get("stacking", "combinable") == "exclusive":
            exclusive_applied = True

    if tier_percent_bp > 0 and tier:
        everything = list(range(len(lines)))
        amount = sum(remaining) * tier_percent_bp // FULL
        apply("tier", None, "tier_percent", amount,
              f"member tier {tier}: {tier_percent_bp / 100:g}% off", everything, {"tier": tier})

    priced = []
    for i, line in enumerate(lines):
        discount = gross[i] - remaining[i]
        priced.append({"product_id": line["product_id"], "category": line["category"],
                       "unit_price": line["unit_price"], "quantity": line["quantity"],
                       "subtotal": gross[i], "discount": discount, "line_total": remaining[i],
                       "discounts": per_line[i]})
    discount_total = sum(d["amount"] for d in discounts)
    coupon_discount = sum(d["amount"] for d in discounts if d["rule"] == "coupon")
    return {
        "lines": priced,
        "discounts": discounts,
        "promotion_ids": [d["promotion_id"] for d in discounts if d["promotion_id"]],
        "coupon_code": coupon["code"] if coupon and coupon_reason is None else None,
        "coupon_applied": bool(coupon) and coupon_reason is None,
        "coupon_reason": coupon_reason,
        "coupon_discount": coupon_discount,
        "tier": tier,
        "subtotal": subtotal,
        "discount": discount_total,
        "total": subtotal - discount_total,
        "currency": currency,
    }

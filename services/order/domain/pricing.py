"""Pricing arithmetic, in integer minor units (never floats).

Marketing owns every discount rule; order turns marketing's answer into priced
lines it can store, refund and announce:

- `subtotal` = Σ unit_price × quantity (tax-inclusive list prices from the read model).
- Line discounts come from marketing. A cart-level discount beyond the sum of line
  discounts (e.g. a coupon "20 off 200") is split across lines in proportion to
  each line's remaining amount, by the largest-remainder method: every line gets
  ⌊share⌋, the leftover minor units go one each to the lines with the largest
  fractional remainders (ties: earlier line first). The split always sums exactly
  to the discount, and no line is discounted below zero.
- `discount` = Σ line discounts, never above the subtotal.
- Shipping: `flat_fee`, or 0 when the discounted subtotal (subtotal − discount)
  reaches `free_threshold`; a `shipping_fee` marketing returns (free-shipping
  promotions) can only lower it.
- `total` = subtotal − discount + shipping_fee.
- Refunds: see `refund_share`.
"""
from __future__ import annotations

from dataclasses import dataclass


class PricingError(ValueError):
    """Marketing's answer cannot be turned into a consistent order."""


@dataclass(frozen=True)
class ShippingPolicy:
    flat_fee: int
    free_threshold: int

    def fee(self, discounted_subtotal: int, offered: int | None = None) -> int:
        own = 0 if discounted_subtotal >= self.free_threshold else self.flat_fee
        if offered is not None and 0 <= offered < own:
            return offered
        return own


def allocate(amount: int, weights: list[int]) -> list[int]:
    """Split `amount` across `weights` proportionally (largest remainder), capped
    per part by its weight. The parts sum to min(amount, Σ weights)."""
    if amount < 0 or any(w < 0 for w in weights):
        raise ValueError("amount and weights must not be negative")
    total = sum(weights)
    amount = min(amount, total)
    if amount == 0 or total == 0:
        return [0] * len(weights)
    floors = [amount * w // total for w in weights]
    remainders = [(amount * w % total, -i) for i, w in enumerate(weights)]
    left = amount - sum(floors)
    for _, neg_index in sorted(remainders, reverse=True)[:left]:
        floors[-neg_index] += 1
    return floors


def price_lines(requested: list[dict], priced: dict, shipping: ShippingPolicy) -> dict:
    """Combine the requested lines (product_id, category, unit_price, quantity, from the
    read model) with marketing's `price_cart` answer into the order's priced view."""
    by_product: dict[str, dict] = {}
    for line in priced.get("lines") or []:
        if isinstance(line, dict) and line.get("product_id") is not None:
            by_product.setdefault(line["product_id"], line)
    lines = []
    for line in requested:
        gross = line["unit_price"] * line["quantity"]
        answer = by_product.get(line["product_id"], {})
        discount = _money(answer.get("discount", 0), "line discount")
        lines.append({"product_id": line["product_id"], "category": line["category"],
                      "quantity": line["quantity"], "unit_price": line["unit_price"],
                      "discount": min(discount, gross),
                      "discounts": list(answer.get("discounts") or []), "gross": gross})
    line_discounts = sum(line["discount"] for line in lines)
    cart_discount = _money(priced.get("discount", line_discounts), "discount")
    extra = cart_discount - line_discounts
    if extra > 0:
        shares = allocate(extra, [line["gross"] - line["discount"] for line in lines])
        for line, share in zip(lines, shares, strict=True):
            line["discount"] += share
    subtotal = sum(line["gross"] for line in lines)
    discount = sum(line["discount"] for line in lines)
    offered = priced.get("shipping_fee")
    offered = _money(offered, "shipping_fee") if offered is not None else None
    fee = shipping.fee(subtotal - discount, offered)
    for line in lines:
        line["line_total"] = line.pop("gross") - line["discount"]
    return {
        "lines": lines,
        "subtotal": subtotal,
        "discount": discount,
        "discounts": list(priced.get("discounts") or []),
        "shipping_fee": fee,
        "total": subtotal - discount + fee,
        "promotion_ids": promotion_ids(priced),
    }


def promotion_ids(priced: dict) -> list[str]:
    """The promotions that gave a discount, from marketing's answer (deduplicated, in order)."""
    found: list[str] = list(priced.get("promotion_ids") or [])
    explained = list(priced.get("discounts") or [])
    for line in priced.get("lines") or []:
        explained += list((line or {}).get("discounts") or [])
    for item in explained:
        if isinstance(item, dict) and item.get("promotion_id"):
            found.append(item["promotion_id"])
    seen: list[str] = []
    for pid in found:
        if isinstance(pid, str) and pid and pid not in seen:
            seen.append(pid)
    return seen


def refund_share(line_total: int, quantity: int, already: int, returning: int) -> int:
    """The paid amount of `returning` more units of a line of `quantity` units paying
    `line_total` in all, `already` of which were refunded before.

    Cumulative rounding: refunded(k) = ⌊line_total × k / quantity⌋, and this refund is
    refunded(already + returning) − refunded(already). Partial refunds of a line
    therefore always add up to exactly its paid amount, never a unit more."""
    if quantity <= 0 or returning <= 0 or already < 0 or already + returning > quantity:
        raise ValueError("refund quantities out of range")
    return (line_total * (already + returning) // quantity) - (line_total * already // quantity)


def _money(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PricingError(f"marketing returned a bad {name}: {value!r}")
    return value

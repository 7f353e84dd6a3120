"""Member business rules: tiers, points arithmetic, lifecycle segments and RFM.

Pure functions and value objects: no I/O, `now` is always passed in."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

TIERS = ("bronze", "silver", "gold", "platinum")
SEGMENTS = ("new", "active", "at_risk", "dormant", "churned")
GENDERS = ("female", "male", "other", "undisclosed")
PERSONA_FIELDS = ("birth_year", "gender", "region", "interests")
PERSONAL_FIELDS = ("email", "name", "phone", "birth_year", "gender", "region", "interests")


class PolicyError(ValueError):
    """A business setting is malformed (raised at start-up, never at request time)."""


def normalise_email(email: str) -> str:
    """The form the uniqueness index sees: trimmed, lower-case (domains are
    case-insensitive and in practice mailboxes are treated the same)."""
    return email.strip().lower()


def normalise_interests(interests: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for item in interests:
        value = item.strip().lower()
        if value and value not in seen:
            seen.append(value)
    return seen


def _floor(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_FLOOR))


# --------------------------------------------------------------------------- tiers

@dataclass(frozen=True)
class Tier:
    name: str
    threshold: int              # paid spend (minor units) in the window to reach it
    multiplier: Decimal         # points multiplier
    discount_percent: int       # the discount marketing applies for the tier

    def benefits(self) -> dict:
        return {"points_multiplier": str(self.multiplier),
                "discount_percent": self.discount_percent}


def _pairs(text: str, setting: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition(":")
        name = name.strip().lower()
        if not sep or name not in TIERS:
            raise PolicyError(f"{setting}: expected tier:value pairs over {TIERS}, got {part!r}")
        out[name] = value.strip()
    return out


@dataclass(frozen=True)
class TierPolicy:
    tiers: tuple[Tier, ...]     # ascending by threshold, first is the base tier (threshold 0)
    window: timedelta

    @classmethod
    def parse(cls, thresholds: str, multipliers: str, discounts: str, window_days: int) -> "TierPolicy":
        limits = _pairs(thresholds, "MEMBER_TIER_THRESHOLDS")
        mults = _pairs(multipliers, "MEMBER_TIER_MULTIPLIERS")
        discs = _pairs(discounts, "MEMBER_TIER_DISCOUNTS")
        if window_days < 1:
            raise PolicyError("MEMBER_TIER_WINDOW_DAYS must be at least 1")
        tiers = []
        previous = -1
        for name in TIERS:
            try:
                threshold = 0 if name == TIERS[0] else int(limits[name])
                multiplier = Decimal(mults.get(name, "1"))
                discount = int(discs.get(name, "0"))
            except (KeyError, ValueError, ArithmeticError) as exc:
                raise PolicyError(f"tier {name}: missing or malformed setting ({exc})") from None
            if threshold <= previous:
                raise PolicyError("tier thresholds must increase bronze < silver < gold < platinum")
            if not multiplier.is_finite() or multiplier < 0:
                raise PolicyError(f"tier {name}: multiplier must be a number >= 0")
            if not 0 <= discount <= 100:
                raise PolicyError(f"tier {name}: discount percent must be within 0..100")
            previous = threshold
            tiers.append(Tier(name, threshold, multiplier, discount))
        return cls(tuple(tiers), timedelta(days=window_days))

    def get(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        return self.tiers[0]

    def tier_for(self, spend: int) -> Tier:
        reached = self.tiers[0]
        for tier in self.tiers:
            if spend >= tier.threshold:
                reached = tier
        return reached

    def progress(self, spend: int) -> dict:
        """Where `spend` stands: its tier, the next one and what is missing to reach it."""
        current = self.tier_for(spend)
        index = self.tiers.index(current)
        nxt = self.tiers[index + 1] if index + 1 < len(self.tiers) else None
        return {
            "spend_in_window": spend,
            "window_days": self.window.days,
            "qualifies_for": current.name,
            "next_tier": nxt.name if nxt else None,
            "next_threshold": nxt.threshold if nxt else None,
            "remaining_to_next": max(0, nxt.threshold - spend) if nxt else 0,
        }

    @staticmethod
    def direction(old: str, new: str) -> str:
        return "upgrade" if TIERS.index(new) > TIERS.index(old) else "downgrade"


@dataclass(frozen=True)
class PaidOrder:
    """What tiers need of an order: when it was paid, how much, how much came back."""

    paid_at: datetime
    total: int
    refunded: int = 0

    @property
    def net(self) -> int:
        return max(0, self.total - self.refunded)


def window_start(now: datetime, window: timedelta) -> datetime:
    return now - window


def window_spend(orders: Iterable[PaidOrder], now: datetime, window: timedelta) -> int:
    """Paid spend net of refunds of orders paid within (now - window, now]; an
    order paid "after" now (clock skew between services) counts too."""
    start = window_start(now, window)
    return sum(o.net for o in orders if o.paid_at > start)


def next_review_at(orders: Iterable[PaidOrder], now: datetime, window: timedelta) -> datetime | None:
    """The first moment the window spend can drop: when the oldest contributing
    order leaves the window. None when nothing contributes."""
    start = window_start(now, window)
    moments = [o.paid_at + window for o in orders if o.paid_at > start and o.net > 0]
    return min(moments) if moments else None


# --------------------------------------------------------------------------- points

@dataclass(frozen=True)
class PointsPolicy:
    points_per_unit: Decimal    # points per major currency unit spent (1 CNY = 100 fen)
    minor_per_unit: int
    expiry: timedelta

    @classmethod
    def parse(cls, points_per_unit: str, minor_per_unit: int, expiry_days: int) -> "PointsPolicy":
        try:
            rate = Decimal(points_per_unit)
        except ArithmeticError:
            raise PolicyError("MEMBER_POINTS_PER_UNIT must be a number") from None
        if not rate.is_finite() or rate < 0:
            raise PolicyError("MEMBER_POINTS_PER_UNIT must be >= 0")
        if minor_per_unit < 1:
            raise PolicyError("MEMBER_MINOR_PER_UNIT must be >= 1")
        if expiry_days < 1:
            raise PolicyError("MEMBER_POINTS_EXPIRY_DAYS must be >= 1")
        return cls(rate, minor_per_unit, timedelta(days=expiry_days))

    def earn(self, total: int, multiplier: Decimal) -> int:
        """Points for an order total (minor units): floor(total / minor_per_unit
        * points_per_unit * multiplier). Never negative."""
        if total <= 0:
            return 0
        return max(0, _floor(Decimal(total) * self.points_per_unit * multiplier / self.minor_per_unit))

    def expires_at(self, earned_at: datetime) -> datetime:
        return earned_at + self.expiry


def merchandise_total(order_data: dict) -> int:
    """What the goods cost after discounts: the sum of the order's line totals
    (the shipping fee is not merchandise). Falls back to the order total."""
    lines = order_data.get("lines") or []
    if lines and all(isinstance(line.get("line_total"), int) for line in lines):
        return sum(line["line_total"] for line in lines)
    return order_data["total"]


def points_base(order: dict) -> int:
    """Points are earned on merchandise, so returning every item reverses every
    point (a refund of the shipping fee too only caps at what was earned)."""
    return order.get("merchandise") or order["total"]


def reversal_target(earned: int, order_total: int, refunded: int) -> int:
    """Points to have taken back after `refunded` of `order_total` came back:
    floor(earned * refunded / total), capped at `earned` (never more than the
    order earned). Computed on the cumulative refund so partial refunds never
    drift by rounding; a full refund reverses exactly what was earned."""
    if earned <= 0 or refunded <= 0:
        return 0
    if order_total <= 0 or refunded >= order_total:
        return earned
    return min(earned, earned * refunded // order_total)


def reversal_due(earned: int, already_reversed: int, order_total: int, refunded: int) -> int:
    return max(0, reversal_target(earned, order_total, refunded) - already_reversed)


def lot_remaining_after_earn(points: int, balance_before: int) -> int:
    """An earn first pays back any debt (a negative balance left by reversing
    points already spent); only the rest is spendable and can expire."""
    debt = max(0, -balance_before)
    return points - min(points, debt)


def plan_consumption(lots: Sequence[tuple[str, int]], points: int) -> tuple[list[tuple[str, int]], int]:
    """Take `points` from lots in the given order (oldest expiry first).
    Returns [(lot_id, taken)] and what the lots could not cover."""
    takes = []
    left = points
    for lot_id, remaining in lots:
        if left <= 0:
            break
        take = min(left, max(0, remaining))
        if take:
            takes.append((lot_id, take))
            left -= take
    return takes, left


# --------------------------------------------------------------------------- segments

@dataclass(frozen=True)
class SegmentPolicy:
    new_days: int
    active_days: int
    at_risk_days: int
    dormant_days: int

    def __post_init__(self):
        if not (0 < self.active_days < self.at_risk_days < self.dormant_days):
            raise PolicyError("segment windows must satisfy 0 < active < at_risk < dormant days")
        if not 0 < self.new_days <= self.at_risk_days:
            raise PolicyError("MEMBER_NEW_DAYS must be within 1..MEMBER_AT_RISK_DAYS")

    def cutoffs(self, now: datetime) -> dict[str, datetime]:
        return {"new": now - timedelta(days=self.new_days),
                "active": now - timedelta(days=self.active_days),
                "at_risk": now - timedelta(days=self.at_risk_days),
                "dormant": now - timedelta(days=self.dormant_days)}


def segment_of(registered_at: datetime, last_order_at: datetime | None, now: datetime,
               policy: SegmentPolicy) -> str:
    """Lifecycle segment by recency.

    Members who ordered: last paid order within active_days → active, within
    at_risk_days → at_risk, within dormant_days → dormant, else churned.
    Members who never ordered: registered within new_days → new; after that
    they age by registration date into at_risk, dormant, churned (never active)."""
    cut = policy.cutoffs(now)
    if last_order_at is None:
        if registered_at >= cut["new"]:
            return "new"
        reference = registered_at
    else:
        if last_order_at >= cut["active"]:
            return "active"
        reference = last_order_at
    if reference >= cut["at_risk"]:
        return "at_risk"
    if reference >= cut["dormant"]:
        return "dormant"
    return "churned"


@dataclass(frozen=True)
class RfmPolicy:
    recency_days: tuple[int, ...]    # 4 ascending day limits: <= first → 5 … beyond last → 1
    frequency: tuple[int, ...]       # 4 ascending order counts: score = 1 + limits reached
    monetary: tuple[int, ...]        # 4 ascending spends (minor units): score = 1 + limits reached

    @classmethod
    def parse(cls, recency: str, frequency: str, monetary: str) -> "RfmPolicy":
        def ints(text: str, setting: str) -> tuple[int, ...]:
            try:
                values = tuple(int(p) for p in text.split(",") if p.strip())
            except ValueError:
                raise PolicyError(f"{setting}: expected comma-separated integers") from None
            if len(values) != 4 or list(values) != sorted(set(values)) or values[0] < 0:
                raise PolicyError(f"{setting}: expected 4 strictly increasing non-negative integers")
            return values
        return cls(ints(recency, "MEMBER_RFM_RECENCY_DAYS"),
                   ints(frequency, "MEMBER_RFM_FREQUENCY"),
                   ints(monetary, "MEMBER_RFM_MONETARY"))


def rfm_scores(last_order_at: datetime | None, orders: int, spend: int, now: datetime,
               policy: RfmPolicy) -> dict:
    """Recency, frequency and monetary scores 1..5 (5 best); all 0 for a member
    without a paid order. `score` is the three digits, e.g. "545"."""
    if last_order_at is None or orders <= 0:
        return {"r": 0, "f": 0, "m": 0, "score": "000"}
    days = max(0, (now - last_order_at).days)
    r = 1
    for index, limit in enumerate(policy.recency_days):
        if days <= limit:
            r = 5 - index
            break
    f = 1 + sum(1 for limit in policy.frequency if orders >= limit)
    m = 1 + sum(1 for limit in policy.monetary if spend >= limit)
    return {"r": r, "f": f, "m": m, "score": f"{r}{f}{m}"}


# --- event payloads ---------------------------------------------------------------------------

def registered_event(doc: dict, tier: Tier) -> dict:
    """`member_registered` data from a new member's document and its tier."""
    return {"member_id": doc["_id"], "region": doc.get("region"), "gender": doc.get("gender"),
            "birth_year": doc.get("birth_year"), "interests": list(doc.get("interests") or []),
            "tier": tier.name, "tier_discount_percent": tier.discount_percent,
            "version": doc["version"]}


def member_keys(data: dict) -> list[str]:
    """The member document an order event writes (points, tier): events of one member run
    one at a time in this process (shared.messaging.keyed) instead of conflicting."""
    return [f"member:{data['member_id']}"] if data.get("member_id") else []


def points_event(member_id: str, points: int, member_after: dict, order_id: str | None = None) -> dict:
    """The payload of points_earned / _reversed / _redeemed / _expired: the change and the
    member's balance and version after it."""
    return {"member_id": member_id, "points": points, "balance": member_after["points_balance"],
            "order_id": order_id, "version": member_after["version"]}


def tier_changed_event(member_id: str, old: str, new, direction: str, spend: int, version: int) -> dict:
    """`new`: the tier entered (its name, discount and points multiplier)."""
    return {"member_id": member_id, "old_tier": old, "new_tier": new.name, "tier": new.name,
            "tier_discount_percent": new.discount_percent, "points_multiplier": str(new.multiplier),
            "direction": direction, "spend_in_window": spend, "version": version}

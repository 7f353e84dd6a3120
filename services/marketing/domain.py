"""Marketing's pure rules besides pricing: coupon usability, campaign send decisions (consent,
frequency cap, quiet hours), experiment assignment, recommendations. No I/O; `now` is given."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from shared.clock import parse_iso, to_iso

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes are typed by people


# --- settings parsing -----------------------------------------------------------------------

def parse_tier_discounts(text: str) -> dict[str, int]:
    """"silver:2,gold:5" → {"silver": 200, "gold": 500} (basis points)."""
    out: dict[str, int] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, _, pct = part.partition(":")
        bp = int(round(float(pct) * 100))
        if not 0 <= bp <= 10_000:
            raise ValueError(f"tier discount {part!r} is outside 0-100 %")
        out[name.strip()] = bp
    return out


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> "QuietHours | None":
        """"21:00-09:00" (local time in SHOP_TIMEZONE); empty → no quiet hours."""
        if not text or not text.strip():
            return None
        left, _, right = text.strip().partition("-")
        return cls(time.fromisoformat(left.strip()), time.fromisoformat(right.strip()))

    def contains(self, now: datetime, zone: ZoneInfo) -> bool:
        local = now.astimezone(zone).time()
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def ends_after(self, now: datetime, zone: ZoneInfo) -> datetime:
        """The first moment at or after `now` outside quiet hours (UTC)."""
        if not self.contains(now, zone):
            return now
        local = now.astimezone(zone)
        candidate = local.replace(hour=self.end.hour, minute=self.end.minute, second=0,
                                  microsecond=0)
        if candidate <= local:
            candidate += timedelta(days=1)
        return candidate.astimezone(ZoneInfo("UTC"))


# --- coupons ---------------------------------------------------------------------------------

def coupon_problem(coupon: dict | None, promotion: dict | None, member_uses: int,
                   now: datetime, subtotal: int | None = None) -> str | None:
    """Why a coupon cannot be used now by this member (None when it can).

    Reasons: unknown_code, not_started, expired, promotion_inactive, exhausted,
    member_limit_reached, threshold_not_met."""
    if coupon is None or promotion is None:
        return "unknown_code"
    if parse_iso(coupon["starts_at"]) > now:
        return "not_started"
    if coupon.get("ends_at") and now >= parse_iso(coupon["ends_at"]):
        return "expired"
    if promotion.get("status") != "active" or parse_iso(promotion["starts_at"]) > now or (
            promotion.get("ends_at") and now >= parse_iso(promotion["ends_at"])):
        return "promotion_inactive"
    limit = coupon.get("max_redemptions")
    if limit is not None and coupon.get("used", 0) >= limit:
        return "exhausted"
    per_member = coupon.get("per_member_limit")
    if per_member is not None and member_uses >= per_member:
        return "member_limit_reached"
    if subtotal is not None and subtotal < (promotion.get("min_subtotal") or 0):
        return "threshold_not_met"
    return None


def generate_codes(prefix: str, count: int, length: int = 8) -> list[str]:
    codes: set[str] = set()
    while len(codes) < count:
        body = "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))
        codes.add(f"{prefix}{body}" if prefix else body)
    return sorted(codes)


def normalize_code(code: str) -> str:
    return code.strip().upper()


# --- campaigns -------------------------------------------------------------------------------

def has_consent(member: dict | None, channel: str) -> bool:
    if not member or member.get("erased"):
        return False
    return bool(((member.get("consents") or {}).get(channel) or {}).get("granted"))


def recent_sends(sends: list[str], now: datetime, window: timedelta) -> list[str]:
    cutoff = now - window
    return [s for s in sends if parse_iso(s) > cutoff]


def send_decision(member: dict | None, channel: str, sends: list[str], now: datetime,
                  cap: int, window: timedelta) -> str:
    """"send", or why not: no_consent (also erased or unknown members) or frequency_cap."""
    if not has_consent(member, channel):
        return "no_consent"
    if cap >= 0 and len(recent_sends(sends, now, window)) >= cap:
        return "frequency_cap"
    return "send"


def record_send(sends: list[str], now: datetime, window: timedelta) -> list[str]:
    return [*recent_sends(sends, now, window), to_iso(now)]


def render(template: dict, values: dict) -> dict:
    """Fill `{placeholders}` of subject/body with ids (never personal data)."""

    class Safe(dict):
        def __missing__(self, key):
            return "{" + key + "}"

    return {k: str(v).format_map(Safe(values)) for k, v in template.items()}


TRANSACTIONAL = {
    "order_confirmed": {"subject": "Order {order_id} confirmed",
                        "body": "We received your payment for order {order_id}."},
    "order_shipped": {"subject": "Order {order_id} shipped",
                      "body": "Your order {order_id} is on its way."},
    "order_delivered": {"subject": "Order {order_id} delivered",
                        "body": "Your order {order_id} was delivered. Enjoy!"},
    "order_refunded": {"subject": "Refund for order {order_id}",
                       "body": "We refunded {amount} ({currency} minor units) for order {order_id}."},
    "order_cancelled": {"subject": "Order {order_id} cancelled",
                        "body": "Your order {order_id} was cancelled."},
}


# --- experiments -----------------------------------------------------------------------------

def bucket(experiment_key: str, subject_id: str) -> float:
    """A stable number in [0, 1) for (experiment, subject)."""
    digest = hashlib.sha256(f"{experiment_key}:{subject_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def assign(experiment_key: str, subject_id: str, variants: list[dict]) -> str:
    """The variant for a subject: deterministic, split by weight (weight 0 never assigned)."""
    total = sum(float(v["weight"]) for v in variants)
    if total <= 0:
        raise ValueError("weights must sum to a positive number")
    point = bucket(experiment_key, subject_id) * total
    running = 0.0
    for variant in variants:
        running += float(variant["weight"])
        if point < running and float(variant["weight"]) > 0:
            return variant["name"]
    return next(v["name"] for v in reversed(variants) if float(v["weight"]) > 0)


# --- recommendations -------------------------------------------------------------------------

def recommend(bought: set[str], co_purchases: dict[str, dict[str, int]], interest_products: list[dict],
              best_sellers: list[dict], unavailable: set[str], limit: int) -> list[dict]:
    """Rank products for a member.

    Score: co-purchase counts with what the member bought (weight 1 each), then products in the
    member's interest categories (by units sold), then best sellers. Already bought and
    unavailable (unpublished, low on stock) products are left out."""
    scores: dict[str, float] = {}
    reasons: dict[str, str] = {}
    for source, others in co_purchases.items():
        for other, count in others.items():
            if other in bought or other in unavailable:
                continue
            scores[other] = scores.get(other, 0) + count
            reasons.setdefault(other, f"bought together with {source}")
    ranked = sorted(scores, key=lambda p: (-scores[p], p))
    out = [{"product_id": p, "score": scores[p], "reason": reasons[p]} for p in ranked]
    seen = {r["product_id"] for r in out}
    for fill, reason in ((interest_products, "matches interests"), (best_sellers, "best seller")):
        for item in fill:
            pid = item["product_id"]
            if pid in seen or pid in bought or pid in unavailable:
                continue
            label = f"{reason} ({item['category']})" if reason == "matches interests" else reason
            out.append({"product_id": pid, "score": 0, "reason": label})
            seen.add(pid)
    return out[:limit]


# --- event payloads ---------------------------------------------------------------------------

def coupon_use_event(reservation: dict) -> dict:
    """`coupon_redeemed` / `coupon_released` data from a coupon reservation (`_id`: the order)."""
    return {"code": reservation["code"], "promotion_id": reservation["promotion_id"],
            "order_id": reservation["_id"], "member_id": reservation["member_id"],
            "discount": reservation["discount"]}


def message_sent_event(message: dict) -> dict:
    """`message_sent` data from a message as it was sent."""
    return {"message_id": message["id"], "campaign_id": message["campaign_id"],
            "member_id": message["member_id"], "channel": message["channel"],
            "kind": message["kind"], "cost": message["cost"]}


def purchase_keys(data: dict) -> list[str]:
    """What a paid order's counters write (a best seller's count, the member's purchases):
    handlers sharing one run one at a time in this process (shared.messaging.keyed)."""
    keys = [f"product:{line['product_id']}" for line in data.get("lines") or ()
            if isinstance(line, dict) and line.get("product_id")]
    return keys + member_keys(data)


def member_keys(data: dict) -> list[str]:
    """A member's read-model document, which member events arriving together all write."""
    return [f"member:{data['member_id']}"] if data.get("member_id") else []

"""Events published by the member service: registration, consent, points, tiers, erasure."""
from __future__ import annotations

from marshmallow import fields

from shared.events.base import EventData, event
from shared.events.fields import CHANNELS, Choice, Count, Id, Text, Version, WholeNumber

SOURCE = "member"

MEMBER_ID = "mem_01JD7Q4W2E6R8T0Y1U3I5O7P9A"
ORDER_ID = "ord_01JD8Z6R9M4T5VQ2W3X7Y8K1PA"


@event(SOURCE, "member_registered", consumers=["order", "marketing", "analytics"], example={
    "member_id": MEMBER_ID, "region": "Shanghai", "gender": "female", "birth_year": 1994,
    "interests": ["skincare", "running"], "tier": "bronze", "tier_discount_percent": 0,
    "version": 1,
})
class MemberRegistered(EventData):
    """A member registered. Persona fields only: no email, phone or name (personal data).
    `version` is the member's (1; the consents given at registration carry the same)."""

    member_id = Id(required=True)
    version = Version(required=True)
    region = fields.Str(required=True, allow_none=True)
    gender = fields.Str(required=True, allow_none=True)
    birth_year = WholeNumber(required=True, allow_none=True, minimum=1900, maximum=2100)
    interests = fields.List(Text(), required=True)
    tier = Text(required=True)
    tier_discount_percent = WholeNumber(minimum=0, maximum=100, metadata={
        "description": "the discount percent marketing's pricing applies for the tier"})


@event(SOURCE, "member_consent_changed", consumers=["marketing"], example={
    "member_id": MEMBER_ID, "channel": "sms", "granted": False, "version": 4,
})
class MemberConsentChanged(EventData):
    """A member granted or withdrew marketing consent on one channel."""

    member_id = Id(required=True)
    version = Version(required=True)
    channel = Choice(CHANNELS, required=True)
    granted = fields.Bool(required=True)


class PointsMoved(EventData):
    """A member's points changed. `points` is the size of the move, `balance` the result
    (negative when points already redeemed are reversed on a refund)."""

    member_id = Id(required=True)
    points = Count(required=True)
    balance = WholeNumber(required=True)
    version = Version(required=True)
    order_id = Id(required=True, allow_none=True,
                  metadata={"description": "null when no order caused it"})


@event(SOURCE, "points_earned", consumers=["analytics"], example={
    "member_id": MEMBER_ID, "points": 327, "balance": 1527, "order_id": ORDER_ID, "version": 5,
})
class PointsEarned(PointsMoved):
    """Points earned on a completed order."""


@event(SOURCE, "points_redeemed", consumers=["analytics"], example={
    "member_id": MEMBER_ID, "points": 500, "balance": 1027, "order_id": None, "version": 6,
})
class PointsRedeemed(PointsMoved):
    """Points spent by the member."""


@event(SOURCE, "points_expired", consumers=["analytics"], example={
    "member_id": MEMBER_ID, "points": 200, "balance": 827, "order_id": None, "version": 7,
})
class PointsExpired(PointsMoved):
    """Points that reached their expiry date."""


@event(SOURCE, "points_reversed", consumers=["analytics"], example={
    "member_id": MEMBER_ID, "points": 119, "balance": 708, "order_id": ORDER_ID, "version": 8,
})
class PointsReversed(PointsMoved):
    """Points taken back because the order that earned them was refunded."""


@event(SOURCE, "tier_changed", consumers=["order", "marketing", "analytics"], example={
    "member_id": MEMBER_ID, "old_tier": "bronze", "new_tier": "silver", "tier": "silver",
    "tier_discount_percent": 3, "points_multiplier": "1.25", "direction": "upgrade",
    "spend_in_window": 215000, "version": 3,
})
class TierChanged(EventData):
    """A member moved to another tier (and its benefits)."""

    member_id = Id(required=True)
    version = Version(required=True)
    old_tier = Text(required=True)
    new_tier = Text(required=True)
    tier = Text(metadata={"description": "the new tier (same as new_tier)"})
    tier_discount_percent = WholeNumber(minimum=0, maximum=100, metadata={
        "description": "the discount percent marketing's pricing applies for the new tier"})
    points_multiplier = Text(metadata={"description": "points multiplier of the new tier, a decimal string"})
    direction = Choice(("upgrade", "downgrade"))
    spend_in_window = WholeNumber(minimum=0, metadata={
        "description": "paid spend net of refunds in the rolling window (minor units)"})


@event(SOURCE, "member_erased",
       consumers=["catalog", "order", "fulfillment", "marketing", "analytics"],
       example={"member_id": MEMBER_ID, "version": 9})
class MemberErased(EventData):
    """A member's personal data was erased on request; every holder redacts its copy.
    Erasure is final: holders apply it whenever it arrives and refuse what comes later, so
    `version` (the member's, as of the erasure) is informative and not required."""

    member_id = Id(required=True)
    version = Version()

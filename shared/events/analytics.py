"""Tracking events analytics ingests from its collector (`POST /track`), not from the broker.

Browsers and apps report sessions and views over HTTP; no service publishes these
on an exchange, so their source "tracking" has no `tracking.events` exchange and
no queue binds to it. They are declared here so that the collector validates them
with the same tolerant schemas, and so that they are documented with the rest.
"""
from __future__ import annotations

from marshmallow import fields

from shared.events.base import EventData, event
from shared.events.fields import Count, Currency, Id, IsoTime, Money, Text

SOURCE = "tracking"
CONSUMERS = ["analytics"]

SESSION_ID = "ses_01JD8X0A2B4C6D8E0F2G4H6J8K"
MEMBER_ID = "mem_01JD7Q4W2E6R8T0Y1U3I5O7P9A"
PRODUCT_ID = "prd_01JD8Y2K5V7MZ3QF6R9T1W4XAB"


class TrackingEvent(EventData):
    """What every tracking event carries: the session, the member once known, the time."""

    session_id = Id(required=True)
    member_id = Id(allow_none=True, metadata={"description": "null or absent when anonymous"})
    occurred_at = IsoTime(required=True)


@event(SOURCE, "session_started", consumers=CONSUMERS, example={
    "session_id": SESSION_ID, "member_id": None, "occurred_at": "2026-11-26T11:58:02Z",
    "landing_path": "/promo/winter", "referrer": "https://www.douyin.com/",
    "campaign_id": "cmp_01JD2A4B6C8D0E2F4G6H8J0K2M", "referral_code": None, "device": "mobile",
})
class SessionStarted(TrackingEvent):
    """A visitor's session began; campaign and referral come from the landing URL."""

    landing_path = fields.Str(allow_none=True)
    referrer = fields.Str(allow_none=True)
    campaign_id = fields.Str(allow_none=True)
    referral_code = fields.Str(allow_none=True)
    device = fields.Str(allow_none=True)


@event(SOURCE, "page_viewed", consumers=CONSUMERS, example={
    "session_id": SESSION_ID, "member_id": MEMBER_ID, "occurred_at": "2026-11-26T11:58:40Z",
    "path": "/category/apparel", "referrer": "/promo/winter",
})
class PageViewed(TrackingEvent):
    """A page was viewed."""

    path = Text()
    referrer = fields.Str(allow_none=True)


@event(SOURCE, "product_viewed", consumers=CONSUMERS, example={
    "session_id": SESSION_ID, "member_id": MEMBER_ID, "occurred_at": "2026-11-26T11:59:05Z",
    "product_id": PRODUCT_ID, "category": "apparel",
})
class ProductViewed(TrackingEvent):
    """A product page was viewed (counted as a page view too)."""

    product_id = Id(required=True)
    category = fields.Str(allow_none=True)


@event(SOURCE, "cart_updated", consumers=CONSUMERS, example={
    "session_id": SESSION_ID, "member_id": MEMBER_ID, "occurred_at": "2026-11-26T11:59:30Z",
    "product_id": PRODUCT_ID, "quantity": 2,
})
class CartUpdated(TrackingEvent):
    """A cart line changed; `quantity` is the line's new quantity (0: removed)."""

    product_id = Id(required=True)
    quantity = Count(required=True)


@event(SOURCE, "checkout_started", consumers=CONSUMERS, example={
    "session_id": SESSION_ID, "member_id": MEMBER_ID, "occurred_at": "2026-11-26T12:00:00Z",
    "cart_value": 34700, "currency": "CNY", "item_count": 3,
})
class CheckoutStarted(TrackingEvent):
    """The visitor went to checkout; `cart_value` is before discounts, in minor units."""

    cart_value = Money()
    currency = Currency()
    item_count = Count()

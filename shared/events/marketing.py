"""Events published by the marketing service: promotions, coupons, campaigns, ads, experiments."""
from __future__ import annotations

from marshmallow import ValidationError, fields, validate, validates_schema

from shared.events.base import EventData, event
from shared.events.fields import (
    CHANNELS,
    Choice,
    Count,
    Currency,
    Id,
    IsoDate,
    IsoTime,
    Money,
    Part,
    Text,
    lines_of,
)

SOURCE = "marketing"

MESSAGE_KINDS = ("marketing", "transactional")

PROMOTION_ID = "prm_01JD3H5J7K9L1M3N5P7Q9R1S3T"
CAMPAIGN_ID = "cmp_01JD2A4B6C8D0E2F4G6H8J0K2M"
ORDER_ID = "ord_01JD8Z6R9M4T5VQ2W3X7Y8K1PA"
MEMBER_ID = "mem_01JD7Q4W2E6R8T0Y1U3I5O7P9A"


class PromotionWindow(EventData):
    """A promotion (a discount rule) and when it applies."""

    promotion_id = Id(required=True)
    kind = Text(required=True)
    starts_at = IsoTime(required=True)
    ends_at = IsoTime(required=True, allow_none=True,
                      metadata={"description": "null for a promotion without an end"})


@event(SOURCE, "promotion_created", consumers=["analytics"], example={
    "promotion_id": PROMOTION_ID, "kind": "coupon", "starts_at": "2026-11-20T16:00:00Z",
    "ends_at": "2026-12-01T16:00:00Z",
})
class PromotionCreated(PromotionWindow):
    """A promotion was created."""


@event(SOURCE, "promotion_ended", consumers=["analytics"], example={
    "promotion_id": PROMOTION_ID, "kind": "coupon", "starts_at": "2026-11-20T16:00:00Z",
    "ends_at": "2026-11-28T09:30:00Z",
})
class PromotionEnded(PromotionWindow):
    """A promotion was ended (early, by an operator); `ends_at` is when it stopped."""


class CouponUse(EventData):
    """A coupon's use by an order, with the discount it gave."""

    code = Text(required=True)
    promotion_id = Id(required=True)
    order_id = Id(required=True)
    member_id = Id(required=True)
    discount = Money(required=True)


@event(SOURCE, "coupon_redeemed", consumers=["analytics"], example={
    "code": "WINTER20", "promotion_id": PROMOTION_ID, "order_id": ORDER_ID,
    "member_id": MEMBER_ID, "discount": 2000,
})
class CouponRedeemed(CouponUse):
    """A coupon reserved for an order was confirmed when the order was paid."""


@event(SOURCE, "coupon_released", consumers=["analytics"], example={
    "code": "WINTER20", "promotion_id": PROMOTION_ID, "order_id": ORDER_ID,
    "member_id": MEMBER_ID, "discount": 2000,
})
class CouponReleased(CouponUse):
    """A coupon reserved for an order was given back (cancelled, rejected or expired)."""


@event(SOURCE, "campaign_launched", consumers=["analytics"], example={
    "campaign_id": CAMPAIGN_ID, "channel": "email", "segment": "at_risk",
    "audience_size": 18240,
})
class CampaignLaunched(EventData):
    """A campaign went out to a member segment (consenting members only)."""

    campaign_id = Id(required=True)
    channel = Choice(CHANNELS, required=True)
    segment = Text(required=True)
    audience_size = Count(required=True)


@event(SOURCE, "message_sent", consumers=["analytics"], example={
    "message_id": "msg_01JD9C5D7E9F1G3H5J7K9M1N3P", "campaign_id": CAMPAIGN_ID,
    "member_id": MEMBER_ID, "channel": "email", "kind": "marketing", "cost": 3,
})
class MessageSent(EventData):
    """One message went to one member; `cost` (minor units) counts toward campaign ROI."""

    message_id = Id(required=True)
    campaign_id = Id(required=True, allow_none=True,
                     metadata={"description": "null for transactional messages"})
    member_id = Id(required=True)
    channel = Choice(CHANNELS, required=True)
    kind = Choice(MESSAGE_KINDS, required=True)
    cost = Money(required=True)


@event(SOURCE, "ad_spend_recorded", consumers=["analytics"], example={
    "channel": "douyin", "campaign_id": CAMPAIGN_ID, "amount": 1500000, "currency": "CNY",
    "date": "2026-11-25",
})
class AdSpendRecorded(EventData):
    """A day's ad spend on an advertising channel for a campaign."""

    channel = Text(required=True)
    campaign_id = Id(required=True)
    amount = Money(required=True)
    currency = Currency(required=True)
    date = IsoDate(required=True)


class Variant(Part):
    """An experiment arm and its share of the traffic."""

    name = Text(required=True)
    weight = fields.Float(validate=validate.Range(min=0))


@event(SOURCE, "experiment_created", consumers=["analytics"], example={
    "experiment_key": "checkout_button_color",
    "variants": [{"name": "control", "weight": 0.5}, {"name": "orange", "weight": 0.5}],
    "control": "control",
})
class ExperimentCreated(EventData):
    """An A/B experiment was set up; `control` names one of its variants."""

    experiment_key = Text(required=True)
    variants = lines_of(Variant, required=True, min_items=2)
    control = Text(required=True)

    @validates_schema(skip_on_field_errors=True)
    def _control_is_a_variant(self, data: dict, **kwargs) -> None:
        if data["control"] not in {v["name"] for v in data["variants"]}:
            raise ValidationError("Must name one of the variants.", "control")


@event(SOURCE, "experiment_exposed", consumers=["analytics"], example={
    "experiment_key": "checkout_button_color", "variant": "orange",
    "subject_id": MEMBER_ID,
})
class ExperimentExposed(EventData):
    """A subject (member or session) was assigned a variant and saw it."""

    experiment_key = Text(required=True)
    variant = Text(required=True)
    subject_id = Id(required=True)

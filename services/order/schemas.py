"""Marshmallow schemas of the order service's RPC payloads (validated at the edge)."""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate, validates_schema
from marshmallow import ValidationError as MarshmallowError

from services.order.domain import states

_ID = validate.Length(min=1, max=200)


class Line(Schema):
    class Meta:
        unknown = RAISE

    product_id = fields.Str(required=True, validate=_ID)
    quantity = fields.Int(required=True, strict=True, validate=validate.Range(min=1, max=999))


def _lines(**kwargs):
    return fields.List(fields.Nested(Line), required=True,
                       validate=validate.Length(min=1, max=100, error="must hold 1 to 100 lines"),
                       **kwargs)


class Quote(Schema):
    member_id = fields.Str(required=True, validate=_ID)
    lines = _lines()
    coupon_code = fields.Str(load_default=None, allow_none=True, validate=validate.Length(min=1, max=64))

    @validates_schema
    def distinct_products(self, data, **kwargs):
        seen = set()
        for index, line in enumerate(data.get("lines") or []):
            if line["product_id"] in seen:
                raise MarshmallowError({str(index): {"product_id": ["listed twice"]}}, "lines")
            seen.add(line["product_id"])


class Address(Schema):
    class Meta:
        unknown = RAISE

    name = fields.Str(required=True, validate=validate.Length(min=1, max=100))
    line1 = fields.Str(required=True, validate=validate.Length(min=1, max=300))
    city = fields.Str(required=True, validate=validate.Length(min=1, max=100))
    region = fields.Str(required=True, validate=validate.Length(min=1, max=100))
    postal_code = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=20))
    phone = fields.Str(load_default=None, allow_none=True,
                       validate=validate.Regexp(r"^\+?[0-9 \-]{5,20}$", error="not a phone number"))
    country = fields.Str(load_default=None, allow_none=True,
                         validate=validate.Regexp(r"^[A-Z]{2}$", error="not an ISO 3166 country code"))


class Payment(Schema):
    class Meta:
        unknown = RAISE

    token = fields.Str(required=True, validate=validate.Length(min=1, max=200))
    method = fields.Str(load_default="card", validate=validate.OneOf(["card", "wallet"]))


class Attribution(Schema):
    class Meta:
        unknown = RAISE

    session_id = fields.Str(load_default=None, allow_none=True, validate=_ID)
    campaign_id = fields.Str(load_default=None, allow_none=True, validate=_ID)
    referral_code = fields.Str(load_default=None, allow_none=True, validate=_ID)


class PlaceOrder(Quote):
    shipping_address = fields.Nested(Address, required=True)
    payment = fields.Nested(Payment, required=True)
    idempotency_key = fields.Str(load_default=None, allow_none=True, validate=_ID)
    attribution = fields.Nested(Attribution, load_default=None, allow_none=True)


class CancelOrder(Schema):
    order_id = fields.Str(required=True, validate=_ID)
    # "member" or "operator" travel as the event's reason; any other text is kept as a
    # note on the order (never logged) and the cancellation counts as the member's.
    reason = fields.Str(required=True, validate=validate.Length(min=1, max=200))


class RequestReturn(Schema):
    order_id = fields.Str(required=True, validate=_ID)
    lines = _lines()
    reason = fields.Str(required=True, validate=validate.Length(min=1, max=100))


class ListOrders(Schema):
    member_id = fields.Str(load_default=None, allow_none=True, validate=_ID)
    status = fields.Str(load_default=None, allow_none=True, validate=validate.OneOf(states.STATES))
    since = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=None)
    until = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=None)
    page = fields.Int(load_default=1, strict=True, validate=validate.Range(min=1))
    page_size = fields.Int(load_default=20, strict=True, validate=validate.Range(min=1, max=200))


class Now(Schema):
    now = fields.AwareDateTime(load_default=None, allow_none=True)

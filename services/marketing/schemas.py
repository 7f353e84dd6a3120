"""Marshmallow schemas of marketing's RPC payloads: validated at the edge, before any write."""
from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from services.marketing.pricing import KINDS, STACKING, TRIGGERS
from shared.clock import parse_iso
from shared.events.fields import CHANNELS, ISO_8601, ISO_DATE

MAX_BATCH = 10_000


class Strict(Schema):
    class Meta:
        unknown = RAISE


def _text(**kw):
    return fields.Str(validate=validate.Length(min=1, max=kw.pop("max", 200)), **kw)


def _money(**kw):
    return fields.Int(strict=True, validate=validate.Range(min=0), **kw)


def _iso(**kw):
    return fields.Str(validate=validate.Regexp(ISO_8601, error="Not an ISO 8601 timestamp."), **kw)


def _window(data: dict, start: str = "starts_at", end: str = "ends_at") -> None:
    if data.get(start) and data.get(end) and parse_iso(data[end]) <= parse_iso(data[start]):
        raise ValidationError("Must be after starts_at.", end)


class CartLine(Schema):
    product_id = _text(required=True)
    category = _text(required=True)
    unit_price = _money(required=True)
    quantity = fields.Int(strict=True, required=True, validate=validate.Range(min=1, max=10_000))


class PriceCart(Schema):
    member_id = _text(required=True)
    lines = fields.List(fields.Nested(CartLine), required=True,
                        validate=validate.Length(min=1, max=500))
    coupon_code = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=64))
    tier = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=50))
    order_id = fields.Str(load_default=None, allow_none=True, validate=validate.Length(min=1, max=200))


class Scope(Strict):
    product_ids = fields.List(_text(), load_default=list)
    categories = fields.List(_text(), load_default=list)
    tiers = fields.List(_text(), load_default=list)


class Promotion(Strict):
    name = _text(required=True)
    kind = fields.Str(required=True, validate=validate.OneOf(KINDS))
    percent = fields.Float(load_default=None, allow_none=True,
                           validate=validate.Range(min=0, max=100, min_inclusive=False))
    amount = fields.Int(strict=True, load_default=None, allow_none=True,
                        validate=validate.Range(min=1))
    min_subtotal = fields.Int(strict=True, load_default=0, validate=validate.Range(min=0))
    repeat = fields.Bool(load_default=False)
    trigger = fields.Str(load_default="automatic", validate=validate.OneOf(TRIGGERS))
    scope = fields.Nested(Scope, load_default=dict)
    starts_at = _iso(required=True)
    ends_at = _iso(load_default=None, allow_none=True)
    priority = fields.Int(strict=True, load_default=0, validate=validate.Range(min=-1000, max=1000))
    stacking = fields.Str(load_default="combinable", validate=validate.OneOf(STACKING))
    max_discount = fields.Int(strict=True, load_default=None, allow_none=True,
                              validate=validate.Range(min=1))

    @validates_schema(skip_on_field_errors=True)
    def _rules(self, data: dict, **kwargs) -> None:
        _window(data)
        kind = data["kind"]
        if kind == "percent_off" and data.get("percent") is None:
            raise ValidationError("Required for percent_off.", "percent")
        if kind == "percent_off" and round(data["percent"] * 100) != data["percent"] * 100:
            raise ValidationError("At most two decimals.", "percent")
        if kind in ("amount_off", "threshold") and data.get("amount") is None:
            raise ValidationError(f"Required for {kind}.", "amount")
        if kind == "threshold" and not data.get("min_subtotal"):
            raise ValidationError("Required (above 0) for threshold.", "min_subtotal")


class CouponBatch(Strict):
    promotion_id = _text(required=True)
    code = fields.Str(load_default=None, allow_none=True,
                      validate=validate.Regexp(r"^[A-Za-z0-9_-]{3,64}$",
                                               error="3-64 letters, digits, - or _."))
    count = fields.Int(strict=True, load_default=None, allow_none=True,
                       validate=validate.Range(min=1, max=MAX_BATCH))
    prefix = fields.Str(load_default="", validate=validate.Regexp(r"^[A-Za-z0-9_-]{0,16}$"))
    max_redemptions = fields.Int(strict=True, load_default=None, allow_none=True,
                                 validate=validate.Range(min=1))
    per_member_limit = fields.Int(strict=True, load_default=1, allow_none=True,
                                  validate=validate.Range(min=1))
    starts_at = _iso(required=True)
    ends_at = _iso(load_default=None, allow_none=True)

    @validates_schema(skip_on_field_errors=True)
    def _one_or_batch(self, data: dict, **kwargs) -> None:
        _window(data)
        if (data.get("code") is None) == (data.get("count") is None):
            raise ValidationError("Give either code or count.", "code")


class ValidateCoupon(Schema):
    code = _text(required=True, max=64)
    member_id = _text(required=True)
    subtotal = _money(required=True)


class Template(Strict):
    subject = fields.Str(load_default="", validate=validate.Length(max=200))
    body = fields.Str(required=True, validate=validate.Length(min=1, max=5000))


class Campaign(Strict):
    name = _text(required=True)
    segment = _text(required=True, max=100)
    channel = fields.Str(required=True, validate=validate.OneOf(CHANNELS))
    template = fields.Nested(Template, required=True)
    scheduled_at = _iso(load_default=None, allow_none=True)
    budget = _money(load_default=None, allow_none=True)


class ReferralCode(Strict):
    code = fields.Str(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_-]{3,64}$",
                                                              error="3-64 letters, digits, - or _."))
    owner = _text(required=True)
    kind = fields.Str(load_default="referral", validate=validate.OneOf(("referral", "kol")))
    campaign_id = fields.Str(load_default=None, allow_none=True)


class AdSpend(Strict):
    channel = _text(required=True, max=50)
    campaign_id = _text(required=True)
    amount = _money(required=True)
    date = fields.Str(required=True, validate=validate.Regexp(ISO_DATE, error="Not an ISO date."))
    currency = fields.Str(load_default=None, allow_none=True)
    request_id = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=200))


class Variant(Strict):
    name = _text(required=True, max=50)
    weight = fields.Float(required=True, validate=validate.Range(min=0))


class Experiment(Strict):
    key = fields.Str(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_.-]{1,100}$"))
    variants = fields.List(fields.Nested(Variant), required=True, validate=validate.Length(min=2, max=20))
    control = _text(required=True, max=50)
    description = fields.Str(load_default="", validate=validate.Length(max=1000))

    @validates_schema(skip_on_field_errors=True)
    def _variants(self, data: dict, **kwargs) -> None:
        names = [v["name"] for v in data["variants"]]
        if len(set(names)) != len(names):
            raise ValidationError("Variant names must be unique.", "variants")
        if not sum(v["weight"] for v in data["variants"]) > 0:
            raise ValidationError("Weights must sum to a positive number.", "variants")
        if data["control"] not in names:
            raise ValidationError("Must name one of the variants.", "control")


class Assign(Schema):
    experiment_key = _text(required=True, max=100)
    subject_id = _text(required=True)


class Recommend(Schema):
    member_id = _text(required=True)
    limit = fields.Int(strict=True, load_default=10, validate=validate.Range(min=1, max=100))


class Unsubscribe(Schema):
    member_id = _text(required=True)
    channel = fields.Str(required=True, validate=validate.OneOf(CHANNELS))

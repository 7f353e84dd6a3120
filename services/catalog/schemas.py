"""Marshmallow schemas of the catalog's RPC payloads: validated at the edge,
before anything is written. Unknown fields are rejected by name."""
from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

SORTS = ("relevance", "price", "price_asc", "price_desc", "sales", "rating", "newest")
MODERATION = ("approved", "rejected")
REVIEW_STATUSES = ("pending", "approved", "rejected")


class Strict(Schema):
    class Meta:
        unknown = RAISE


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be empty.")


Title = lambda **kw: fields.Str(validate=[validate.Length(min=1, max=200), _not_blank], **kw)  # noqa: E731
Price = lambda **kw: fields.Int(strict=True, validate=validate.Range(min=0, max=10**11), **kw)  # noqa: E731
Threshold = lambda **kw: fields.Int(strict=True, validate=validate.Range(min=0, max=10**9), **kw)  # noqa: E731
Ident = lambda **kw: fields.Str(validate=[validate.Length(min=1, max=100), _not_blank], **kw)  # noqa: E731


class NewProduct(Strict):
    sku = fields.Str(required=True, validate=[validate.Length(min=1, max=64), _not_blank])
    title = Title(required=True)
    description = fields.Str(load_default="", validate=validate.Length(max=10000))
    category = Ident(required=True)
    price = Price(required=True)
    currency = fields.Str(load_default=None, allow_none=True)
    stock = fields.Int(strict=True, load_default=0, validate=validate.Range(min=0, max=10**9))
    merchant_id = Ident(load_default=None, allow_none=True)
    low_stock_threshold = Threshold(load_default=None, allow_none=True)
    attributes = fields.Dict(keys=fields.Str(), load_default=dict)
    images = fields.List(fields.Url(schemes={"http", "https"}), load_default=list,
                         validate=validate.Length(max=50))


class ProductChanges(Strict):
    """What `update_product` may change (price: `set_price`; stock: `adjust_stock`)."""

    title = Title()
    description = fields.Str(validate=validate.Length(max=10000))
    category = Ident()
    attributes = fields.Dict(keys=fields.Str())
    images = fields.List(fields.Url(schemes={"http", "https"}), validate=validate.Length(max=50))
    low_stock_threshold = Threshold()


class UpdateProduct(Strict):
    product_id = Ident(required=True)
    changes = fields.Nested(ProductChanges, required=True)

    @validates("changes")
    def _some(self, value, **_):
        if not value:
            raise ValidationError("Name at least one field to change.")


class ProductRef(Strict):
    product_id = Ident(required=True)


class SetPrice(Strict):
    product_id = Ident(required=True)
    price = Price(required=True)
    currency = fields.Str(load_default=None, allow_none=True)
    changed_by = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=100))


class Search(Strict):
    query = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=200))
    category = fields.Str(load_default=None, allow_none=True)
    sort = fields.Str(load_default="relevance", validate=validate.OneOf(SORTS))
    page = fields.Int(strict=True, load_default=1, validate=validate.Range(min=1, max=10000))
    page_size = fields.Int(strict=True, load_default=20, validate=validate.Range(min=1, max=100))


class AdjustStock(Strict):
    product_id = Ident(required=True)
    delta = fields.Int(strict=True, required=True, validate=validate.Range(min=-10**9, max=10**9))
    reason = fields.Str(required=True, validate=[validate.Length(min=1, max=200), _not_blank])


class NewMerchant(Strict):
    name = Title(required=True)
    contact_email = fields.Email(load_default=None, allow_none=True)
    description = fields.Str(load_default="", validate=validate.Length(max=5000))


class MerchantAction(Strict):
    merchant_id = Ident(required=True)
    reason = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=500))


class MerchantActionWithReason(MerchantAction):
    reason = fields.Str(required=True, validate=[validate.Length(min=1, max=500), _not_blank])


class Penalty(Strict):
    merchant_id = Ident(required=True)
    kind = fields.Str(required=True, validate=validate.OneOf(("warning", "fine", "points")))
    reason = fields.Str(required=True, validate=[validate.Length(min=1, max=500), _not_blank])
    amount = fields.Int(strict=True, load_default=0, validate=validate.Range(min=0))


class NewReview(Strict):
    product_id = Ident(required=True)
    member_id = Ident(required=True)
    rating = fields.Int(strict=True, required=True, validate=validate.Range(min=1, max=5))
    text = fields.Str(load_default="", allow_none=True, validate=validate.Length(max=5000))


class Moderate(Strict):
    review_id = Ident(required=True)
    status = fields.Str(required=True, validate=validate.OneOf(MODERATION))
    note = fields.Str(load_default=None, allow_none=True, validate=validate.Length(max=500))


class ListReviews(Strict):
    product_id = Ident(load_default=None, allow_none=True)
    status = fields.Str(load_default="approved", validate=validate.OneOf(REVIEW_STATUSES))
    page = fields.Int(strict=True, load_default=1, validate=validate.Range(min=1))
    page_size = fields.Int(strict=True, load_default=20, validate=validate.Range(min=1, max=100))

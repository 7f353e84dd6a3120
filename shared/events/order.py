"""Events published by the order service: the order saga, cancellation, returns and refunds."""
from __future__ import annotations

from copy import deepcopy

from marshmallow import fields

from shared.events.base import EventData, event
from shared.events.fields import (
    Choice,
    Count,
    Currency,
    Id,
    Money,
    Part,
    ProductQuantity,
    ShortLine,
    Text,
    lines_of,
)

SOURCE = "order"

CANCEL_REASONS = ("member", "payment_failed", "expired", "operator")
REFUND_REASONS = ("return", "cancelled")

ORDER_ID = "ord_01JD8Z6R9M4T5VQ2W3X7Y8K1PA"
MEMBER_ID = "mem_01JD7Q4W2E6R8T0Y1U3I5O7P9A"
RETURN_ID = "ret_01JDB4C6D8E0F2G4H6J8K0M2N4"
PRODUCT_A = "prd_01JD8Y2K5V7MZ3QF6R9T1W4XAB"
PRODUCT_B = "prd_01JD8Y3M7N9P1Q3R5S7T9V1W3X"

# The example order: 2 x 129.00 with 20.00 off (coupon), 1 x 89.00; free shipping.
_LINES = [
    {"product_id": PRODUCT_A, "category": "apparel", "quantity": 2, "unit_price": 12900,
     "discount": 2000, "line_total": 23800},
    {"product_id": PRODUCT_B, "category": "beauty", "quantity": 1, "unit_price": 8900,
     "discount": 0, "line_total": 8900},
]
_TOTALS = {"subtotal": 34700, "discount": 2000, "shipping_fee": 0, "total": 32700}


def _lines() -> list[dict]:
    return deepcopy(_LINES)


class OrderLine(Part):
    """A priced order line; `line_total` = quantity * unit_price - discount."""

    product_id = Id(required=True)
    category = Text(required=True)
    quantity = Count(required=True, minimum=1)
    unit_price = Money(required=True)
    discount = Money(required=True)
    line_total = Money(required=True)


class Attribution(Part):
    """Where the order came from; each key is null when unknown."""

    session_id = fields.Str(required=True, allow_none=True)
    campaign_id = fields.Str(required=True, allow_none=True)
    referral_code = fields.Str(required=True, allow_none=True)


class ShippingAddress(Part):
    """The delivery address: personal data, carried only to fulfillment (on order_paid)."""

    region = Text(required=True)
    name = fields.Str(allow_none=True)
    line1 = fields.Str(allow_none=True)
    city = fields.Str(allow_none=True)
    postal_code = fields.Str(allow_none=True)
    phone = fields.Str(allow_none=True)
    country = fields.Str(allow_none=True)


class RefundLine(Part):
    """A refunded line; `amount` is its paid amount (its share of discounts taken off)."""

    product_id = Id(required=True)
    quantity = Count(required=True, minimum=1)
    amount = Money()


@event(SOURCE, "order_placed", consumers=["catalog", "marketing", "analytics"], example={
    "order_id": ORDER_ID, "member_id": MEMBER_ID, "lines": _lines(), **_TOTALS,
    "currency": "CNY", "coupon_code": "WINTER20",
    "promotion_ids": ["prm_01JD3H5J7K9L1M3N5P7Q9R1S3T"],
    "attribution": {"session_id": "ses_01JD8X0A2B4C6D8E0F2G4H6J8K",
                    "campaign_id": "cmp_01JD2A4B6C8D0E2F4G6H8J0K2M", "referral_code": None},
})
class OrderPlaced(EventData):
    """An order was priced and stored `pending`; catalog is asked to reserve its lines."""

    order_id = Id(required=True)
    member_id = Id(required=True)
    lines = lines_of(OrderLine, required=True)
    subtotal = Money(required=True)
    discount = Money(required=True)
    shipping_fee = Money(required=True)
    total = Money(required=True)
    currency = Currency(required=True)
    coupon_code = fields.Str(required=True, allow_none=True)
    promotion_ids = fields.List(Id(), required=True)
    attribution = fields.Nested(Attribution, required=True)


class OrderRef(EventData):
    """An order moved to a new state; the order id is all it carries."""

    order_id = Id(required=True)


@event(SOURCE, "order_confirmed", consumers=["analytics"], example={"order_id": ORDER_ID})
class OrderConfirmed(OrderRef):
    """Stock is reserved; payment is being captured."""


# catalog (sales counter) and member (paid spend for tiers) consume it too.
@event(SOURCE, "order_paid", consumers=["fulfillment", "marketing", "analytics", "catalog", "member"],
       example={
    "order_id": ORDER_ID, "member_id": MEMBER_ID, "lines": _lines(), "total": 32700,
    "currency": "CNY",
    "shipping_address": {"name": "Li Wei", "line1": "88 Century Avenue, Pudong",
                         "city": "Shanghai", "region": "Shanghai", "postal_code": "200120",
                         "phone": "+8613800138000", "country": "CN"},
    "payment_ref": "pay_sandbox_7f3c9a1e2b4d",
})
class OrderPaid(EventData):
    """Payment was captured; fulfillment allocates a shipment."""

    order_id = Id(required=True)
    member_id = Id(required=True)
    lines = lines_of(OrderLine, required=True)
    total = Money(required=True)
    currency = Currency(required=True)
    shipping_address = fields.Nested(ShippingAddress, required=True)
    payment_ref = Text(required=True)


@event(SOURCE, "payment_failed", consumers=["analytics"], example={
    "order_id": ORDER_ID, "reason": "card_declined",
})
class PaymentFailed(EventData):
    """The payment provider declined (the order is then cancelled)."""

    order_id = Id(required=True)
    reason = Text(required=True)


@event(SOURCE, "order_rejected", consumers=["marketing", "analytics"], example={
    "order_id": ORDER_ID, "reason": "insufficient_stock",
    "short_lines": [{"product_id": PRODUCT_A, "requested": 2, "available": 1}],
})
class OrderRejected(EventData):
    """The order could not be reserved; it is terminal and its coupon is released."""

    order_id = Id(required=True)
    reason = Text(required=True)
    short_lines = lines_of(ShortLine, required=True, min_items=0)


@event(SOURCE, "order_cancelled", consumers=["catalog", "marketing", "fulfillment", "analytics"],
       example={"order_id": ORDER_ID, "member_id": MEMBER_ID, "reason": "member",
                "was_paid": True})
class OrderCancelled(EventData):
    """The order was cancelled before dispatch; a paid one is then refunded."""

    order_id = Id(required=True)
    member_id = Id(required=True)
    reason = Choice(CANCEL_REASONS, required=True)
    was_paid = fields.Bool(required=True)


# marketing sends the "shipped" and "refund issued" notifications.
@event(SOURCE, "order_shipped", consumers=["analytics", "marketing"], example={"order_id": ORDER_ID})
class OrderShipped(OrderRef):
    """The order's shipment left the warehouse."""


@event(SOURCE, "order_delivered", consumers=["analytics"], example={"order_id": ORDER_ID})
class OrderDelivered(OrderRef):
    """The order's shipment was delivered."""


@event(SOURCE, "order_completed", consumers=["member", "marketing", "analytics"], example={
    "order_id": ORDER_ID, "member_id": MEMBER_ID, "total": 32700, "currency": "CNY",
    "lines": _lines(),
})
class OrderCompleted(EventData):
    """The order was delivered and is complete; members earn points on it."""

    order_id = Id(required=True)
    member_id = Id(required=True)
    total = Money(required=True)
    currency = Currency(required=True)
    lines = lines_of(OrderLine, required=True)


@event(SOURCE, "return_requested", consumers=["fulfillment", "analytics"], example={
    "return_id": RETURN_ID, "order_id": ORDER_ID, "member_id": MEMBER_ID,
    "lines": [{"product_id": PRODUCT_A, "quantity": 1}], "reason": "wrong_size",
})
class ReturnRequested(EventData):
    """A member asked to return lines of a delivered order; fulfillment expects them."""

    return_id = Id(required=True)
    order_id = Id(required=True)
    member_id = Id(required=True)
    lines = lines_of(ProductQuantity, required=True)
    reason = Text(required=True)


@event(SOURCE, "order_refunded", consumers=["member", "analytics", "marketing"], example={
    "refund_id": "rfd_01JDC8D0E2F4G6H8J0K2M4N6P8", "order_id": ORDER_ID,
    "member_id": MEMBER_ID, "return_id": RETURN_ID, "amount": 11900, "currency": "CNY",
    "reason": "return", "lines": [{"product_id": PRODUCT_A, "quantity": 1, "amount": 11900}],
})
class OrderRefunded(EventData):
    """Money went back to the member, for a return or a cancelled paid order."""

    refund_id = Id(required=True)
    order_id = Id(required=True)
    member_id = Id(required=True)
    return_id = Id(required=True, allow_none=True,
                   metadata={"description": "null when the refund is for a cancellation"})
    amount = Money(required=True)
    currency = Currency(required=True)
    reason = Choice(REFUND_REASONS, required=True)
    lines = lines_of(RefundLine, required=True)

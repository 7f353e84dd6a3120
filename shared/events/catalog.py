"""Events published by the catalog service: products, prices, stock, merchants, reviews."""
from __future__ import annotations

from marshmallow import fields

from shared.events.base import EventData, event
from shared.events.fields import (
    Count,
    Currency,
    Id,
    Money,
    ProductQuantity,
    ShortLine,
    Text,
    Version,
    WholeNumber,
    lines_of,
)

SOURCE = "catalog"

PRODUCT_ID = "prd_01JD8Y2K5V7MZ3QF6R9T1W4XAB"
ORDER_ID = "ord_01JD8Z6R9M4T5VQ2W3X7Y8K1PA"
MERCHANT_ID = "mch_01JD5N3B8C2D4E6F7G9H1J2K3L"
MEMBER_ID = "mem_01JD7Q4W2E6R8T0Y1U3I5O7P9A"


CARD = {"sku": "TEE-COTTON-WHT-M", "title": "Cotton crew T-shirt, white", "category": "apparel",
        "price": 12900, "currency": "CNY"}


class ProductState(EventData):
    """A change of a product's listing. Every such event carries the whole listing as of
    `version` (sku, title, category, price, currency, status), so a read model replaces its
    copy when the version is higher and loses nothing by skipping a lower one."""

    product_id = Id(required=True)
    version = Version(required=True)
    sku = Text()
    title = Text()
    category = Text()
    price = Money()
    currency = Currency()
    status = Text()


@event(SOURCE, "product_created", consumers=["order", "marketing", "analytics"], example={
    "product_id": PRODUCT_ID, **CARD, "merchant_id": MERCHANT_ID, "status": "draft", "version": 1,
})
class ProductCreated(ProductState):
    """A product entered the catalog (not yet on sale until published)."""

    sku = Text(required=True)
    title = Text(required=True)
    category = Text(required=True)
    price = Money(required=True)
    currency = Currency(required=True)
    merchant_id = Id(required=True, allow_none=True,
                     metadata={"description": "null for the platform's own products"})
    status = Text(required=True)


class ProductListing(ProductState):
    """A product's visibility changed."""

    category = Text(required=True)


@event(SOURCE, "product_published", consumers=["order", "marketing", "analytics"], example={
    "product_id": PRODUCT_ID, **CARD, "status": "published", "version": 2,
})
class ProductPublished(ProductListing):
    """A product went on sale."""


@event(SOURCE, "product_unpublished", consumers=["order", "marketing", "analytics"], example={
    "product_id": PRODUCT_ID, **CARD, "price": 9900, "status": "unpublished", "version": 4,
    "reason": None,
})
class ProductUnpublished(ProductListing):
    """A product was taken off sale."""


@event(SOURCE, "price_changed", consumers=["order", "analytics"], example={
    "product_id": PRODUCT_ID, "old_price": 12900, "new_price": 9900, **CARD, "price": 9900,
    "status": "published", "version": 3,
})
class PriceChanged(ProductState):
    """A product's price changed (tax-inclusive, minor units); `price` equals `new_price`."""

    old_price = Money(required=True)
    new_price = Money(required=True)


class StockState(EventData):
    """A change of a product's stock level. Every such event carries the whole level as of
    `version` (the product's version: listing and stock share one counter): on_hand,
    available, threshold and the low-stock flag."""

    product_id = Id(required=True)
    version = Version(required=True)
    on_hand = Count()
    available = Count(required=True)
    threshold = Count()
    low = fields.Bool()


@event(SOURCE, "stock_adjusted", consumers=["analytics"], example={
    "product_id": PRODUCT_ID, "delta": 50, "reason": "purchase_order_received",
    "on_hand": 170, "available": 158, "threshold": 5, "low": False, "version": 7,
})
class StockAdjusted(StockState):
    """An operator changed stock on hand; `delta` is signed. `low` is the flag before a
    crossing this change causes (the crossing follows as its own event, one version up)."""

    delta = WholeNumber(required=True)
    reason = Text(required=True)
    on_hand = Count(required=True)


@event(SOURCE, "stock_reserved", consumers=["order"], example={
    "order_id": ORDER_ID,
    "lines": [{"product_id": PRODUCT_ID, "quantity": 2},
              {"product_id": "prd_01JD8Y3M7N9P1Q3R5S7T9V1W3X", "quantity": 1}],
})
class StockReserved(EventData):
    """Every line of an order was reserved, atomically."""

    order_id = Id(required=True)
    lines = lines_of(ProductQuantity, required=True)


@event(SOURCE, "stock_reservation_failed", consumers=["order"], example={
    "order_id": ORDER_ID,
    "short_lines": [{"product_id": PRODUCT_ID, "requested": 2, "available": 1}],
})
class StockReservationFailed(EventData):
    """An order could not be reserved; nothing was reserved for it."""

    order_id = Id(required=True)
    short_lines = lines_of(ShortLine, required=True)


@event(SOURCE, "stock_released", consumers=["analytics"], example={
    "order_id": ORDER_ID, "lines": [{"product_id": PRODUCT_ID, "quantity": 2}],
    "reason": "order_cancelled",
})
class StockReleased(EventData):
    """An order's reservation was given back (cancellation or reservation TTL)."""

    order_id = Id(required=True)
    lines = lines_of(ProductQuantity, required=True)
    reason = Text()


class StockLevel(StockState):
    """A product's available stock crossed its low-stock threshold."""

    threshold = Count(required=True)


@event(SOURCE, "stock_ran_low", consumers=["marketing", "analytics"], example={
    "product_id": PRODUCT_ID, "available": 4, "threshold": 5, "on_hand": 16, "low": True,
    "version": 9,
})
class StockRanLow(StockLevel):
    """Available stock fell to or below the product's threshold."""


@event(SOURCE, "stock_replenished", consumers=["marketing", "analytics"], example={
    "product_id": PRODUCT_ID, "available": 120, "threshold": 5, "on_hand": 132, "low": False,
    "version": 12,
})
class StockReplenished(StockLevel):
    """Available stock rose above the product's threshold again."""


class MerchantStatusChanged(EventData):
    """A merchant's admission status changed; `status` and `version` are the merchant's."""

    merchant_id = Id(required=True)
    reason = fields.Str(required=True, allow_none=True)
    version = Version(required=True)
    status = Text()


@event(SOURCE, "merchant_approved", consumers=["analytics"], example={
    "merchant_id": MERCHANT_ID, "reason": None, "status": "approved", "version": 2,
})
class MerchantApproved(MerchantStatusChanged):
    """A merchant's application was approved; `reason` is null when none was given."""


@event(SOURCE, "merchant_suspended", consumers=["analytics"], example={
    "merchant_id": MERCHANT_ID, "reason": "counterfeit goods reported", "status": "suspended",
    "version": 3,
})
class MerchantSuspended(MerchantStatusChanged):
    """A merchant was suspended; no product of theirs sells until reinstated."""

    reason = Text(required=True)


@event(SOURCE, "review_added", consumers=["marketing", "analytics"], example={
    "product_id": PRODUCT_ID, "member_id": MEMBER_ID, "rating": 4,
    "review_id": "rev_01JD9A1B2C3D4E5F6G7H8J9K0L",
})
class ReviewAdded(EventData):
    """A member reviewed a product (the text stays in catalog: it is personal free text)."""

    product_id = Id(required=True)
    member_id = Id(required=True)
    rating = WholeNumber(required=True, minimum=1, maximum=5)
    review_id = Id()

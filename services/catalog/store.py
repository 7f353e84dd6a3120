"""The catalog's MongoDB: collections, indexes and the built-in house merchant
(the shapes documents take when they leave the service: views.py).

Collections: `products` (with the stock counters, sales and rating on the
product document, so one conditional update decides a reservation line),
`price_history`, `stock_ledger`, `reservations` (one per order, also the
tombstone of a cancellation heard first), `returns_received`, `merchants`,
`reviews`, `erased_members`."""
from __future__ import annotations

from pymongo import ASCENDING, DESCENDING, IndexModel

from services.catalog import domain, search
from shared.clock import utcnow
from shared.config import settings_of
from shared.errors import NotFound
from shared.storage.store import Store

INDEXES = {
    "products": [
        IndexModel([("sku", ASCENDING)], unique=True, name="sku_unique"),
        IndexModel([("status", ASCENDING), ("search_tokens", ASCENDING)], name="status_tokens"),
        IndexModel([("status", ASCENDING), ("category", ASCENDING), ("price", ASCENDING)],
                   name="status_category_price"),
        IndexModel([("status", ASCENDING), ("sales", DESCENDING)], name="status_sales"),
        IndexModel([("status", ASCENDING), ("rating_avg", DESCENDING)], name="status_rating"),
        IndexModel([("merchant_id", ASCENDING), ("status", ASCENDING)], name="merchant_status"),
        IndexModel([("stock.low", ASCENDING)], name="low_stock"),
    ],
    "price_history": [IndexModel([("product_id", ASCENDING), ("at", DESCENDING)])],
    "stock_ledger": [IndexModel([("product_id", ASCENDING), ("at", DESCENDING)])],
    "reservations": [
        IndexModel([("expires_at", ASCENDING)], name="held_by_expiry",
                   partialFilterExpression={"state": domain.RESERVED}),
    ],
    "merchants": [IndexModel([("status", ASCENDING)])],
    "reviews": [
        # One review per member per product; anonymised reviews (member_id
        # null) are outside the constraint.
        IndexModel([("product_id", ASCENDING), ("member_id", ASCENDING)], unique=True,
                   name="one_per_member", partialFilterExpression={"member_id": {"$type": "string"}}),
        IndexModel([("product_id", ASCENDING), ("status", ASCENDING), ("created_at", DESCENDING)]),
        IndexModel([("member_id", ASCENDING)]),
        IndexModel([("status", ASCENDING), ("created_at", ASCENDING)]),
    ],
}


class CatalogStore(Store):
    """The chassis Store plus the built-in, approved house merchant that owns
    products created without a `merchant_id`."""

    def start(self):
        super().start()
        search.initialize()
        ensure_house_merchant(self.db)
        self.currency = settings_of(self.container).currency


def ensure_house_merchant(db) -> None:
    now = utcnow()
    db.merchants.update_one(
        {"_id": domain.HOUSE_MERCHANT_ID},
        {"$setOnInsert": {"name": "House", "status": domain.APPROVED, "contact_email": None,
                          "description": "The platform's own products.", "penalties": [],
                          "history": [{"at": now, "status": domain.APPROVED, "reason": "built-in"}],
                          "created_at": now, "updated_at": now}},
        upsert=True)


def get_or_404(db, collection: str, _id: str, field: str, session=None) -> dict:
    doc = db[collection].find_one({"_id": _id}, session=session)
    if doc is None:
        raise NotFound(f"no {collection[:-1].replace('_', ' ')} {_id}", {"field": field, field: _id})
    return doc

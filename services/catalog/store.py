"""The catalog's MongoDB: collections, indexes, the built-in house merchant,
and the shapes documents take when they leave the service.

Collections: `products` (with the stock counters, sales and rating on the
product document, so one conditional update decides a reservation line),
`price_history`, `stock_ledger`, `reservations` (one per order, also the
tombstone of a cancellation heard first), `returns_received`, `merchants`,
`reviews`, `erased_members`."""
from __future__ import annotations

from pymongo import ASCENDING, DESCENDING, IndexModel

from services.catalog import domain, search
from shared.clock import to_iso, utcnow
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


def _iso(value):
    return to_iso(value) if value is not None else None


def product_dict(doc: dict) -> dict:
    stock = doc["stock"]
    return {
        "id": doc["_id"], "sku": doc["sku"], "title": doc["title"],
        "description": doc.get("description", ""), "category": doc["category"],
        "attributes": doc.get("attributes", {}), "images": doc.get("images", []),
        "price": doc["price"], "currency": doc["currency"], "merchant_id": doc["merchant_id"],
        "status": doc["status"],
        "stock": {"on_hand": stock["on_hand"], "reserved": stock["reserved"],
                  "available": stock["available"]},
        "low_stock_threshold": stock["threshold"], "low_stock": stock["low"],
        "sales": doc.get("sales", 0),
        "rating": {"average": domain.rating_average(doc.get("rating_sum", 0), doc.get("rating_count", 0)),
                   "count": doc.get("rating_count", 0)},
        "created_at": _iso(doc.get("created_at")), "updated_at": _iso(doc.get("updated_at")),
        "published_at": _iso(doc.get("published_at")),
        # The version its events carry: a read model filled from this answer keeps it, so
        # an older event arriving later cannot overwrite it (0: never changed since before
        # versions existed).
        "version": doc.get("version", 0),
    }


def stock_dict(doc: dict) -> dict:
    stock = doc["stock"]
    return {"id": doc["_id"], "product_id": doc["_id"], "on_hand": stock["on_hand"],
            "reserved": stock["reserved"], "available": stock["available"],
            "low_stock_threshold": stock["threshold"], "low_stock": stock["low"],
            "version": doc.get("version", 0)}


def merchant_dict(doc: dict) -> dict:
    return {
        "id": doc["_id"], "name": doc["name"], "status": doc["status"],
        "contact_email": doc.get("contact_email"), "description": doc.get("description", ""),
        "reason": doc.get("reason"),
        "penalties": [{**p, "at": _iso(p["at"])} for p in doc.get("penalties", [])],
        "history": [{**h, "at": _iso(h["at"])} for h in doc.get("history", [])],
        "created_at": _iso(doc.get("created_at")), "updated_at": _iso(doc.get("updated_at")),
        "version": doc.get("version", 0),
    }


def review_dict(doc: dict) -> dict:
    return {"id": doc["_id"], "product_id": doc["product_id"], "member_id": doc.get("member_id"),
            "rating": doc["rating"], "text": doc.get("text"), "status": doc["status"],
            "anonymised": bool(doc.get("anonymised")), "created_at": _iso(doc.get("created_at")),
            "moderated_at": _iso(doc.get("moderated_at"))}


def reservation_dict(doc: dict) -> dict:
    return {"id": doc["_id"], "order_id": doc["_id"], "state": doc["state"],
            "lines": doc.get("lines", []), "short_lines": doc.get("short_lines", []),
            "paid": bool(doc.get("paid")), "created_at": _iso(doc.get("created_at")),
            "expires_at": _iso(doc.get("expires_at"))}


def ledger_dict(doc: dict) -> dict:
    return {"id": doc["_id"], "product_id": doc["product_id"], "kind": doc["kind"],
            "reason": doc["reason"], "ref": doc.get("ref"),
            "delta_on_hand": doc["delta_on_hand"], "delta_reserved": doc["delta_reserved"],
            "on_hand": doc["on_hand"], "reserved": doc["reserved"], "available": doc["available"],
            "at": _iso(doc["at"])}

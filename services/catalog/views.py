"""The shapes catalog documents take when they leave the service: the plain
JSON-safe dicts RPC returns (`id`, ISO times, the aggregate's `version`)."""
from __future__ import annotations

from services.catalog import domain
from shared.clock import to_iso


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

"""Local read models of products (price, status, category) and member tiers, fed by
catalog's and member's events, with one RPC fallback on a miss.

Events may arrive late or out of order: each field remembers the `occurred_at` of
the event that set it and only a newer event changes it. A fallback answer is
stamped with the time it was fetched (newer events still win)."""
from __future__ import annotations

from datetime import datetime

from shared.clock import to_iso
from shared.errors import NotFound, ServiceTimeout, ServiceUnavailable, ValidationFailed
from shared.logs import get_logger

log = get_logger(__name__)

PUBLISHED = "published"


def merge(doc: dict | None, changes: dict, at: str) -> dict:
    """Pure: apply `changes` (field → value) stamped `at` to a read-model doc, keeping
    for each field whichever value is newer. Returns the new doc (without `_id`)."""
    doc = {k: v for k, v in (doc or {}).items() if k != "_id"}
    stamps = dict(doc.get("stamps") or {})
    for field, value in changes.items():
        if stamps.get(field) is None or stamps[field] <= at:
            doc[field] = value
            stamps[field] = at
    doc["stamps"] = stamps
    return doc


def product_changes(event_type: str, data: dict) -> dict:
    if event_type == "product_created":
        changes = {"category": data["category"], "price": data["price"], "status": data["status"]}
        if data.get("currency"):
            changes["currency"] = data["currency"]
        return changes
    if event_type == "product_published":
        return {"status": PUBLISHED, "category": data["category"]}
    if event_type == "product_unpublished":
        return {"status": "unpublished", "category": data["category"]}
    if event_type == "price_changed":
        changes = {"price": data["new_price"]}
        if data.get("currency"):
            changes["currency"] = data["currency"]
        return changes
    raise ValueError(f"not a product event: {event_type}")


def apply(collection, session, key: str, changes: dict, at: str) -> None:
    doc = collection.find_one({"_id": key}, session=session)
    merged = merge(doc, changes, at)
    collection.replace_one({"_id": key}, merged, upsert=True, session=session)


class ReadModels:
    def __init__(self, db, catalog, member):
        self.db = db
        self.catalog = catalog
        self.member = member

    def products(self, product_ids: list[str], now: datetime) -> dict[str, dict | None]:
        """Each product's read model; a miss asks catalog once. None: catalog does not know it."""
        found = {doc["_id"]: doc for doc in self.db.products.find({"_id": {"$in": product_ids}})}
        result: dict[str, dict | None] = {}
        for pid in product_ids:
            doc = found.get(pid)
            # A miss, or a product we believe is not on sale (its publication may not
            # have reached us yet): ask catalog once.
            if doc is None or "price" not in doc or doc.get("status") != PUBLISHED:
                doc = self._fetch_product(pid, now)
            result[pid] = doc
        return result

    def _fetch_product(self, product_id: str, now: datetime) -> dict | None:
        try:
            answer = self.catalog.get_product(product_id)
        except NotFound:
            return None
        except ServiceTimeout:
            raise ServiceUnavailable("catalog did not answer; try again",
                                     {"service": "catalog", "product_id": product_id}) from None
        changes = {"category": answer.get("category"), "price": answer.get("price"),
                   "status": answer.get("status")}
        if answer.get("currency"):
            changes["currency"] = answer["currency"]
        # Catalog's answer is as of now: stamped `now`, it wins over older events and
        # loses to newer ones, like any event would.
        merged = merge(self.db.products.find_one({"_id": product_id}),
                       {k: v for k, v in changes.items() if v is not None}, to_iso(now))
        self.db.products.replace_one({"_id": product_id}, merged, upsert=True)
        log.info("product_read_model_filled", product_id=product_id)
        return merged

    def tier(self, member_id: str, now: datetime) -> str | None:
        """The member's tier; a miss asks member once. Unknown member → ValidationFailed; member
        service silent → None (marketing prices without tier benefits it cannot confirm)."""
        doc = self.db.members.find_one({"_id": member_id})
        if doc is not None and doc.get("tier"):
            return doc["tier"]
        try:
            answer = self.member.get_member(member_id)
        except ServiceTimeout:
            log.warning("member_tier_unavailable", member_id=member_id)
            return None
        except NotFound:
            raise ValidationFailed.field("member_id", "unknown member") from None
        tier = answer.get("tier")
        if tier:
            self.db.members.update_one({"_id": member_id},
                                       {"$setOnInsert": {"tier": tier, "stamps": {"tier": to_iso(now)}}},
                                       upsert=True)
        return tier

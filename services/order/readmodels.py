"""Local read models of products (price, status, category) and member tiers, fed by
catalog's and member's events, with one RPC fallback on a miss.

Events may arrive late or out of order: each document keeps the owner's `version` of the
event that set it and only a higher version changes it (shared/storage/readmodel.py). A fallback
answer carries the owner's version too, so it is one more writer under the same rule."""
from __future__ import annotations

from datetime import datetime

from shared.errors import NotFound, ServiceTimeout, ServiceUnavailable, ValidationFailed
from shared.observability.logs import get_logger
from shared.storage.readmodel import apply_if_newer, version_of

log = get_logger(__name__)

PUBLISHED = "published"
LISTING = ("category", "price", "status", "currency")
# What a product event published before versions (and the whole listing) implied.
IMPLIED = {"product_created": lambda d: {},
           "product_published": lambda d: {"status": PUBLISHED},
           "product_unpublished": lambda d: {"status": "unpublished"},
           "price_changed": lambda d: {"price": d.get("new_price")}}


def product_changes(event_type: str, data: dict) -> dict:
    """The listing fields a product event sets: all of them on a versioned event (it
    carries the whole listing), what its type implies on an older one."""
    if event_type not in IMPLIED:
        raise ValueError(f"not a product event: {event_type}")
    changes = {**IMPLIED[event_type](data), **{f: data[f] for f in LISTING if data.get(f) is not None}}
    return {k: v for k, v in changes.items() if v is not None}


def apply(collection, session, key: str, changes: dict, version: int) -> bool:
    """Keep `changes` if `version` is higher than the one stored for `key`."""
    return apply_if_newer(collection, key, version, changes, session=session)


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
        changes = {f: answer.get(f) for f in LISTING if answer.get(f) is not None}
        # Catalog's answer carries the product's version: it wins over older events and
        # loses to newer ones, like any event would.
        apply_if_newer(self.db.products, product_id, version_of(answer), changes)
        log.info("product_read_model_filled", product_id=product_id, version=version_of(answer))
        return self.db.products.find_one({"_id": product_id})

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
            apply_if_newer(self.db.members, member_id, version_of(answer), {"tier": tier})
        return tier

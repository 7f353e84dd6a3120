"""Product, price, merchant and review commands inside one open transaction.
Each takes the validated payload and `now`, changes state through the
domain's rules and stages the events with `tx.emit`."""
from __future__ import annotations

from datetime import datetime

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from services.catalog import domain, search
from services.catalog.store import get_or_404
from services.catalog.usecases import inventory
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.ids import new_id

AFTER = ReturnDocument.AFTER


def _compare_and_set(tx, collection: str, id_field: str, doc_id: str, expected: dict, update: dict,
                     what: str) -> dict:
    """Apply `update` only if the document still holds `expected` (what it was read
    with); otherwise a concurrent change won and the caller gets a Conflict."""
    updated = tx.db[collection].find_one_and_update({"_id": doc_id, **expected}, update,
                                                    return_document=AFTER, session=tx.session)
    if updated is None:
        raise Conflict(f"the {what} changed meanwhile; try again", {id_field: doc_id})
    return updated


def _product(tx, product_id: str) -> dict:
    return get_or_404(tx.db, "products", product_id, "product_id", tx.session)


def _listing(doc: dict) -> dict:
    """The whole listing every product state event carries, as of the document's version
    (read models keep the copy with the highest version: shared/storage/readmodel.py)."""
    return {"product_id": doc["_id"], "sku": doc["sku"], "title": doc["title"],
            "category": doc["category"], "price": doc["price"], "currency": doc["currency"],
            "status": doc["status"], "version": doc["version"]}


# Every change of a product's listing or stock, or of a merchant's status, moves its
# `version` by one in the same update, so the event carries the version of its own change
# (sales and rating counters carry none: no event announces them as state).
BUMP = {"version": 1}


# Products ------------------------------------------------------------------
def create_product(tx, payload: dict, currency: str, default_threshold: int, now: datetime) -> dict:
    merchant_id = payload["merchant_id"] or domain.HOUSE_MERCHANT_ID
    get_or_404(tx.db, "merchants", merchant_id, "merchant_id", tx.session)
    title = payload["title"].strip()
    title_tokens, tokens = search.document_tokens(title, payload["description"])
    threshold = payload["low_stock_threshold"]
    threshold = default_threshold if threshold is None else threshold
    stock = payload["stock"]
    doc = {
        "_id": new_id("prd"), "sku": payload["sku"].strip(), "title": title,
        "description": payload["description"], "category": payload["category"].strip(),
        "attributes": payload["attributes"], "images": payload["images"],
        "price": payload["price"], "currency": currency, "merchant_id": merchant_id,
        "status": domain.DRAFT,
        "stock": {"on_hand": stock, "reserved": 0, "available": stock, "threshold": threshold,
                  "low": domain.is_low(stock, threshold)},
        "sales": 0, "rating_sum": 0, "rating_count": 0, "rating_avg": 0.0,
        "title_tokens": title_tokens, "search_tokens": tokens,
        "created_at": now, "updated_at": now, "published_at": None, "version": 1,
    }
    try:
        tx.db.products.insert_one(doc, session=tx.session)
    except DuplicateKeyError:
        raise ValidationFailed.field("sku", "already exists") from None
    tx.db.price_history.insert_one({"_id": new_id("prh"), "product_id": doc["_id"], "at": now,
                                    "old_price": None, "new_price": doc["price"], "by": "create"},
                                   session=tx.session)
    if stock:
        inventory._ledger(tx, doc, "adjust", "initial_stock", None, stock, 0, now)
    tx.emit("product_created", {**_listing(doc), "merchant_id": merchant_id, "stock": stock})
    return doc


def update_product(tx, product_id: str, changes: dict, now: datetime) -> dict:
    doc = _product(tx, product_id)
    sets: dict = {"updated_at": now}
    for key in ("description", "attributes", "images"):
        if key in changes:
            sets[key] = changes[key]
    if "title" in changes:
        sets["title"] = changes["title"].strip()
    if "category" in changes:
        sets["category"] = changes["category"].strip()
    if "title" in changes or "description" in changes:
        sets["title_tokens"], sets["search_tokens"] = search.document_tokens(
            sets.get("title", doc["title"]), sets.get("description", doc.get("description")))
    if "low_stock_threshold" in changes:
        sets["stock.threshold"] = changes["low_stock_threshold"]
    updated = tx.db.products.find_one_and_update({"_id": product_id}, {"$set": sets, "$inc": BUMP},
                                                 return_document=AFTER, session=tx.session)
    if "low_stock_threshold" in changes:
        inventory.check_low_stock(tx, updated)
        updated = _product(tx, product_id)
    return updated


def publish_product(tx, product_id: str, now: datetime) -> dict:
    doc = _product(tx, product_id)
    merchant = tx.db.merchants.find_one({"_id": doc["merchant_id"]}, {"status": 1}, session=tx.session)
    new_status = domain.publish(doc["status"], merchant and merchant["status"])
    if new_status is None:
        return doc
    updated = _compare_and_set(tx, "products", "product_id", product_id, {"status": doc["status"]},
                               {"$set": {"status": new_status, "published_at": now, "updated_at": now},
                                "$inc": BUMP}, "product")
    tx.emit("product_published", _listing(updated))
    return updated


def unpublish_product(tx, product_id: str, now: datetime, reason: str | None = None) -> dict:
    doc = _product(tx, product_id)
    new_status = domain.unpublish(doc["status"])
    if new_status is None:
        return doc
    updated = _compare_and_set(tx, "products", "product_id", product_id, {"status": doc["status"]},
                               {"$set": {"status": new_status, "updated_at": now}, "$inc": BUMP},
                               "product")
    tx.emit("product_unpublished", {**_listing(updated), "reason": reason})
    return updated


def set_price(tx, product_id: str, price: int, by: str | None, now: datetime) -> dict:
    doc = _product(tx, product_id)
    entry = domain.price_change(doc["price"], price, by, now)
    if entry is None:
        return doc
    updated = _compare_and_set(tx, "products", "product_id", product_id, {"price": doc["price"]},
                               {"$set": {"price": price, "updated_at": now}, "$inc": BUMP}, "price")
    tx.db.price_history.insert_one({"_id": new_id("prh"), "product_id": product_id, **entry},
                                   session=tx.session)
    tx.emit("price_changed", {**_listing(updated), "old_price": entry["old_price"],
                              "new_price": price})
    return updated


# Merchants -----------------------------------------------------------------
def apply_merchant(tx, payload: dict, now: datetime) -> dict:
    doc = {"_id": new_id("mch"), "name": payload["name"].strip(),
           "contact_email": payload["contact_email"], "description": payload["description"],
           "status": domain.PENDING, "reason": None, "penalties": [],
           "history": [{"at": now, "status": domain.PENDING, "reason": None}],
           "created_at": now, "updated_at": now, "version": 1}
    tx.db.merchants.insert_one(doc, session=tx.session)
    return doc


def change_merchant(tx, merchant_id: str, action: str, reason: str | None, now: datetime) -> dict:
    doc = get_or_404(tx.db, "merchants", merchant_id, "merchant_id", tx.session)
    new_status = domain.merchant_transition(doc["status"], action)
    if new_status is None:
        return doc
    push: dict = {"history": {"at": now, "status": new_status, "reason": reason}}
    if new_status == domain.SUSPENDED:
        push["penalties"] = {"id": new_id("pen"), "kind": "suspension", "reason": reason,
                             "amount": 0, "at": now}
    updated = _compare_and_set(tx, "merchants", "merchant_id", merchant_id, {"status": doc["status"]},
                               {"$set": {"status": new_status, "reason": reason, "updated_at": now},
                                "$push": push, "$inc": BUMP}, "merchant")
    announced = {"merchant_id": merchant_id, "reason": reason, "status": new_status,
                 "version": updated["version"]}
    if new_status == domain.APPROVED:
        tx.emit("merchant_approved", announced)
    elif new_status == domain.SUSPENDED:
        tx.emit("merchant_suspended", announced)
        for product in tx.db.products.find({"merchant_id": merchant_id, "status": domain.PUBLISHED},
                                           {"_id": 1}, session=tx.session):
            unpublish_product(tx, product["_id"], now, reason="merchant_suspended")
    return updated


def penalize_merchant(tx, payload: dict, now: datetime) -> dict:
    get_or_404(tx.db, "merchants", payload["merchant_id"], "merchant_id", tx.session)
    penalty = {"id": new_id("pen"), "kind": payload["kind"], "reason": payload["reason"],
               "amount": payload["amount"], "at": now}
    return tx.db.merchants.find_one_and_update(
        {"_id": payload["merchant_id"]},
        {"$push": {"penalties": penalty}, "$set": {"updated_at": now}},
        return_document=AFTER, session=tx.session)


# Reviews -------------------------------------------------------------------
def add_review(tx, payload: dict, now: datetime) -> dict:
    product = _product(tx, payload["product_id"])
    if tx.db.erased_members.find_one({"_id": payload["member_id"]}, session=tx.session):
        raise Conflict("the member was erased", {"field": "member_id"})
    doc = {"_id": new_id("rev"), "product_id": product["_id"], "member_id": payload["member_id"],
           "rating": payload["rating"], "text": payload["text"] or "", "status": domain.REVIEW_PENDING,
           "anonymised": False, "created_at": now, "moderated_at": None}
    try:
        tx.db.reviews.insert_one(doc, session=tx.session)
    except DuplicateKeyError:
        raise Conflict("the member already reviewed this product",
                       {"field": "member_id", "product_id": product["_id"]}) from None
    tx.emit("review_added", {"product_id": product["_id"], "member_id": payload["member_id"],
                             "rating": payload["rating"], "review_id": doc["_id"]})
    return doc


def moderate_review(tx, review_id: str, status: str, note: str | None, now: datetime) -> dict:
    doc = get_or_404(tx.db, "reviews", review_id, "review_id", tx.session)
    effect = domain.moderation_effect(doc["status"], status)
    if doc["status"] == status:
        return doc
    updated = _compare_and_set(tx, "reviews", "review_id", review_id, {"status": doc["status"]},
                               {"$set": {"status": status, "moderated_at": now, "moderation_note": note}},
                               "review")
    if effect:
        product = tx.db.products.find_one_and_update(
            {"_id": doc["product_id"]},
            {"$inc": {"rating_count": effect, "rating_sum": effect * doc["rating"]}},
            return_document=AFTER, session=tx.session)
        if product is not None:
            tx.db.products.update_one({"_id": product["_id"]}, {"$set": {"rating_avg": domain.rating_average(
                product["rating_sum"], product["rating_count"])}}, session=tx.session)
    return updated


def erase_member(tx, member_id: str, now: datetime) -> int:
    """`member_erased`: the member's reviews lose their author and free text;
    ratings stay (they are not personal). Later reviews by the id are refused."""
    tx.db.erased_members.update_one({"_id": member_id}, {"$setOnInsert": {"at": now}}, upsert=True,
                                    session=tx.session)
    result = tx.db.reviews.update_many(
        {"member_id": member_id},
        {"$set": {"member_id": None, "text": None, "anonymised": True, "anonymised_at": now}},
        session=tx.session)
    return result.modified_count


def ensure_product(tx, product_id: str) -> None:
    if tx.db.products.count_documents({"_id": product_id}, session=tx.session) == 0:
        raise NotFound(f"no product {product_id}", {"field": "product_id", "product_id": product_id})

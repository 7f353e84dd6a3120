"""Marketing's copies of other services' facts, kept from their events: members (tier,
interests, region, consents, erasure), the tier benefits member announces, products (status,
stock, ratings, units sold) and purchases. Each handler is one transaction.

A member's or product's state is kept in sections (tier; profile; each consent; a product's
listing; its low-stock flag), each with the owner's version of the event that set it
(`<section>_version`): only a higher version changes it (shared/storage/readmodel.py), so late or
repeated events change nothing whatever their `occurred_at`."""
from __future__ import annotations

from services.marketing.config import MarketingConfig
from shared.storage.readmodel import apply_if_newer, version_of


def tier_discount_bp(db, config: MarketingConfig, tier) -> int:
    """Member owns each tier's benefits and announces its discount percent in
    its events; the configured table only covers tiers not yet heard of."""
    if not tier:
        return 0
    learned = db.tier_benefits.find_one({"_id": tier})
    if learned is not None:
        return learned["discount_bp"]
    return config.tier_discounts.get(tier, 0)


def learn_tier_benefit(tx, tier, percent, at) -> None:
    """Keep the newest discount percent member announced for `tier` (inside the
    transaction a read then write is safe: a concurrent writer conflicts). A tier's
    benefits are member's configuration, not an aggregate with a version: events about
    different members announce them, so the newest `occurred_at` is the best order known."""
    if not tier or percent is None:
        return
    known = tx.db.tier_benefits.find_one({"_id": tier}, session=tx.session)
    if known is not None and known["at"] > at:
        return
    tx.db.tier_benefits.replace_one(
        {"_id": tier}, {"discount_bp": int(round(float(percent) * 100)), "at": at},
        upsert=True, session=tx.session)


# --- members ---------------------------------------------------------------------------------

def member_update(tx, member_id: str, section: str, fields: dict, version: int) -> bool:
    """Set a section of the member unless the member is erased or a version as high was
    already applied to it."""
    return apply_if_newer(tx.db.members, member_id, version, fields, session=tx.session,
                          version_field=f"{section}_version", on_insert={"erased": False},
                          guard={"erased": {"$ne": True}})


def consent_section(channel: str) -> str:
    return f"consents_{channel}"


def on_member_registered(store, envelope: dict) -> None:
    data, at, version = envelope["data"], envelope["occurred_at"], version_of(envelope["data"])
    with store.transaction() as tx:
        learn_tier_benefit(tx, data.get("tier"), data.get("tier_discount_percent"), at)
        member_update(tx, data["member_id"], "tier", {"tier": data.get("tier")}, version)
        member_update(tx, data["member_id"], "profile",
                      {"interests": data.get("interests") or [], "region": data.get("region")}, version)


def on_member_consent_changed(store, envelope: dict) -> None:
    data, at = envelope["data"], envelope["occurred_at"]
    channel = data["channel"]
    with store.transaction() as tx:
        member_update(tx, data["member_id"], consent_section(channel),
                      {f"consents.{channel}": {"granted": bool(data["granted"]), "at": at}},
                      version_of(data))


def on_tier_changed(store, envelope: dict) -> None:
    data, at = envelope["data"], envelope["occurred_at"]
    with store.transaction() as tx:
        learn_tier_benefit(tx, data["new_tier"], data.get("tier_discount_percent"), at)
        member_update(tx, data["member_id"], "tier", {"tier": data["new_tier"]}, version_of(data))


def on_member_erased(store, envelope: dict) -> None:
    """Interests, region and consents gone for good (later events cannot restore them: the
    erased guard), messages keep only ids and cost, the purchase list is deleted."""
    member_id = envelope["data"]["member_id"]
    with store.transaction() as tx:
        tx.db.members.update_one(
            {"_id": member_id},
            {"$set": {"erased": True, "consents": {}, "interests": [], "region": None,
                      "erased_at": envelope["occurred_at"]}},
            upsert=True, session=tx.session)
        tx.db.messages.update_many(
            {"member_id": member_id},
            {"$set": {"subject": "", "body": "", "redacted": True}}, session=tx.session)
        tx.db.member_purchases.delete_one({"_id": member_id}, session=tx.session)


# --- products and purchases ------------------------------------------------------------------

def set_product_status(store, envelope: dict, status: str) -> None:
    data = envelope["data"]
    with store.transaction() as tx:
        apply_if_newer(tx.db.products, data["product_id"], version_of(data),
                       {"status": status, "category": data.get("category")}, session=tx.session,
                       version_field="listing_version", on_insert={"units": 0})


def set_low_stock(store, envelope: dict, low: bool) -> None:
    data = envelope["data"]
    with store.transaction() as tx:
        apply_if_newer(tx.db.products, data["product_id"], version_of(data), {"low_stock": low},
                       session=tx.session, version_field="stock_version", on_insert={"units": 0})


def on_review_added(store, envelope: dict) -> None:
    data = envelope["data"]
    with store.transaction() as tx:
        tx.db.products.update_one({"_id": data["product_id"]},
                                  {"$inc": {"rating_sum": data.get("rating", 0), "rating_count": 1},
                                   "$setOnInsert": {"units": 0}},
                                  upsert=True, session=tx.session)


def count_purchase(tx, data: dict) -> None:
    """Best sellers, co-purchases and the member's purchases, once per paid order."""
    marker = f"purchase:{data['order_id']}"
    if tx.db.processed.find_one({"_id": marker}, session=tx.session):
        return
    tx.db.processed.insert_one({"_id": marker}, session=tx.session)
    products = []
    for line in data.get("lines") or []:
        pid = line["product_id"]
        if "." in pid or pid.startswith("$"):
            continue
        products.append(pid)
        tx.db.products.update_one(
            {"_id": pid}, {"$inc": {"units": line.get("quantity", 1)},
                           "$setOnInsert": {"category": line.get("category")}},
            upsert=True, session=tx.session)
    products = sorted(set(products))
    for pid in products:
        others = {f"with.{o}": 1 for o in products if o != pid}
        if others:
            tx.db.co_purchases.update_one({"_id": pid}, {"$inc": others}, upsert=True,
                                          session=tx.session)
    if products:
        tx.db.member_purchases.update_one(
            {"_id": data["member_id"]}, {"$addToSet": {"products": {"$each": products}}},
            upsert=True, session=tx.session)

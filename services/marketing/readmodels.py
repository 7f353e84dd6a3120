"""Marketing's copies of other services' facts, kept from their events: members (tier,
interests, region, consents, erasure), the tier benefits member announces, products (status,
stock, ratings, units sold) and purchases. Each handler is one transaction; the newest
`occurred_at` wins, so late or repeated events change nothing."""
from __future__ import annotations

from services.marketing.config import MarketingConfig
from services.marketing.store import set_if_newer


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
    transaction a read then write is safe: a concurrent writer conflicts)."""
    if not tier or percent is None:
        return
    known = tx.db.tier_benefits.find_one({"_id": tier}, session=tx.session)
    if known is not None and known["at"] > at:
        return
    tx.db.tier_benefits.replace_one(
        {"_id": tier}, {"discount_bp": int(round(float(percent) * 100)), "at": at},
        upsert=True, session=tx.session)


# --- members ---------------------------------------------------------------------------------

def _member_update(tx, member_id: str, field: str, value, at: str) -> None:
    """Set `field` unless the member is erased or a newer value was already applied."""
    set_if_newer(tx, "members", member_id, f"{field}_at".replace(".", "_"), at, {field: value},
                 on_insert={"erased": False}, guard={"erased": {"$ne": True}})


def on_member_registered(store, envelope: dict) -> None:
    data, at = envelope["data"], envelope["occurred_at"]
    with store.transaction() as tx:
        learn_tier_benefit(tx, data.get("tier"), data.get("tier_discount_percent"), at)
        _member_update(tx, data["member_id"], "tier", data.get("tier"), at)
        _member_update(tx, data["member_id"], "interests", data.get("interests") or [], at)
        _member_update(tx, data["member_id"], "region", data.get("region"), at)


def on_member_consent_changed(store, envelope: dict) -> None:
    data, at = envelope["data"], envelope["occurred_at"]
    with store.transaction() as tx:
        _member_update(tx, data["member_id"], f"consents.{data['channel']}",
                       {"granted": bool(data["granted"]), "at": at}, at)


def on_tier_changed(store, envelope: dict) -> None:
    data, at = envelope["data"], envelope["occurred_at"]
    with store.transaction() as tx:
        learn_tier_benefit(tx, data["new_tier"], data.get("tier_discount_percent"), at)
        _member_update(tx, data["member_id"], "tier", data["new_tier"], at)


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
    data, at = envelope["data"], envelope["occurred_at"]
    with store.transaction() as tx:
        set_if_newer(tx, "products", data["product_id"], "status_at", at,
                     {"status": status, "category": data.get("category")}, on_insert={"units": 0})


def set_low_stock(store, envelope: dict, low: bool) -> None:
    data, at = envelope["data"], envelope["occurred_at"]
    with store.transaction() as tx:
        set_if_newer(tx, "products", data["product_id"], "stock_at", at, {"low_stock": low},
                     on_insert={"units": 0})


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

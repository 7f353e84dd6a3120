"""Marketing's copies of other services' facts, kept from their events: members (tier,
interests, region, consents, erasure), the tier benefits member announces, products (status,
stock, ratings, units sold) and purchases. Each handler is one transaction; the newest
`occurred_at` wins, so late or repeated events change nothing."""
from __future__ import annotations

from services.marketing.config import MarketingConfig


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

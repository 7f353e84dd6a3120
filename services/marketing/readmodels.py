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

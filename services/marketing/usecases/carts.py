"""Pricing a cart for a member (`pricing.py` decides) and, for an order, reserving its coupon in
the same call."""
from __future__ import annotations

from datetime import datetime

from services.marketing import domain, metrics, pricing, readmodels, schemas
from services.marketing.config import MarketingConfig
from services.marketing.store import holds_coupon, member_uses, release_reservation, reserve_coupon
from shared.clock import to_iso
from shared.errors import ValidationFailed
from shared.validation import load


def coupon_error(reason: str) -> ValidationFailed:
    return ValidationFailed(f"coupon_code: {reason}", {"fields": {"coupon_code": [reason]},
                                                       "reason": reason})


def _usable_coupon(db, code: str, member_id: str, order_id: str | None,
                   now: datetime) -> tuple[dict, dict]:
    """The coupon document and the coupon `pricing.price` takes, or the reason it is unusable."""
    coupon_doc = db.coupons.find_one({"_id": code})
    promo = db.promotions.find_one({"_id": coupon_doc["promotion_id"]}) if coupon_doc else None
    uses = member_uses(db, code, member_id)
    already = order_id and db.coupon_reservations.find_one(
        {"_id": order_id, "code": code, "status": {"$in": ["reserved", "redeemed"]}})
    if already:  # this order's own reservation is not a use against it
        coupon_doc = {**coupon_doc, "used": coupon_doc.get("used", 1) - 1}
        uses -= 1
    problem = domain.coupon_problem(coupon_doc, promo, uses, now)
    if problem:
        raise coupon_error(problem)
    return coupon_doc, {"code": code, "promotion_id": coupon_doc["promotion_id"]}


def price_cart(store, config: MarketingConfig, now: datetime, *, member_id, lines,
               coupon_code=None, tier=None, order_id=None) -> dict:
    req = load(schemas.PriceCart(), {"member_id": member_id, "lines": lines,
                                     "coupon_code": coupon_code, "tier": tier,
                                     "order_id": order_id})
    db = store.db
    tier = req["tier"]
    if tier is None:
        member = db.members.find_one({"_id": req["member_id"]}, {"tier": 1})
        tier = (member or {}).get("tier")
    promotions = [{**d, "id": d["_id"]} for d in db.promotions.find({"status": "active"})]
    coupon = coupon_doc = None
    if req["coupon_code"]:
        coupon_doc, coupon = _usable_coupon(db, domain.normalize_code(req["coupon_code"]),
                                            req["member_id"], req["order_id"], now)
    priced = pricing.price(req["lines"], promotions, now=now, currency=config.currency, tier=tier,
                           tier_percent_bp=readmodels.tier_discount_bp(db, config, tier),
                           coupon=coupon, cap_bp=config.cap_bp)
    if coupon and not priced["coupon_applied"]:
        raise coupon_error(priced["coupon_reason"])
    priced["member_id"] = req["member_id"]
    priced["order_id"] = req["order_id"]
    priced["coupon_reservation"] = None
    if req["order_id"] and coupon:
        with store.transaction() as tx:
            res = reserve_coupon(tx, order_id=req["order_id"], coupon=coupon_doc,
                                 member_id=req["member_id"],
                                 discount=priced["coupon_discount"], now=now,
                                 ttl=config.reservation_ttl)
            priced["coupon_reservation"] = {"status": res["status"],
                                            "expires_at": to_iso(res["expires_at"])}
    elif req["order_id"] and holds_coupon(db, req["order_id"]):
        # Re-priced without its coupon. Most orders never held one: they cost no transaction.
        with store.transaction() as tx:
            release_reservation(tx, req["order_id"], "repriced", now)
    metrics.CARTS_PRICED.labels("discounted" if priced["discount"] else "full_price").inc()
    return priced

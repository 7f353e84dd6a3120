"""Coupons: creating code batches, checking a code for a member, reading reservations, and
releasing reservations past their TTL. The counters and the reservation life (reserve →
redeem | release) are conditional updates in `store.py`."""
from __future__ import annotations

from datetime import datetime

from pymongo.errors import DuplicateKeyError

from services.marketing import domain, pricing, schemas
from services.marketing.store import (
    expired_reservations,
    get_doc,
    member_uses,
    release_reservation,
)
from services.marketing.views import public
from shared.clock import to_iso
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.validation import load


def create_coupons(store, batch: dict, now: datetime) -> dict:
    data = load(schemas.CouponBatch(), batch)
    promo = store.db.promotions.find_one({"_id": data["promotion_id"]})
    if promo is None:
        raise NotFound(f"no promotion {data['promotion_id']}", {"promotion_id": data["promotion_id"]})
    if promo.get("trigger") != "coupon":
        raise ValidationFailed.field("promotion_id", "The promotion is automatic, not coupon-only.")
    if data["code"]:
        codes = [domain.normalize_code(data["code"])]
    else:
        codes = domain.generate_codes(domain.normalize_code(data["prefix"]), data["count"])
    created_at = to_iso(now)
    docs = [{"_id": code, "promotion_id": data["promotion_id"],
             "max_redemptions": data["max_redemptions"],
             "per_member_limit": data["per_member_limit"], "starts_at": data["starts_at"],
             "ends_at": data["ends_at"], "used": 0, "redeemed": 0, "created_at": created_at}
            for code in codes]
    try:
        with store.transaction() as tx:
            taken = tx.db.coupons.find_one({"_id": {"$in": codes}}, session=tx.session)
            if taken:
                raise Conflict(f"coupon code {taken['_id']} exists", {"code": taken["_id"]})
            tx.db.coupons.insert_many(docs, session=tx.session)
    except DuplicateKeyError:
        raise Conflict("a coupon code exists already", {"codes": codes[:10]}) from None
    return {"id": data["promotion_id"], "promotion_id": data["promotion_id"],
            "codes": codes, "count": len(codes)}


def get_coupon(store, code) -> dict:
    return public(get_doc(store.db, "coupons", domain.normalize_code(str(code)),
                          f"no coupon {code}", {"code": code}))


def validate_coupon(store, code, member_id, subtotal, now: datetime) -> dict:
    """Whether `code` is usable by the member for `subtotal`; never raises for an unusable code."""
    data = load(schemas.ValidateCoupon(), {"code": code, "member_id": member_id,
                                           "subtotal": subtotal})
    db, code = store.db, domain.normalize_code(data["code"])
    coupon = db.coupons.find_one({"_id": code})
    promo = db.promotions.find_one({"_id": coupon["promotion_id"]}) if coupon else None
    uses = member_uses(db, code, data["member_id"])
    reason = domain.coupon_problem(coupon, promo, uses, now, data["subtotal"])
    out = {"id": code, "code": code, "valid": reason is None, "reason": reason}
    if coupon:
        limit = coupon.get("max_redemptions")
        out.update({"promotion_id": coupon["promotion_id"], "kind": promo and promo["kind"],
                    "remaining": None if limit is None else max(0, limit - coupon.get("used", 0)),
                    "member_uses": uses, "ends_at": coupon.get("ends_at")})
        if promo and reason is None:
            out["estimated_discount"] = pricing.rule_amount({**promo, "scope": {}}, data["subtotal"])
    return out


def get_coupon_reservation(store, order_id: str) -> dict:
    return public(get_doc(store.db, "coupon_reservations", order_id,
                          f"no coupon reservation for order {order_id}", {"order_id": order_id}))


def release_expired(store, now: datetime) -> int:
    """Release the reservations past their TTL (one transaction each); how many were released."""
    released = 0
    for order_id in expired_reservations(store.db, now):
        with store.transaction() as tx:
            if release_reservation(tx, order_id, "expired", now, only_expired=True):
                released += 1
    return released

"""Attribution: referral/KOL codes and the orders and revenue they bring, and ad spend."""
from __future__ import annotations

from datetime import datetime

from services.marketing import domain, schemas
from services.marketing.config import MarketingConfig
from services.marketing.store import get_doc, insert_new
from services.marketing.views import public
from shared.clock import to_iso
from shared.errors import Conflict, ValidationFailed
from shared.ids import new_id
from shared.validation import load


def _code_view(doc: dict) -> dict:
    return {**public(doc), "code": doc["_id"]}


def create_referral_code(store, code: dict, now: datetime) -> dict:
    data = load(schemas.ReferralCode(), code)
    doc = {"_id": domain.normalize_code(data["code"]), **{k: v for k, v in data.items() if k != "code"},
           "orders": 0, "revenue": 0, "created_at": to_iso(now)}
    insert_new(store, "referral_codes", doc,
               Conflict(f"referral code {doc['_id']} exists", {"code": doc["_id"]}))
    return _code_view(doc)


def get_referral_code(store, code) -> dict:
    return _code_view(get_doc(store.db, "referral_codes", domain.normalize_code(str(code)),
                              f"no referral code {code}", {"code": code}))


def count_referral(tx, order: dict) -> None:
    """An order placed with a referral code counts once for it (the handler's inbox)."""
    code = (order.get("attribution") or {}).get("referral_code")
    if code:
        tx.db.referral_codes.update_one(
            {"_id": domain.normalize_code(code)},
            {"$inc": {"orders": 1, "revenue": order.get("total", 0)}}, session=tx.session)


def record_ad_spend(store, config: MarketingConfig, spend: dict, now: datetime) -> dict:
    """Record ad spend (`ad_spend_recorded`); the same `request_id` records once."""
    data = load(schemas.AdSpend(), spend)
    currency = data["currency"] or config.currency
    if currency != config.currency:
        raise ValidationFailed.field("currency", f"Only {config.currency} is accepted.")
    doc = {"_id": f"req:{data['request_id']}" if data["request_id"] else new_id("ads"),
           "channel": data["channel"], "campaign_id": data["campaign_id"],
           "amount": data["amount"], "currency": currency, "date": data["date"],
           "recorded_at": to_iso(now)}
    with store.transaction() as tx:
        existing = tx.db.ad_spend.find_one({"_id": doc["_id"]}, session=tx.session)
        if existing:
            return public(existing)
        tx.db.ad_spend.insert_one(doc, session=tx.session)
        tx.emit("ad_spend_recorded", {k: doc[k] for k in ("channel", "campaign_id", "amount",
                                                          "currency", "date")})
    return public(doc)

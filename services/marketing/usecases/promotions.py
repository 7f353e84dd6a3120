"""Promotions: creating, reading and ending the discount rules `pricing.py` applies."""
from __future__ import annotations

from datetime import datetime

from services.marketing import pricing, schemas
from services.marketing.store import get_doc
from services.marketing.views import public
from shared.clock import parse_iso, to_iso
from shared.ids import new_id
from shared.validation import load


def create_promotion(store, promotion: dict, now: datetime) -> dict:
    data = load(schemas.Promotion(), promotion)
    doc = {"_id": new_id("prm"), **data, "status": "active", "created_at": to_iso(now),
           "percent_bp": pricing.percent_to_bp(data["percent"]) if data.get("percent") else None}
    with store.transaction() as tx:
        tx.db.promotions.insert_one(doc, session=tx.session)
        tx.emit("promotion_created", {"promotion_id": doc["_id"], "kind": doc["kind"],
                                      "starts_at": doc["starts_at"], "ends_at": doc["ends_at"]})
    return public(doc)


def get_promotion(store, promotion_id: str) -> dict:
    return public(get_doc(store.db, "promotions", promotion_id, f"no promotion {promotion_id}",
                          {"promotion_id": promotion_id}))


def list_promotions(store, status: str | None) -> list[dict]:
    query = {} if status is None else {"status": status}
    return [public(d) for d in store.db.promotions.find(query).sort("created_at", 1)]


def end_promotion(store, promotion_id: str, now: datetime) -> dict:
    """`ends_at` becomes `now` unless it was earlier; `promotion_ended` once (conditional on
    `active`), so ending again changes nothing."""
    get_promotion(store, promotion_id)
    with store.transaction() as tx:
        before = tx.db.promotions.find_one_and_update(
            {"_id": promotion_id, "status": "active"},
            {"$set": {"status": "ended", "ended_at": to_iso(now)}}, session=tx.session)
        if before is not None:
            ends = before.get("ends_at")
            if ends is None or parse_iso(ends) > now:
                ends = to_iso(now)
            tx.db.promotions.update_one({"_id": promotion_id}, {"$set": {"ends_at": ends}},
                                        session=tx.session)
            tx.emit("promotion_ended", {"promotion_id": promotion_id, "kind": before["kind"],
                                        "starts_at": before["starts_at"], "ends_at": ends})
    return get_promotion(store, promotion_id)

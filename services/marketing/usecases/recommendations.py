"""Recommendations for a member from the purchase and product read models (`readmodels.py`);
`domain.recommend` ranks."""
from __future__ import annotations

from services.marketing import domain, schemas
from shared.validation import load


def recommend_products(store, member_id, limit) -> dict:
    data = load(schemas.Recommend(), {"member_id": member_id, "limit": limit})
    db, limit = store.db, data["limit"]
    member = db.members.find_one({"_id": data["member_id"]}) or {}
    bought_doc = db.member_purchases.find_one({"_id": data["member_id"]}) or {}
    bought = set(bought_doc.get("products") or [])
    recent = (bought_doc.get("products") or [])[-50:]
    co = {d["_id"]: d.get("with") or {} for d in db.co_purchases.find({"_id": {"$in": recent}})}
    unavailable = {d["_id"] for d in db.products.find(
        {"$or": [{"status": "unpublished"}, {"low_stock": True}]}, {"_id": 1})}
    # Enough candidates that `limit` remain after leaving out bought and unavailable ones.
    fetch = limit + len(bought) + len(unavailable)
    interests = list(member.get("interests") or [])
    interest_products = [{"product_id": d["_id"], "category": d.get("category")}
                         for d in db.products.find({"category": {"$in": interests}, "units": {"$gt": 0}})
                         .sort("units", -1).limit(fetch)] if interests else []
    best = [{"product_id": d["_id"], "category": d.get("category")}
            for d in db.products.find({"units": {"$gt": 0}})
            .sort([("units", -1), ("_id", 1)]).limit(fetch)]
    items = domain.recommend(bought, co, interest_products, best, unavailable, limit)
    return {"id": data["member_id"], "member_id": data["member_id"], "products": items}

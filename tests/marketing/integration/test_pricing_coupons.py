"""price_cart, promotions and coupons over RPC against the real mongod and broker."""
from __future__ import annotations

import uuid
from datetime import timedelta

import eventlet
import pytest

from shared.clock import to_iso, utcnow
from shared.errors import Conflict, NotFound, ValidationFailed
from tests.marketing.conftest import FakeMember, FakeOrder
from tools.client import connect
from tools.testing import publish_event, store_of, wait_for

START = "2026-01-01T00:00:00Z"


def uid(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def events(db, event_type):
    return [row["envelope"]["data"] for row in db.outbox.find({"event_type": event_type})]


def lines():
    return [{"product_id": "prd_a", "category": "apparel", "unit_price": 12900, "quantity": 2},
            {"product_id": "prd_b", "category": "beauty", "unit_price": 8900, "quantity": 1}]


def test_price_cart_promotions_tier_and_explanations(marketing, start_service, rpc):
    svc = marketing()
    start_service(FakeMember)
    promo = rpc.marketing.create_promotion({"name": "Apparel 10%", "kind": "percent_off", "percent": 10,
                                            "scope": {"categories": ["apparel"]}, "starts_at": START,
                                            "priority": 5})
    rpc.marketing.create_promotion({"name": "满300减30", "kind": "threshold", "min_subtotal": 30000,
                                    "amount": 3000, "starts_at": START})
    assert events(store_of(svc), "promotion_created")[0]["promotion_id"] == promo["id"]

    cart = rpc.marketing.price_cart("mem_1", lines())
    assert cart["subtotal"] == 34700
    # 10% of 25800 = 2580 on apparel, then 32120 >= 30000: 3000 off spread over both lines
    assert [d["amount"] for d in cart["discounts"]] == [2580, 3000]
    assert cart["discount"] == 5580 and cart["total"] == 29120 and "shipping_fee" not in cart
    assert sum(line["discount"] for line in cart["lines"]) == cart["discount"]
    assert all(d["why"] for d in cart["discounts"]) and cart["currency"] == "CNY"

    gold = rpc.marketing.price_cart("mem_1", lines(), tier="gold")
    assert gold["discounts"][-1]["rule"] == "tier" and gold["discounts"][-1]["amount"] == 29120 * 5 // 100

    # the tier read model from member's events
    rpc.member.emit("member_registered", {"member_id": "mem_2", "region": "Shanghai", "gender": None,
                                          "birth_year": None, "interests": [], "tier": "bronze"})
    rpc.member.emit("tier_changed", {"member_id": "mem_2", "old_tier": "bronze", "new_tier": "platinum"})
    wait_for(lambda: (store_of(svc).members.find_one({"_id": "mem_2"}) or {}).get("tier") == "platinum",
             timeout=30, what="tier read model")
    assert rpc.marketing.price_cart("mem_2", lines())["discounts"][-1]["tier"] == "platinum"

    # member owns the tier benefits: the percent it announces wins over the configured table
    rpc.member.emit("tier_changed", {"member_id": "mem_3", "old_tier": "silver", "new_tier": "gold",
                                     "tier_discount_percent": 7})
    wait_for(lambda: store_of(svc).tier_benefits.find_one({"_id": "gold"}), timeout=30,
             what="gold's benefit learned")
    gold = rpc.marketing.price_cart("mem_1", lines(), tier="gold")
    assert gold["discounts"][-1]["amount"] == 29120 * 7 // 100

    ended = rpc.marketing.end_promotion(promo["id"])
    assert ended["status"] == "ended"
    rpc.marketing.end_promotion(promo["id"])  # again: no second event
    assert len(events(store_of(svc), "promotion_ended")) == 1
    assert [d["amount"] for d in rpc.marketing.price_cart("mem_1", lines())["discounts"]] == [3000]


def test_bad_input_is_typed_and_writes_nothing(marketing, rpc):
    svc = marketing()
    db = store_of(svc)
    with pytest.raises(ValidationFailed) as err:
        rpc.marketing.create_promotion({"name": "x", "kind": "percent_off", "percent": 150,
                                        "starts_at": START})
    assert "percent" in err.value.field_errors
    with pytest.raises(ValidationFailed) as err:
        rpc.marketing.create_promotion({"name": "x", "kind": "amount_off", "amount": 100,
                                        "starts_at": START, "ends_at": "2025-01-01T00:00:00Z"})
    assert "ends_at" in err.value.field_errors
    with pytest.raises(NotFound):
        rpc.marketing.end_promotion("prm_nope")
    with pytest.raises(NotFound):
        rpc.marketing.create_coupons({"promotion_id": "prm_nope", "code": "ABC", "starts_at": START})
    with pytest.raises(ValidationFailed) as err:
        rpc.marketing.create_experiment({"key": "k", "variants": [{"name": "a", "weight": 0},
                                                                  {"name": "b", "weight": 0}],
                                         "control": "a"})
    assert "variants" in err.value.field_errors
    with pytest.raises(ValidationFailed) as err:
        rpc.marketing.create_campaign({"name": "c", "segment": "nobody", "channel": "email",
                                       "template": {"body": "hi"}})
    assert "segment" in err.value.field_errors
    with pytest.raises(ValidationFailed) as err:
        rpc.marketing.price_cart("mem_1", [{"product_id": "a", "category": "c", "unit_price": "12",
                                            "quantity": 1}])
    assert "lines" in err.value.field_errors
    for name in ("promotions", "coupons", "experiments", "campaigns", "outbox"):
        assert db[name].count_documents({}) == 0, name
    rpc.marketing.create_experiment({"key": "dup", "variants": [{"name": "a", "weight": 1},
                                                                {"name": "b", "weight": 1}],
                                     "control": "a"})
    with pytest.raises(Conflict):
        rpc.marketing.create_experiment({"key": "dup", "variants": [{"name": "a", "weight": 1},
                                                                    {"name": "c", "weight": 1}],
                                         "control": "a"})
    assert db.experiments.count_documents({}) == 1
    assert len(events(db, "experiment_created")) == 1


def _coupon(rpc, max_redemptions=3, per_member_limit=None, **promo):
    p = rpc.marketing.create_promotion({"name": "coupon 20", "kind": "amount_off", "amount": 2000,
                                        "trigger": "coupon", "starts_at": START, **promo})
    code = uid("WIN").upper()
    rpc.marketing.create_coupons({"promotion_id": p["id"], "code": code, "starts_at": START,
                                  "max_redemptions": max_redemptions,
                                  "per_member_limit": per_member_limit})
    return p, code


def test_coupon_reservations_under_concurrency_never_exceed_the_limit(marketing, amqp_uri, rpc):
    svc = marketing()
    db = store_of(svc)
    _, code = _coupon(rpc, max_redemptions=3)
    outcomes = []

    def attempt(i):
        with connect(amqp_uri, timeout=60) as client:
            try:
                client.marketing.price_cart(f"mem_{i}", lines(), coupon_code=code, order_id=f"ord_c{i}")
                outcomes.append("ok")
            except (Conflict, ValidationFailed) as exc:
                outcomes.append(type(exc).__name__)

    pool = eventlet.GreenPool(12)
    for i in range(12):
        pool.spawn(attempt, i)
    pool.waitall()
    assert outcomes.count("ok") == 3, outcomes
    assert len(outcomes) == 12
    assert db.coupons.find_one({"_id": code})["used"] == 3
    assert db.coupon_reservations.count_documents({"code": code, "status": "reserved"}) == 3
    valid = rpc.marketing.validate_coupon(code, "mem_new", 50000)
    assert valid["valid"] is False and valid["reason"] == "exhausted"


def test_coupon_lifecycle_idempotent(marketing, start_service, rpc, amqp_uri):
    svc = marketing()
    start_service(FakeOrder)
    db = store_of(svc)
    promo, code = _coupon(rpc, max_redemptions=5, per_member_limit=1)
    assert rpc.marketing.validate_coupon(code, "mem_1", 100)["valid"] is True
    first = rpc.marketing.price_cart("mem_1", lines(), coupon_code=code, order_id="ord_1")
    again = rpc.marketing.price_cart("mem_1", lines(), coupon_code=code.lower(), order_id="ord_1")
    assert first["coupon_code"] == code and again["coupon_reservation"]["status"] == "reserved"
    assert first["discounts"][0]["rule"] == "coupon" and first["discount"] == 2000
    assert db.coupons.find_one({"_id": code})["used"] == 1  # re-pricing the same order: one use
    # per-member limit: the same member, another order
    with pytest.raises(ValidationFailed) as err:
        rpc.marketing.price_cart("mem_1", lines(), coupon_code=code, order_id="ord_2")
    assert err.value.details["reason"] == "member_limit_reached"
    assert rpc.marketing.validate_coupon(code, "mem_1", 100)["reason"] == "member_limit_reached"
    with pytest.raises(ValidationFailed) as err:
        rpc.marketing.price_cart("mem_1", lines(), coupon_code="NOPE")
    assert err.value.details["reason"] == "unknown_code"

    paid = {"order_id": "ord_1", "member_id": "mem_1", "lines": [
        {"product_id": "prd_a", "category": "apparel", "quantity": 1, "unit_price": 100, "discount": 0,
         "line_total": 100}], "total": 100, "currency": "CNY",
        "shipping_address": {"region": "Shanghai"}, "payment_ref": "pay_1"}
    envelope = rpc.order.emit("order_paid", paid)
    wait_for(lambda: db.coupon_reservations.find_one({"_id": "ord_1"})["status"] == "redeemed",
             timeout=30, what="coupon redeemed")
    publish_event(amqp_uri, envelope)  # redelivery
    rpc.order.emit("order_paid", paid)  # a second publication of the same fact
    wait_for(lambda: db.inbox.count_documents({"event_type": "order_paid"}) >= 2, timeout=30)
    redeemed = events(db, "coupon_redeemed")
    assert len(redeemed) == 1 and redeemed[0] == {"code": code, "promotion_id": promo["id"],
                                                  "order_id": "ord_1", "member_id": "mem_1",
                                                  "discount": 2000}
    assert db.coupons.find_one({"_id": code})["redeemed"] == 1

    # a paid order cancelled gives the coupon back once
    cancel = rpc.order.emit("order_cancelled", {"order_id": "ord_1", "member_id": "mem_1",
                                                "reason": "member", "was_paid": True})
    wait_for(lambda: db.coupon_reservations.find_one({"_id": "ord_1"})["status"] == "released",
             timeout=30, what="coupon released")
    publish_event(amqp_uri, cancel)
    rpc.order.emit("order_rejected", {"order_id": "ord_1", "reason": "late", "short_lines": []})
    wait_for(lambda: db.inbox.count_documents({"event_type": {"$in": ["order_cancelled",
                                                                      "order_rejected"]}}) >= 2,
             timeout=30)
    assert len(events(db, "coupon_released")) == 1
    assert db.coupons.find_one({"_id": code})["used"] == 0
    assert rpc.marketing.validate_coupon(code, "mem_1", 100)["valid"] is True

    # rejected before ever priced: a tombstone refuses a late reservation for that order
    rpc.order.emit("order_rejected", {"order_id": "ord_9", "reason": "insufficient_stock",
                                      "short_lines": []})
    wait_for(lambda: db.coupon_reservations.find_one({"_id": "ord_9"}), timeout=30)
    with pytest.raises(Conflict):
        rpc.marketing.price_cart("mem_9", lines(), coupon_code=code, order_id="ord_9")
    assert db.coupons.find_one({"_id": code})["used"] == 0


def test_reservation_ttl_releases(marketing, rpc):
    svc = marketing(MARKETING_COUPON_RESERVATION_TTL="600")
    db = store_of(svc)
    _, code = _coupon(rpc, max_redemptions=1)
    rpc.marketing.price_cart("mem_1", lines(), coupon_code=code, order_id="ord_t")
    assert rpc.marketing.run_expiry(to_iso(utcnow() + timedelta(seconds=60)))["released"] == 0
    assert rpc.marketing.run_expiry(to_iso(utcnow() + timedelta(seconds=700)))["released"] == 1
    assert rpc.marketing.run_expiry(to_iso(utcnow() + timedelta(seconds=800)))["released"] == 0
    assert db.coupon_reservations.find_one({"_id": "ord_t"})["release_reason"] == "expired"
    assert db.coupons.find_one({"_id": code})["used"] == 0
    assert len(events(db, "coupon_released")) == 1


def test_repricing_an_order_without_its_coupon_gives_the_coupon_back(marketing, rpc):
    svc = marketing()
    db = store_of(svc)
    _, code = _coupon(rpc, max_redemptions=1)
    rpc.marketing.price_cart("mem_1", lines(), coupon_code=code, order_id="ord_r")
    assert db.coupons.find_one({"_id": code})["used"] == 1

    again = rpc.marketing.price_cart("mem_1", lines(), order_id="ord_r")  # the member dropped it
    assert again["coupon_reservation"] is None and again["discount"] == 0
    row = db.coupon_reservations.find_one({"_id": "ord_r"})
    assert row["status"] == "released" and row["release_reason"] == "repriced"
    assert db.coupons.find_one({"_id": code})["used"] == 0
    assert len(events(db, "coupon_released")) == 1

    rpc.marketing.price_cart("mem_2", lines(), order_id="ord_plain")  # never held one
    assert db.coupon_reservations.find_one({"_id": "ord_plain"}) is None
    assert len(events(db, "coupon_released")) == 1

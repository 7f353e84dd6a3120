"""A/B experiments, referral codes, ad spend and recommendations over RPC."""
from __future__ import annotations

from collections import Counter

import pytest

from shared.errors import Conflict, NotFound, ValidationFailed
from tests.marketing.conftest import FakeMember, FakeOrder
from tools.testing import store_of, wait_for


def test_experiment_assignment_exposure_and_conclusion(marketing, rpc):
    svc = marketing()
    db = store_of(svc)
    rpc.marketing.create_experiment({"key": "btn", "control": "blue",
                                     "variants": [{"name": "blue", "weight": 1},
                                                  {"name": "orange", "weight": 3}]})
    first = [rpc.marketing.assign_variant("btn", f"s{i}") for i in range(150)]
    again = [rpc.marketing.assign_variant("btn", f"s{i}") for i in range(150)]
    assert [a["variant"] for a in first] == [a["variant"] for a in again]
    assert all(a["exposed"] for a in first) and not any(a["exposed"] for a in again)
    share = Counter(a["variant"] for a in first)["orange"] / 150
    assert 0.6 < share < 0.9  # the exact split is checked over 20000 subjects in unit tests
    assert db.outbox.count_documents({"event_type": "experiment_exposed"}) == 150
    with pytest.raises(NotFound):
        rpc.marketing.assign_variant("nope", "s1")
    with pytest.raises(ValidationFailed):
        rpc.marketing.conclude_experiment("btn", "green")
    assert rpc.marketing.stop_experiment("btn")["status"] == "stopped"
    assert rpc.marketing.assign_variant("btn", "s_new")["variant"] == "blue"
    assert rpc.marketing.conclude_experiment("btn", "orange")["winner"] == "orange"
    late = rpc.marketing.assign_variant("btn", "s_other")
    assert late["variant"] == "orange" and late["exposed"] is False
    assert db.exposures.count_documents({}) == 150


def test_referral_codes_and_ad_spend(marketing, start_service, rpc):
    svc = marketing()
    start_service(FakeOrder)
    db = store_of(svc)
    code = rpc.marketing.create_referral_code({"code": "kol-lily", "owner": "lily", "kind": "kol"})
    assert code["code"] == "KOL-LILY"
    with pytest.raises(Conflict):
        rpc.marketing.create_referral_code({"code": "KOL-LILY", "owner": "other"})
    rpc.order.emit("order_placed", {
        "order_id": "ord_r", "member_id": "mem_r", "lines": [
            {"product_id": "p", "category": "c", "quantity": 1, "unit_price": 500, "discount": 0,
             "line_total": 500}], "subtotal": 500, "discount": 0, "shipping_fee": 0, "total": 500,
        "currency": "CNY", "coupon_code": None, "promotion_ids": [],
        "attribution": {"session_id": None, "campaign_id": None, "referral_code": "kol-lily"}})
    wait_for(lambda: rpc.marketing.get_referral_code("kol-lily")["orders"] == 1, timeout=30)
    assert rpc.marketing.get_referral_code("KOL-LILY")["revenue"] == 500

    spend = {"channel": "douyin", "campaign_id": "cmp_x", "amount": 150000, "date": "2026-11-25",
             "request_id": "r1"}
    rpc.marketing.record_ad_spend(spend)
    rpc.marketing.record_ad_spend(spend)  # same request: recorded once
    rows = [r["envelope"]["data"] for r in db.outbox.find({"event_type": "ad_spend_recorded"})]
    assert rows == [{"channel": "douyin", "campaign_id": "cmp_x", "amount": 150000,
                     "currency": "CNY", "date": "2026-11-25"}]
    with pytest.raises(ValidationFailed) as err:
        rpc.marketing.record_ad_spend({**spend, "currency": "USD", "request_id": "r2"})
    assert "currency" in err.value.field_errors
    with pytest.raises(ValidationFailed) as err:
        rpc.marketing.record_ad_spend({**spend, "amount": -1, "request_id": "r3"})
    assert "amount" in err.value.field_errors
    assert db.ad_spend.count_documents({}) == 1


def _paid(order_id, member_id, products):
    lines = [{"product_id": p, "category": cat, "quantity": 1, "unit_price": 100, "discount": 0,
              "line_total": 100} for p, cat in products]
    return {"order_id": order_id, "member_id": member_id, "lines": lines, "total": 100 * len(lines),
            "currency": "CNY", "shipping_address": {"region": "Beijing"}, "payment_ref": "pay"}


def test_recommendations_co_purchases_interests_best_sellers(marketing, start_service, rpc):
    svc = marketing()
    start_service(FakeOrder)
    start_service(FakeMember)
    db = store_of(svc)
    rpc.order.emit("order_paid", _paid("o1", "buyer1", [("a", "shoes"), ("b", "socks")]))
    rpc.order.emit("order_paid", _paid("o2", "buyer2", [("a", "shoes"), ("b", "socks"), ("c", "hats")]))
    rpc.order.emit("order_paid", _paid("o3", "buyer3", [("a", "shoes"), ("c", "hats")]))
    rpc.order.emit("order_paid", _paid("o4", "buyer4", [("d", "beauty"), ("d2", "beauty")]))
    rpc.order.emit("order_paid", _paid("o5", "buyer5", [("d", "beauty")]))
    rpc.order.emit("order_paid", _paid("o6", "me", [("a", "shoes")]))
    rpc.member.emit("member_registered", {"member_id": "fan", "region": None, "gender": None,
                                          "birth_year": None, "interests": ["beauty"], "tier": "bronze"})
    wait_for(lambda: db.processed.count_documents({}) == 6 and db.members.find_one({"_id": "fan"}),
             timeout=30, what="purchases counted")
    mine = [r["product_id"] for r in rpc.marketing.recommend_products("me", 3)["products"]]
    assert mine == ["b", "c", "d"]  # b 2 and c 2 co-purchases (tie by id), then best seller d
    fan = rpc.marketing.recommend_products("fan", 2)["products"]
    assert [r["product_id"] for r in fan] == ["d", "d2"] and "interests" in fan[0]["reason"]
    stranger = rpc.marketing.recommend_products("nobody", 2)["products"]
    assert [r["product_id"] for r in stranger] == ["a", "b"]
    with pytest.raises(ValidationFailed):
        rpc.marketing.recommend_products("me", 0)

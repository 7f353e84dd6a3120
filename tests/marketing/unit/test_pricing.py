"""Pure pricing rules: each kind, scopes, windows, stacking, caps, tier discount, rounding."""
from __future__ import annotations

import random
from datetime import datetime, timezone

import pytest

from services.marketing.pricing import allocate, price, rule_amount

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def line(pid, price_, qty=1, cat="apparel"):
    return {"product_id": pid, "category": cat, "unit_price": price_, "quantity": qty}


def promo(pid="p1", kind="percent_off", **kw):
    base = {"id": pid, "name": pid, "kind": kind, "trigger": "automatic", "scope": {},
            "starts_at": "2026-11-01T00:00:00Z", "ends_at": None, "priority": 0,
            "stacking": "combinable", "max_discount": None, "status": "active",
            "min_subtotal": 0, "percent_bp": None, "amount": None}
    base.update(kw)
    return base


def run(lines, promos, **kw):
    kw.setdefault("now", NOW)
    kw.setdefault("currency", "CNY")
    return price(lines, promos, **kw)


def check_sums(cart):
    assert sum(lc["discount"] for lc in cart["lines"]) == cart["discount"]
    assert sum(d["amount"] for d in cart["discounts"]) == cart["discount"]
    for lc in cart["lines"]:
        assert lc["line_total"] == lc["unit_price"] * lc["quantity"] - lc["discount"] >= 0
        assert sum(d["amount"] for d in lc["discounts"]) == lc["discount"]
    assert cart["total"] == cart["subtotal"] - cart["discount"]
    assert "shipping_fee" not in cart  # order owns the shipping fee


def test_no_promotions_full_price():
    cart = run([line("a", 1000, 2)], [])
    assert (cart["subtotal"], cart["discount"], cart["total"]) == (2000, 0, 2000)
    assert cart["discounts"] == []
    check_sums(cart)


def test_percent_off_floors():
    cart = run([line("a", 999)], [promo(percent_bp=1000)])
    assert cart["discount"] == 99  # floor(99.9)
    assert cart["discounts"][0]["rule"] == "promotion"
    assert "10% off" in cart["discounts"][0]["why"]
    check_sums(cart)


def test_amount_off_never_beyond_the_eligible_amount():
    cart = run([line("a", 500)], [promo(kind="amount_off", amount=800)])
    assert cart["discount"] == 500 and cart["total"] == 0
    check_sums(cart)


def test_threshold_met_and_not_met():
    p = promo(kind="threshold", min_subtotal=20000, amount=3000)
    assert run([line("a", 19999)], [p])["discount"] == 0
    cart = run([line("a", 10000, 2)], [p])
    assert cart["discount"] == 3000
    check_sums(cart)


def test_threshold_repeat_every_step():
    p = promo(kind="threshold", min_subtotal=10000, amount=1000, repeat=True)
    assert run([line("a", 35000)], [p])["discount"] == 3000


def test_category_and_product_scope():
    p = promo(percent_bp=5000, scope={"categories": ["beauty"], "product_ids": ["x"]})
    cart = run([line("a", 1000), line("b", 1000, cat="beauty"), line("x", 400)], [p])
    d = {lc["product_id"]: lc["discount"] for lc in cart["lines"]}
    assert d == {"a": 0, "b": 500, "x": 200}
    check_sums(cart)


def test_tier_scope():
    p = promo(percent_bp=1000, scope={"tiers": ["gold"]})
    assert run([line("a", 1000)], [p], tier="silver")["discount"] == 0
    assert run([line("a", 1000)], [p], tier=None)["discount"] == 0
    assert run([line("a", 1000)], [p], tier="gold")["discount"] == 100


def test_time_window_and_status():
    future = promo(percent_bp=1000, starts_at="2026-12-01T00:00:00Z")
    past = promo("p2", percent_bp=1000, ends_at="2026-11-26T12:00:00Z")  # end is exclusive
    ended = promo("p3", percent_bp=1000, status="ended")
    assert run([line("a", 1000)], [future, past, ended])["discount"] == 0


def test_coupon_only_promotion_needs_its_coupon():
    p = promo(percent_bp=2000, trigger="coupon")
    assert run([line("a", 1000)], [p])["discount"] == 0
    cart = run([line("a", 1000)], [p], coupon={"code": "WIN", "promotion_id": "p1"})
    assert cart["discount"] == 200 and cart["coupon_applied"]
    assert cart["discounts"][0]["rule"] == "coupon" and cart["discounts"][0]["code"] == "WIN"
    assert cart["coupon_code"] == "WIN"


def test_coupon_below_threshold_is_reported():
    p = promo(kind="threshold", trigger="coupon", min_subtotal=5000, amount=500)
    cart = run([line("a", 1000)], [p], coupon={"code": "WIN", "promotion_id": "p1"})
    assert not cart["coupon_applied"] and cart["coupon_reason"] == "threshold_not_met"


def test_priority_orders_application_on_remaining_amounts():
    first = promo("hi", kind="amount_off", amount=1000, priority=10)
    second = promo("lo", percent_bp=1000, priority=1)
    cart = run([line("a", 10000)], [second, first])
    assert [d["promotion_id"] for d in cart["discounts"]] == ["hi", "lo"]
    assert cart["discount"] == 1000 + 900
    check_sums(cart)


def test_exclusive_first_blocks_the_rest():
    ex = promo("ex", percent_bp=3000, priority=10, stacking="exclusive")
    other = promo("other", kind="amount_off", amount=100, priority=1)
    cart = run([line("a", 1000)], [other, ex])
    assert cart["promotion_ids"] == ["ex"] and cart["discount"] == 300


def test_exclusive_after_others_is_skipped():
    other = promo("other", kind="amount_off", amount=100, priority=10)
    ex = promo("ex", percent_bp=3000, priority=1, stacking="exclusive")
    cart = run([line("a", 1000)], [other, ex])
    assert cart["promotion_ids"] == ["other"] and cart["discount"] == 100


def test_exclusive_coupon_excluded_reason():
    other = promo("other", kind="amount_off", amount=100, priority=10)
    ex = promo("ex", percent_bp=3000, stacking="exclusive", trigger="coupon")
    cart = run([line("a", 1000)], [other, ex], coupon={"code": "C", "promotion_id": "ex"})
    assert cart["coupon_reason"] == "excluded_by_other_promotion"


def test_promotion_cap():
    cart = run([line("a", 100000)], [promo(percent_bp=5000, max_discount=2000)])
    assert cart["discount"] == 2000


def test_cart_cap_trims_later_rules():
    a = promo("a", percent_bp=4000, priority=2)
    b = promo("b", percent_bp=5000, priority=1)
    cart = run([line("x", 10000)], [a, b], cap_bp=5000)
    assert cart["discount"] == 5000
    assert [d["amount"] for d in cart["discounts"]] == [4000, 1000]
    check_sums(cart)


def test_tier_discount_applies_last_even_after_exclusive():
    ex = promo("ex", kind="amount_off", amount=1000, stacking="exclusive")
    cart = run([line("a", 10000)], [ex], tier="gold", tier_percent_bp=500)
    assert [d["rule"] for d in cart["discounts"]] == ["promotion", "tier"]
    assert cart["discounts"][1]["amount"] == 450  # 5% of 9000
    assert "gold" in cart["discounts"][1]["why"]
    check_sums(cart)


def test_tier_without_percent_gives_nothing():
    assert run([line("a", 1000)], [], tier="bronze", tier_percent_bp=0)["discounts"] == []


def test_rounding_split_sums_exactly_and_is_deterministic():
    lines = [line("a", 333), line("b", 333), line("c", 334)]
    cart = run(lines, [promo(kind="amount_off", amount=100)])
    assert [lc["discount"] for lc in cart["lines"]] == [33, 33, 34]
    again = run(lines, [promo(kind="amount_off", amount=100)])
    assert again == cart


def test_allocate_ties_go_to_the_earlier_line():
    assert allocate(1, [100, 100, 100]) == [1, 0, 0]
    assert allocate(2, [100, 100, 100]) == [1, 1, 0]
    assert allocate(0, [5, 5]) == [0, 0]
    with pytest.raises(ValueError):
        allocate(11, [5, 5])


def test_allocate_property_random():
    rng = random.Random(7)
    for _ in range(500):
        weights = [rng.randint(0, 50000) for _ in range(rng.randint(1, 8))]
        total = rng.randint(0, sum(weights))
        shares = allocate(total, weights)
        assert sum(shares) == total
        assert all(0 <= s <= w for s, w in zip(shares, weights, strict=True))


def test_many_rules_random_carts_always_balance():
    rng = random.Random(3)
    promos = [promo("p1", percent_bp=1550, priority=3), promo("p2", kind="amount_off", amount=777),
              promo("p3", kind="threshold", min_subtotal=3000, amount=999, repeat=True,
                    scope={"categories": ["beauty"]})]
    for _ in range(200):
        lines = [line(f"x{i}", rng.randint(1, 9999), rng.randint(1, 5), rng.choice(["apparel", "beauty"]))
                 for i in range(rng.randint(1, 6))]
        check_sums(run(lines, promos, tier="gold", tier_percent_bp=300, cap_bp=rng.choice([10000, 3000])))


def test_rule_amount_min_subtotal_for_percent():
    assert rule_amount(promo(percent_bp=1000, min_subtotal=500), 499) == 0
    assert rule_amount(promo(percent_bp=1000, min_subtotal=500), 500) == 50

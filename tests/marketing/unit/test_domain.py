"""Pure rules: coupon usability, consent/caps/quiet hours, experiment assignment, recommendations,
and the RPC schemas' bad-input errors."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from services.marketing import domain, schemas
from shared.errors import ValidationFailed
from shared.validation import load

NOW = datetime(2026, 11, 26, 6, 0, tzinfo=timezone.utc)  # 14:00 in Shanghai
SH = ZoneInfo("Asia/Shanghai")


def coupon(**kw):
    return {"_id": "C", "promotion_id": "p", "starts_at": "2026-11-01T00:00:00Z", "ends_at": None,
            "max_redemptions": 2, "per_member_limit": 1, "used": 0, **kw}


PROMO = {"_id": "p", "status": "active", "starts_at": "2026-11-01T00:00:00Z", "ends_at": None,
         "min_subtotal": 1000}


@pytest.mark.parametrize("c,p,uses,subtotal,reason", [
    (None, None, 0, None, "unknown_code"),
    (coupon(starts_at="2026-12-01T00:00:00Z"), PROMO, 0, None, "not_started"),
    (coupon(ends_at="2026-11-26T06:00:00Z"), PROMO, 0, None, "expired"),
    (coupon(), {**PROMO, "status": "ended"}, 0, None, "promotion_inactive"),
    (coupon(used=2), PROMO, 0, None, "exhausted"),
    (coupon(), PROMO, 1, None, "member_limit_reached"),
    (coupon(), PROMO, 0, 999, "threshold_not_met"),
    (coupon(), PROMO, 0, 1000, None),
    (coupon(max_redemptions=None, per_member_limit=None, used=99), PROMO, 50, None, None),
])
def test_coupon_problem(c, p, uses, subtotal, reason):
    assert domain.coupon_problem(c, p, uses, NOW, subtotal) == reason


def test_generated_codes_unique_and_prefixed():
    codes = domain.generate_codes("VIP", 500)
    assert len(set(codes)) == 500 and all(c.startswith("VIP") and len(c) == 11 for c in codes)


def test_quiet_hours_wrap_midnight():
    q = domain.QuietHours.parse("21:00-09:00")
    assert not q.contains(NOW, SH)
    night = datetime(2026, 11, 26, 14, 0, tzinfo=timezone.utc)  # 22:00 local
    assert q.contains(night, SH)
    assert q.ends_after(night, SH) == datetime(2026, 11, 27, 1, 0, tzinfo=timezone.utc)
    early = datetime(2026, 11, 26, 0, 30, tzinfo=timezone.utc)  # 08:30 local
    assert q.contains(early, SH)
    assert q.ends_after(early, SH) == datetime(2026, 11, 26, 1, 0, tzinfo=timezone.utc)
    assert domain.QuietHours.parse("") is None
    day = domain.QuietHours.parse("12:00-13:00")
    assert day.contains(datetime(2026, 11, 26, 4, 30, tzinfo=timezone.utc), SH)


def test_send_decision_consent_and_cap():
    window = timedelta(days=7)
    granted = {"consents": {"email": {"granted": True}}}
    assert domain.send_decision(None, "email", [], NOW, 3, window) == "no_consent"
    assert domain.send_decision(granted, "sms", [], NOW, 3, window) == "no_consent"
    assert domain.send_decision({**granted, "erased": True}, "email", [], NOW, 3, window) == "no_consent"
    assert domain.send_decision(granted, "email", [], NOW, 3, window) == "send"
    recent = ["2026-11-25T00:00:00Z"] * 3
    assert domain.send_decision(granted, "email", recent, NOW, 3, window) == "frequency_cap"
    old = ["2026-11-01T00:00:00Z"] * 3
    assert domain.send_decision(granted, "email", old, NOW, 3, window) == "send"
    assert domain.record_send(old, NOW, window) == ["2026-11-26T06:00:00.000Z"]


def test_assignment_deterministic_and_weighted():
    variants = [{"name": "a", "weight": 1}, {"name": "b", "weight": 3}, {"name": "z", "weight": 0}]
    first = [domain.assign("exp", f"s{i}", variants) for i in range(20000)]
    assert first == [domain.assign("exp", f"s{i}", variants) for i in range(20000)]
    counts = Counter(first)
    assert counts["z"] == 0
    assert abs(counts["b"] / 20000 - 0.75) < 0.02
    with pytest.raises(ValueError):
        domain.assign("exp", "s", [{"name": "a", "weight": 0}])


def test_assignment_differs_between_experiments():
    v = [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]
    one = [domain.assign("e1", f"s{i}", v) for i in range(200)]
    two = [domain.assign("e2", f"s{i}", v) for i in range(200)]
    assert one != two


def test_recommend_co_purchases_then_interests_then_best_sellers():
    out = domain.recommend(
        bought={"a"}, co_purchases={"a": {"b": 3, "c": 5, "a": 1}},
        interest_products=[{"product_id": "d", "category": "beauty"}],
        best_sellers=[{"product_id": "c", "category": "x"}, {"product_id": "e", "category": "x"},
                      {"product_id": "u", "category": "x"}],
        unavailable={"u"}, limit=10)
    assert [r["product_id"] for r in out] == ["c", "b", "d", "e"]
    assert domain.recommend(set(), {}, [], [{"product_id": "e", "category": "x"}], set(), 1)[0][
        "reason"] == "best seller"


def test_tier_discounts_parse():
    assert domain.parse_tier_discounts("silver:2, gold:5.5") == {"silver": 200, "gold": 550}
    with pytest.raises(ValueError):
        domain.parse_tier_discounts("gold:120")


def bad(schema, payload):
    with pytest.raises(ValidationFailed) as err:
        load(schema, payload)
    return err.value.field_errors


PROMO_IN = {"name": "x", "kind": "percent_off", "percent": 10, "starts_at": "2026-11-01T00:00:00Z"}


@pytest.mark.parametrize("change,field", [
    ({"percent": 0}, "percent"), ({"percent": 101}, "percent"), ({"percent": -5}, "percent"),
    ({"percent": None}, "percent"), ({"kind": "bogus"}, "kind"),
    ({"ends_at": "2026-10-01T00:00:00Z"}, "ends_at"), ({"stacking": "maybe"}, "stacking"),
    ({"kind": "threshold", "amount": 100}, "min_subtotal"), ({"kind": "amount_off"}, "amount"),
    ({"scope": {"colors": ["red"]}}, "scope"), ({"starts_at": "tomorrow"}, "starts_at"),
])
def test_promotion_bad_input(change, field):
    assert field in bad(schemas.Promotion(), {**PROMO_IN, **change})


@pytest.mark.parametrize("payload,field", [
    ({"key": "k", "variants": [{"name": "a", "weight": 0}, {"name": "b", "weight": 0}],
      "control": "a"}, "variants"),
    ({"key": "k", "variants": [{"name": "a", "weight": 1}, {"name": "a", "weight": 1}],
      "control": "a"}, "variants"),
    ({"key": "k", "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}],
      "control": "c"}, "control"),
    ({"key": "k", "variants": [{"name": "a", "weight": -1}, {"name": "b", "weight": 1}],
      "control": "a"}, "variants"),
    ({"key": "k", "variants": [{"name": "a", "weight": 1}], "control": "a"}, "variants"),
])
def test_experiment_bad_input(payload, field):
    assert field in bad(schemas.Experiment(), payload)


def test_coupon_batch_needs_code_or_count():
    base = {"promotion_id": "p", "starts_at": "2026-11-01T00:00:00Z"}
    assert "code" in bad(schemas.CouponBatch(), base)
    assert "code" in bad(schemas.CouponBatch(), {**base, "code": "ABC", "count": 3})
    assert "ends_at" in bad(schemas.CouponBatch(), {**base, "code": "ABC",
                                                     "ends_at": "2026-01-01T00:00:00Z"})


def test_price_cart_bad_lines():
    errors = bad(schemas.PriceCart(), {"member_id": "m", "lines": [
        {"product_id": "a", "category": "c", "unit_price": -1, "quantity": 1}]})
    assert "lines" in errors
    assert "lines" in bad(schemas.PriceCart(), {"member_id": "m", "lines": []})

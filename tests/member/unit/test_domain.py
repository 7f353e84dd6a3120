"""Pure rules of the member service: tiers, points, reversal, lots, segments, RFM."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from services.member import domain
from services.member.config import MemberConfig
from services.member.domain import (
    PaidOrder,
    PointsPolicy,
    PolicyError,
    RfmPolicy,
    SegmentPolicy,
    TierPolicy,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def tiers(window_days=365):
    return TierPolicy.parse("silver:1000,gold:5000,platinum:20000",
                            "bronze:1,silver:1.5,gold:2,platinum:3",
                            "bronze:0,silver:2,gold:5,platinum:10", window_days)


# ------------------------------------------------------------------ tiers

@pytest.mark.parametrize("spend,expected", [
    (0, "bronze"), (999, "bronze"), (1000, "silver"), (4999, "silver"),
    (5000, "gold"), (19999, "gold"), (20000, "platinum"), (10**9, "platinum"),
])
def test_tier_thresholds_are_inclusive(spend, expected):
    assert tiers().tier_for(spend).name == expected


def test_tier_benefits_multiplier_and_discount():
    policy = tiers()
    assert policy.get("gold").multiplier == Decimal("2")
    assert policy.get("platinum").discount_percent == 10
    assert policy.get("bronze").benefits() == {"points_multiplier": "1", "discount_percent": 0}


def test_progress_to_next_tier():
    progress = tiers().progress(1200)
    assert progress["qualifies_for"] == "silver"
    assert progress["next_tier"] == "gold"
    assert progress["remaining_to_next"] == 3800
    top = tiers().progress(25000)
    assert top["next_tier"] is None and top["remaining_to_next"] == 0


@pytest.mark.parametrize("thresholds", [
    "silver:5000,gold:1000,platinum:20000",       # not increasing
    "silver:1000,gold:5000",                        # platinum missing
    "silver:abc,gold:5000,platinum:20000",          # not a number
    "diamond:1,silver:2,gold:3,platinum:4",         # unknown tier
    "silver:0,gold:5000,platinum:20000",            # silver must exceed bronze's 0
])
def test_bad_tier_thresholds_are_rejected(thresholds):
    with pytest.raises(PolicyError):
        TierPolicy.parse(thresholds, "", "", 365)


def test_bad_discount_and_multiplier_rejected():
    with pytest.raises(PolicyError):
        TierPolicy.parse("silver:1,gold:2,platinum:3", "", "silver:101", 365)
    with pytest.raises(PolicyError):
        TierPolicy.parse("silver:1,gold:2,platinum:3", "gold:-1", "", 365)
    with pytest.raises(PolicyError):
        TierPolicy.parse("silver:1,gold:2,platinum:3", "", "", 0)


def test_direction():
    assert TierPolicy.direction("bronze", "gold") == "upgrade"
    assert TierPolicy.direction("platinum", "silver") == "downgrade"


def test_rolling_window_spend_with_controlled_clock():
    window = timedelta(days=30)
    orders = [PaidOrder(NOW - 40 * DAY, 9000), PaidOrder(NOW - 20 * DAY, 3000),
              PaidOrder(NOW - 1 * DAY, 2000, refunded=500)]
    assert domain.window_spend(orders, NOW, window) == 4500
    # ten days later the order of 20 days ago has aged out too
    assert domain.window_spend(orders, NOW + 10 * DAY, window) == 1500
    # exactly at the edge: an order paid exactly `window` ago no longer counts
    assert domain.window_spend([PaidOrder(NOW - window, 100)], NOW, window) == 0
    assert domain.window_spend([PaidOrder(NOW - window + timedelta(seconds=1), 100)], NOW, window) == 100


def test_window_tier_drops_as_orders_age_out():
    policy = tiers(window_days=30)
    orders = [PaidOrder(NOW - 25 * DAY, 4000), PaidOrder(NOW - 2 * DAY, 1500)]
    assert policy.tier_for(domain.window_spend(orders, NOW, policy.window)).name == "gold"
    later = NOW + 6 * DAY
    assert policy.tier_for(domain.window_spend(orders, later, policy.window)).name == "silver"
    assert policy.tier_for(domain.window_spend(orders, NOW + 40 * DAY, policy.window)).name == "bronze"


def test_refunds_reduce_spend_never_below_zero():
    assert PaidOrder(NOW, 1000, refunded=1500).net == 0
    assert domain.window_spend([PaidOrder(NOW, 1000, 1500), PaidOrder(NOW, 700)], NOW, DAY) == 700


def test_next_review_is_when_oldest_contributing_order_ages_out():
    window = timedelta(days=30)
    orders = [PaidOrder(NOW - 10 * DAY, 100), PaidOrder(NOW - 5 * DAY, 100),
              PaidOrder(NOW - 20 * DAY, 100, refunded=100)]  # fully refunded: contributes nothing
    assert domain.next_review_at(orders, NOW, window) == NOW + 20 * DAY
    assert domain.next_review_at([], NOW, window) is None


# ------------------------------------------------------------------ points

def points(rate="1", expiry_days=365):
    return PointsPolicy.parse(rate, 100, expiry_days)


def test_earn_scaled_by_multiplier_and_floored():
    policy = points()
    assert policy.earn(32700, Decimal("1")) == 327
    assert policy.earn(32799, Decimal("1")) == 327          # floor, never round up
    assert policy.earn(32700, Decimal("1.5")) == 490        # 490.5 → 490
    assert policy.earn(32700, Decimal("2")) == 654
    assert policy.earn(99, Decimal("1")) == 0
    assert policy.earn(0, Decimal("3")) == 0
    assert points("2.5").earn(10000, Decimal("1.25")) == 312


def test_points_policy_rejects_bad_settings():
    for args in (("-1", 100, 365), ("x", 100, 365), ("1", 0, 365), ("1", 100, 0)):
        with pytest.raises(PolicyError):
            PointsPolicy.parse(*args)


def test_expiry_date():
    assert points(expiry_days=30).expires_at(NOW) == NOW + 30 * DAY


def test_reversal_of_partially_refunded_order():
    # 327 points earned on 32700; 11900 refunded → floor(327 * 11900 / 32700) = 119
    assert domain.reversal_due(327, 0, 32700, 11900) == 119
    # a second refund of the rest reverses exactly what is left
    assert domain.reversal_due(327, 119, 32700, 32700) == 208
    # a duplicate view of the same cumulative refund reverses nothing more
    assert domain.reversal_due(327, 119, 32700, 11900) == 0


def test_reversal_never_exceeds_what_the_order_earned():
    assert domain.reversal_target(100, 1000, 5000) == 100
    assert domain.reversal_due(100, 100, 1000, 999999) == 0
    assert domain.reversal_due(100, 40, 1000, 2000) == 60
    assert domain.reversal_target(0, 1000, 1000) == 0
    assert domain.reversal_target(100, 1000, 0) == 0


def test_partial_refunds_sum_to_the_earned_points_without_drift():
    earned, total = 333, 10000
    reversed_ = 0
    refunded = 0
    for amount in (3333, 3333, 3334):
        refunded += amount
        due = domain.reversal_due(earned, reversed_, total, refunded)
        assert due >= 0
        reversed_ += due
    assert reversed_ == earned


def test_earn_pays_back_debt_first():
    assert domain.lot_remaining_after_earn(100, 0) == 100
    assert domain.lot_remaining_after_earn(100, -30) == 70
    assert domain.lot_remaining_after_earn(100, -300) == 0
    assert domain.lot_remaining_after_earn(100, 50) == 100


def test_plan_consumption_fifo():
    takes, left = domain.plan_consumption([("a", 10), ("b", 5), ("c", 50)], 12)
    assert takes == [("a", 10), ("b", 2)] and left == 0
    takes, left = domain.plan_consumption([("a", 10)], 25)
    assert takes == [("a", 10)] and left == 15
    assert domain.plan_consumption([], 5) == ([], 5)
    assert domain.plan_consumption([("a", 0), ("b", 3)], 2) == ([("b", 2)], 0)


# ------------------------------------------------------------------ segments and RFM

SEG = SegmentPolicy(new_days=30, active_days=90, at_risk_days=180, dormant_days=365)


@pytest.mark.parametrize("registered_days,last_order_days,expected", [
    (5, None, "new"),
    (29, None, "new"),
    (31, None, "at_risk"),       # never ordered, past the new window
    (200, None, "dormant"),
    (400, None, "churned"),
    (5, 1, "active"),            # registered recently but ordered: active, not new
    (400, 90, "active"),
    (400, 91, "at_risk"),
    (400, 180, "at_risk"),
    (400, 181, "dormant"),
    (800, 365, "dormant"),
    (800, 366, "churned"),
])
def test_segment_of(registered_days, last_order_days, expected):
    last = NOW - last_order_days * DAY if last_order_days is not None else None
    assert domain.segment_of(NOW - registered_days * DAY, last, NOW, SEG) == expected


def test_segment_moves_with_the_clock():
    last = NOW - 10 * DAY
    assert domain.segment_of(NOW - 100 * DAY, last, NOW, SEG) == "active"
    assert domain.segment_of(NOW - 100 * DAY, last, NOW + 100 * DAY, SEG) == "at_risk"
    assert domain.segment_of(NOW - 100 * DAY, last, NOW + 300 * DAY, SEG) == "dormant"
    assert domain.segment_of(NOW - 100 * DAY, last, NOW + 400 * DAY, SEG) == "churned"


def test_segment_policy_validation():
    with pytest.raises(PolicyError):
        SegmentPolicy(30, 90, 80, 365)
    with pytest.raises(PolicyError):
        SegmentPolicy(200, 90, 180, 365)
    with pytest.raises(PolicyError):
        SegmentPolicy(0, 90, 180, 365)


RFM = RfmPolicy.parse("30,60,90,180", "2,3,5,10", "50000,100000,300000,1000000")


def test_rfm_scores():
    assert domain.rfm_scores(None, 0, 0, NOW, RFM) == {"r": 0, "f": 0, "m": 0, "score": "000"}
    best = domain.rfm_scores(NOW - 2 * DAY, 12, 2_000_000, NOW, RFM)
    assert best == {"r": 5, "f": 5, "m": 5, "score": "555"}
    mid = domain.rfm_scores(NOW - 75 * DAY, 3, 120000, NOW, RFM)
    assert (mid["r"], mid["f"], mid["m"]) == (3, 3, 3)
    low = domain.rfm_scores(NOW - 500 * DAY, 1, 100, NOW, RFM)
    assert low["score"] == "111"


@pytest.mark.parametrize("text", ["1,2,3", "3,2,1,0", "a,b,c,d", "1,1,2,3", "-1,2,3,4"])
def test_rfm_policy_rejects_bad_settings(text):
    with pytest.raises(PolicyError):
        RfmPolicy.parse(text, "2,3,5,10", "1,2,3,4")


# ------------------------------------------------------------------ profile helpers and config

def test_email_normalisation():
    assert domain.normalise_email("  Li.Wei@Example.COM ") == "li.wei@example.com"


def test_interests_normalised_and_deduplicated():
    assert domain.normalise_interests(["Running", "running ", "", "Skincare"]) == ["running", "skincare"]


def test_config_defaults_parse_and_overrides_apply():
    config = MemberConfig.from_values()
    assert [t.name for t in config.tiers.tiers] == list(domain.TIERS)
    custom = MemberConfig.from_values({"MEMBER_TIER_WINDOW_DAYS": "30", "MEMBER_POINTS_EXPIRY_DAYS": 7,
                                       "UNRELATED": "x"})
    assert custom.tiers.window == 30 * DAY and custom.points.expiry == 7 * DAY


def test_config_rejects_non_integer():
    with pytest.raises(ValueError):
        MemberConfig.from_values({"MEMBER_NEW_DAYS": "soon"})

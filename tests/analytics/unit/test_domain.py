"""Pure analytics rules: buckets, ranges, rounding, percentiles, significance, privacy."""
from datetime import datetime, timezone
from statistics import NormalDist
from zoneinfo import ZoneInfo

import pytest

from services.analytics import domain, schemas
from shared.errors import ValidationFailed

SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 26, 12, 30, tzinfo=timezone.utc)


def test_buckets_use_the_shop_time_zone():
    hour, day = domain.buckets_of(datetime(2026, 11, 26, 17, 5, tzinfo=timezone.utc), SH)
    assert hour.key == "2026-11-27T01+0800"
    assert day.key == "2026-11-27"
    assert day.start == datetime(2026, 11, 26, 16, tzinfo=timezone.utc)


def test_range_rounds_to_whole_hours_and_defaults():
    rng = domain.resolve_range("2026-11-26T10:15:00Z", "2026-11-26T11:05:00Z", NOW)
    assert (rng.start.hour, rng.end.hour) == (10, 12)
    default = domain.resolve_range(None, None, NOW)
    assert default.end == datetime(2026, 11, 26, 13, tzinfo=timezone.utc)
    assert (default.end - default.start).days == 30


@pytest.mark.parametrize("start,end,field", [
    ("2026-11-27T00:00:00Z", "2026-11-26T00:00:00Z", "end"),
    ("yesterday", None, "start"),
    (None, "soon", "end"),
    ("2020-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "start"),
])
def test_invalid_ranges_name_the_field(start, end, field):
    with pytest.raises(ValidationFailed) as err:
        domain.resolve_range(start, end, NOW)
    assert field in err.value.field_errors


def test_covering_uses_days_inside_and_hours_at_the_edges():
    rng = domain.resolve_range("2026-11-24T10:00:00Z", "2026-11-26T20:00:00Z", NOW)
    cover = rng.covering(SH)
    assert cover["days"] == (datetime(2026, 11, 24, 16, tzinfo=timezone.utc),
                             datetime(2026, 11, 26, 16, tzinfo=timezone.utc))
    assert cover["hours"] == [(rng.start, cover["days"][0]), (cover["days"][1], rng.end)]
    short = domain.resolve_range("2026-11-26T01:00:00Z", "2026-11-26T03:00:00Z", NOW)
    assert short.covering(SH) == {"days": None, "hours": [(short.start, short.end)]}


def test_money_and_rates():
    assert domain.money_div(1001, 2) == 501
    assert domain.money_div(-1001, 2) == -501
    assert domain.money_div(5, 0) == 0
    assert domain.rate(1, 3) == 0.333333
    assert domain.rate(1, 0) == 0.0
    assert domain.roi(300, 100) == 2.0
    assert domain.roi(300, 0) is None


def test_percentile_nearest_rank():
    assert domain.percentile([], 50) is None
    assert domain.percentile([5, 1, 3, 2, 4], 50) == 3
    assert domain.percentile(list(range(1, 11)), 90) == 9
    assert domain.percentile([7], 90) == 7


def test_z_test_against_known_values():
    # 200/1000 vs 250/1000: pooled p = .225, z = 2.6774, two-sided p = 0.007419
    z, p = domain.two_proportion_z_test(200, 1000, 250, 1000)
    assert z == pytest.approx(2.677398, abs=1e-5)
    assert p == pytest.approx(0.007419, abs=1e-5)
    # 10/100 vs 12/100: z = 0.45198, p = 2 * (1 - Phi(z)) = 0.6513
    z, p = domain.two_proportion_z_test(10, 100, 12, 100)
    assert z == pytest.approx(0.451985, abs=1e-5)
    assert p == pytest.approx(2 * (1 - NormalDist().cdf(0.451985)), abs=1e-5)
    assert p == pytest.approx(0.6513, abs=1e-4)
    assert domain.two_proportion_z_test(0, 0, 1, 10) == (None, None)
    assert domain.two_proportion_z_test(0, 10, 0, 10) == (0.0, 1.0)


def test_experiment_table_verdicts():
    table = domain.experiment_table("btn", "control", {"control": (1000, 200), "orange": (1000, 250),
                                                       "blue": (1000, 205), "tiny": (10, 9)})
    rows = {r["variant"]: r for r in table["variants"]}
    assert rows["control"]["verdict"] == "control" and rows["control"]["lift"] is None
    assert rows["orange"]["lift"] == 0.25
    assert "significantly better" in rows["orange"]["verdict"]
    assert "no significant difference" in rows["blue"]["verdict"]
    assert "not enough data" in rows["tiny"]["verdict"]
    worse = domain.experiment_table("b", "a", {"a": (1000, 250), "b": (1000, 200)})
    assert "significantly worse" in worse["variants"][1]["verdict"]


def test_cohort_table():
    rows = domain.cohort_table([["2026-01", "2026-02"], ["2026-01"], ["2026-02", "2026-03"]],
                               ["2026-01", "2026-02", "2026-03"])
    assert rows[0]["cohort"] == "2026-01" and rows[0]["size"] == 2
    assert [c["share"] for c in rows[0]["retention"]] == [0.5, 0.0]
    assert rows[1]["retention"] == [{"period": "2026-03", "offset": 1, "buyers": 1, "share": 1.0}]


def test_personal_data_is_stripped_and_ids_kept():
    data = {"order_id": "o1", "member_id": "m1", "shipping_address": {"region": "SH", "phone": "1"},
            "referrer": "https://x/?email=a@b", "lines": [{"product_id": "p", "name": "n"}]}
    assert domain.strip_personal(data) == {"order_id": "o1", "member_id": "m1",
                                           "lines": [{"product_id": "p"}]}
    assert domain.minimise(data)["shipping_address"] == {"region": "SH"}


GOOD = {"event_type": "page_viewed", "session_id": "s1", "occurred_at": "2026-11-26T11:00:00Z",
        "path": "/"}


def test_tracking_single_and_batch():
    assert len(schemas.events_of(GOOD, 10, "CNY")) == 1
    assert len(schemas.events_of({"events": [GOOD, GOOD]}, 10, "CNY")) == 2
    assert schemas.events_of([dict(GOOD, event_id="e1")], 10, "CNY")[0]["event_id"] == "e1"


@pytest.mark.parametrize("body,field", [
    ({**GOOD, "session_id": ""}, "session_id"),
    ({**GOOD, "occurred_at": "noon"}, "occurred_at"),
    ({**GOOD, "event_type": "order_paid"}, "event_type"),
    ({"events": [GOOD, {k: v for k, v in GOOD.items() if k != "session_id"}]}, "events.1.session_id"),
    ({"events": []}, "events"),
    ({"events": [GOOD] * 11}, "events"),
    ({"event_type": "checkout_started", "session_id": "s", "occurred_at": GOOD["occurred_at"],
      "currency": "USD"}, "currency"),
    ("text", "_schema"),
])
def test_tracking_bad_input_names_the_field(body, field):
    with pytest.raises(ValidationFailed) as err:
        schemas.events_of(body, 10, "CNY")
    assert field in err.value.field_errors

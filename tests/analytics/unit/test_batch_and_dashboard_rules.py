"""Pure rules of batch folding (merging updates) and of the dashboard (ranges,
traffic sources, cohort periods)."""
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from services.analytics import domain, store
from shared.errors import ValidationFailed

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 26, 4, 30, tzinfo=timezone.utc)  # 12:30 in Shanghai
T1, T2 = datetime(2026, 11, 21, 1, tzinfo=timezone.utc), datetime(2026, 11, 21, 2, tzinfo=timezone.utc)


def test_merged_updates_equal_applying_them_in_turn():
    merged: dict = {}
    store._merge(merged, {"$set": {"a": 1}, "$min": {"t": T2}, "$inc": {"n": 2},
                          "$addToSet": {"hours": T1}, "$setOnInsert": {"v": "first"}})
    store._merge(merged, {"$set": {"a": 2}, "$min": {"t": T1}, "$max": {"m": T1}, "$inc": {"n": 3},
                          "$addToSet": {"hours": {"$each": [T1, T2]}}, "$setOnInsert": {"v": "second"}})
    assert merged == {"$set": {"a": 2}, "$min": {"t": T1}, "$max": {"m": T1}, "$inc": {"n": 5},
                      "$addToSet": {"hours": {"$each": [T1, T2]}}, "$setOnInsert": {"v": "first"}}
    with pytest.raises(ValueError):
        store._merge(merged, {"$unset": {"a": ""}})


def test_a_pipeline_update_keeps_its_place_between_operator_updates():
    fold = store.Fold(db=None, session=None, tz=TZ)
    fold.update("products", "p1", {"$set": {"x": 1}})
    fold.set_latest("products", "p1", 3, {"title": "大衣"}, "listing")
    fold.update("products", "p1", {"$set": {"x": 2}})
    fold.update("sessions", "s1", {"$set": {"y": 1}})
    fold.update("sessions", "s1", {"$set": {"y": 2}})
    kinds = [(e[0], e[2]) for e in fold.ops["products"]]
    assert kinds == [("p1", True), ("p1", False), ("p1", True)]
    assert fold.ops["sessions"] == [["s1", {"$set": {"y": 2}}, True]]


@pytest.mark.parametrize("session, source", [
    ({"referrer": "https://www.douyin.com/video/1"}, "douyin"),
    ({"referrer": "https://m.baidu.com/s?wd=x", "campaign_id": "c1"}, "baidu"),
    ({"referrer": "https://blog.example/post"}, "other"),
    ({"campaign_id": "c1"}, "campaign"),
    ({"referral_code": "KOL1", "referrer": "https://www.douyin.com/"}, "referral"),
    ({}, "direct"),
    ({"referrer": "not a url"}, "direct"),
])
def test_traffic_source(session, source):
    assert domain.traffic_source(session) == source


def test_dashboard_ranges_presets_and_local_dates():
    assert domain.dashboard_range({}, NOW, TZ)[0] == "7d"
    preset, today = domain.dashboard_range({"preset": "today"}, NOW, TZ)
    assert preset == "today" and today.start == datetime(2026, 11, 25, 16, tzinfo=timezone.utc)
    assert today.end == datetime(2026, 11, 26, 5, tzinfo=timezone.utc)  # rounded up to the hour
    _, month = domain.dashboard_range({"preset": "30d"}, NOW, TZ)
    assert month.start == datetime(2026, 10, 27, 4, tzinfo=timezone.utc)
    preset, day = domain.dashboard_range({"from": "2026-11-21", "to": "2026-11-21"}, NOW, TZ)
    assert preset == "custom" and (day.start, day.end) == (
        datetime(2026, 11, 20, 16, tzinfo=timezone.utc), datetime(2026, 11, 21, 16, tzinfo=timezone.utc))
    previous = domain.previous_range(day)
    assert (previous.start, previous.end) == (datetime(2026, 11, 19, 16, tzinfo=timezone.utc), day.start)


@pytest.mark.parametrize("params, field", [
    ({"preset": "year"}, "preset"), ({"from": "2026-11-22", "to": "2026-11-21"}, "to"),
    ({"from": "21/11/2026", "to": "2026-11-21"}, "from"), ({"from": "2026-11-21"}, "to"),
    ({"start": "yesterday"}, "start"),
])
def test_dashboard_range_errors_name_the_field(params, field):
    with pytest.raises(ValidationFailed) as err:
        domain.dashboard_range(params, NOW, TZ)
    assert field in err.value.field_errors


def test_period_bounds_of_months_and_iso_weeks():
    assert domain.period_bounds("2026-12", "month", TZ) == (
        datetime(2026, 11, 30, 16, tzinfo=timezone.utc), datetime(2026, 12, 31, 16, tzinfo=timezone.utc))
    assert domain.period_bounds("2026-W47", "week", TZ) == (
        datetime(2026, 11, 15, 16, tzinfo=timezone.utc), datetime(2026, 11, 22, 16, tzinfo=timezone.utc))
    assert domain.period_bounds("2026", "month", TZ) is None


@pytest.mark.parametrize("zone", ["Asia/Shanghai", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York"])
def test_a_batch_reuses_an_hours_buckets_only_where_they_are_the_same(zone):
    # every 7 minutes over two days around a DST change: Kolkata's and Kathmandu's local
    # midnights fall inside a UTC hour, where the day bucket changes within the hour
    tz = ZoneInfo(zone)
    fold = store.Fold(None, None, tz)
    start = datetime(2026, 11, 1, 0, 0, tzinfo=timezone.utc)
    for step in range(0, 2 * 24 * 60, 7):
        at = start + timedelta(minutes=step)
        assert fold.buckets_of(at) == domain.buckets_of(at, tz), at


@pytest.mark.parametrize("params, field", [
    ({"from": "0001-01-01"}, "from"),          # year 1 in UTC+8 is before datetime's first instant
    ({"from": "2026-01-01", "to": "9999-12-31"}, "to"),  # the day after it is past the last
    ({"from": "1969-12-31", "to": "1970-01-02"}, "from"),
    ({"start": "0001-01-01T00:00:00Z"}, "start"),
    ({"end": "9999-12-31T23:59:59Z"}, "end"),
    ({"start": "1970-01-01T00:00:00Z", "end": "1970-01-01T05:00:00Z"}, None),  # allowed: the epoch
])
def test_a_range_at_the_calendar_edges_is_refused_by_field_not_with_an_overflow(params, field):
    if field is None:
        _, rng = domain.dashboard_range(params, NOW, TZ)
        assert domain.previous_range(rng).start < rng.start  # the comparison period exists
        return
    with pytest.raises(ValidationFailed) as err:
        domain.dashboard_range(params, NOW, TZ)
    assert field in err.value.field_errors

"""Bad input, unknown events, erasure and duplicate tracking events."""
from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
import requests

from services.analytics import store
from services.analytics.service import AnalyticsService
from shared.errors import ValidationFailed
from tests.analytics.conftest import TRACK_SETTINGS, envelope, post_track
from tests.analytics.integration import history
from tools.testing import store_of, wait_for

EVENT = {"event_type": "session_started", "event_id": "trk-dup-1", "session_id": "sx",
         "member_id": "mx", "occurred_at": "2026-11-21T02:00:00Z", "referrer": "https://a.example/?u=me"}


def test_track_rejects_bad_input_naming_the_field_and_ignores_duplicates(start_service, settings_for):
    settings = settings_for("analytics", extra={"track_max_batch": 3, **TRACK_SETTINGS})
    container = start_service(AnalyticsService, settings=settings)
    url = f"http://127.0.0.1:{settings.http_port}/track"
    db = store_of(container)
    bad = post_track(url, {"events": [EVENT, {**EVENT, "session_id": ""}]})
    assert bad.status_code == 400 and "events.1.session_id" in bad.json()["details"]["fields"]
    too_many = post_track(url, [EVENT] * 4)
    assert too_many.status_code == 400 and "events" in too_many.json()["details"]["fields"]
    junk = post_track(url, data=b"{not json")
    assert junk.status_code == 400
    assert db.raw.count_documents({}) == 0  # nothing written by bad input
    first = post_track(url, EVENT).json()
    again = post_track(url, EVENT).json()
    assert (first["accepted"], again["accepted"], again["duplicates"]) == (1, 0, 1)
    assert db.raw.count_documents({}) == 1 and db.sessions.count_documents({}) == 1
    bad_range = requests.get(f"http://127.0.0.1:{settings.http_port}/kpis",
                             params={"start": "2026-11-22T00:00:00Z", "end": "2026-11-21T00:00:00Z"},
                             timeout=15)
    assert bad_range.status_code == 400 and "end" in bad_range.json()["details"]["fields"]


def test_invalid_range_is_a_typed_error(start_service, rpc):
    start_service(AnalyticsService)
    with pytest.raises(ValidationFailed) as err:
        rpc.analytics.get_kpis("2026-11-22T00:00:00Z", "2026-11-21T00:00:00Z")
    assert "end" in err.value.field_errors
    with pytest.raises(ValidationFailed) as err:
        rpc.analytics.get_kpis("not a time", None)
    assert "start" in err.value.field_errors


def test_unknown_event_types_are_kept_and_counted(start_service, rpc):
    container = start_service(AnalyticsService)
    db = store_of(container)
    odd = envelope("order", "order_archived", {"order_id": "o9"}, history.at(1))
    assert store.ingest(db, None, odd, ZoneInfo("Asia/Shanghai")) == "unknown"
    assert store.ingest(db, None, odd, ZoneInfo("Asia/Shanghai")) == "duplicate"
    assert db.raw.find_one({"_id": odd["event_id"]})["status"] == "unknown"
    assert rpc.analytics.unfolded_events() == [
        {"status": "unknown", "source": "order", "event_type": "order_archived", "count": 1}]
    assert db.agg.count_documents({}) == 0


def test_member_erased_strips_personal_data_from_the_raw_store(start_service, settings_for, rpc, publish):
    settings = settings_for("analytics", extra=TRACK_SETTINGS)
    container = start_service(AnalyticsService, settings=settings)
    db = store_of(container)
    post_track(f"http://127.0.0.1:{settings.http_port}/track", EVENT)
    registered = envelope("member", "member_registered", {
        "member_id": "mx", "region": "Shanghai", "gender": "female", "birth_year": 1990,
        "interests": ["running"], "tier": "bronze"}, history.at(0))
    publish(registered)
    wait_for(lambda: db.raw.count_documents({}) == 2, timeout=30, what="events stored")
    publish(envelope("member", "member_erased", {"member_id": "mx"}, history.at(2)))
    wait_for(lambda: db.raw.count_documents({}) == 3, timeout=30, what="erasure stored")
    session = db.raw.find_one({"_id": "trk-dup-1"})
    assert "referrer" not in session["data"] and session["data"]["member_id"] == "mx"
    member = db.raw.find_one({"_id": registered["event_id"]})["data"]
    assert member == {"member_id": "mx", "tier": "bronze"}
    # a late event of the erased member is stripped on arrival
    post_track(f"http://127.0.0.1:{settings.http_port}/track",
               {**EVENT, "event_id": "trk-late", "event_type": "page_viewed", "path": "/me"})
    assert "path" not in db.raw.find_one({"_id": "trk-late"})["data"]
    # KPIs still count the member's activity by id
    kpis = rpc.analytics.get_kpis("2026-11-21T00:00:00Z", "2026-11-22T00:00:00Z")
    assert (kpis["new_members"], kpis["sessions"], kpis["active_members"]) == (1, 1, 1)

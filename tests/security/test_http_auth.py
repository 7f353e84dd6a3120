"""Tracking and HTTP authentication against the real analytics service:
signed `/track` bodies, a rate limit per key, `member_id` only when vouched
for, `occurred_at` clamped; a bearer token for every non-health endpoint when
listening beyond loopback."""
from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import requests

from services.analytics.service import AnalyticsService
from shared.clock import parse_iso, to_iso, utcnow
from shared.security.auth import member_token, track_headers
from tests.security.conftest import BROWSER_KEY, HTTP_TOKEN, SESSION_SECRET, TRACK_KEY, TRACK_SETTINGS
from tools.testing import store_of


def event(**fields) -> dict:
    return {"event_type": "session_started", "session_id": "ses_1", "occurred_at": to_iso(utcnow()),
            **fields}


def post(url: str, payload, key=BROWSER_KEY, headers=None):
    body = json.dumps(payload).encode()
    signed = track_headers(*key, body) if key else {}
    return requests.post(f"{url}/track", data=body, timeout=15,
                         headers={"Content-Type": "application/json", **signed, **(headers or {})})


def stored_at(db, event_id: str):
    value = db.raw.find_one({"_id": event_id})["occurred_at"]
    return parse_iso(value) if isinstance(value, str) else value


@pytest.fixture
def analytics(start_service, settings_for):
    def start(**extra):
        settings = settings_for("analytics", extra={**TRACK_SETTINGS, **extra})
        container = start_service(AnalyticsService, settings=settings)
        return f"http://127.0.0.1:{settings.http_port}", store_of(container)

    return start


def test_track_needs_a_known_key_and_a_valid_signature(analytics):
    url, db = analytics()
    assert post(url, event(), key=None).status_code == 401
    forged = post(url, event(), key=(BROWSER_KEY[0], "not-the-secret"))
    assert forged.status_code == 401 and forged.json()["details"]["reason"] == "bad_signature"
    unknown = post(url, event(), key=("someone", "whatever"))
    assert unknown.status_code == 401 and unknown.json()["details"]["reason"] == "unknown_key"
    assert db.raw.count_documents({}) == 0
    assert post(url, event()).status_code == 202
    assert db.raw.count_documents({}) == 1


def test_member_id_needs_a_member_token_or_a_server_side_key(analytics):
    url, db = analytics()
    spoofed = post(url, event(member_id="mem_victim"))
    assert spoofed.status_code == 400 and "member_id" in spoofed.json()["details"]["fields"]
    stolen = member_token(SESSION_SECRET, "mem_victim", "ses_other", time.time() + 600)
    wrong_session = post(url, event(member_token=stolen))
    assert wrong_session.status_code == 400 and "member_token" in wrong_session.json()["details"]["fields"]
    expired = member_token(SESSION_SECRET, "mem_1", "ses_1", time.time() - 1)
    assert post(url, event(member_token=expired)).status_code == 400
    assert db.raw.count_documents({}) == 0
    token = member_token(SESSION_SECRET, "mem_1", "ses_1", time.time() + 600)
    assert post(url, event(event_id="trk-token", member_token=token)).status_code == 202
    stored = db.raw.find_one({"_id": "trk-token"})["data"]
    assert stored["member_id"] == "mem_1" and "member_token" not in stored
    assert post(url, event(event_id="trk-server", member_id="mem_2"), key=TRACK_KEY).status_code == 202
    assert db.raw.find_one({"_id": "trk-server"})["data"]["member_id"] == "mem_2"


def test_occurred_at_is_clamped_to_now_and_the_window(analytics):
    url, db = analytics(track_max_age_seconds=3600)
    now = utcnow()
    post(url, event(event_id="trk-future", occurred_at=to_iso(now + timedelta(days=30))))
    post(url, event(event_id="trk-old", occurred_at=to_iso(now - timedelta(days=30))))
    post(url, event(event_id="trk-backfill", occurred_at=to_iso(now - timedelta(days=30))), key=TRACK_KEY)
    future, old, backfill = (stored_at(db, f"trk-{name}") for name in ("future", "old", "backfill"))
    assert now - timedelta(minutes=5) <= future <= utcnow()
    assert now - timedelta(hours=1, minutes=5) <= old <= utcnow() - timedelta(minutes=55)
    assert backfill <= now - timedelta(days=29)  # a server-side key may backfill


def test_a_key_over_its_rate_limit_gets_429(analytics):
    url, db = analytics(track_rate_per_minute=3)
    answers = [post(url, event(event_id=f"trk-rate-{i}")) for i in range(5)]
    codes = [a.status_code for a in answers]
    # A minute boundary may fall inside the run: at most one window restarts.
    assert codes.count(429) >= 1 and codes[:3].count(202) >= 2, codes
    limited = next(a for a in answers if a.status_code == 429)
    assert int(limited.headers["Retry-After"]) <= 60
    assert db.raw.count_documents({}) == codes.count(202)
    assert post(url, event(event_id="trk-other-key"), key=TRACK_KEY).status_code == 202


@pytest.fixture
def exposed(start_service, settings_for):
    """Analytics listening beyond loopback, as in a pod."""
    def start(token):
        settings = settings_for("analytics", http_host="0.0.0.0",
                                extra={**TRACK_SETTINGS, "http_token": token})
        start_service(AnalyticsService, settings=settings)
        return f"http://127.0.0.1:{settings.http_port}"

    return start


def test_beyond_loopback_every_operator_endpoint_needs_the_bearer_token(exposed):
    url = exposed(HTTP_TOKEN)
    for path in ("/kpis", "/dashboard", "/dashboard/data", "/dashboard.js"):
        missing = requests.get(f"{url}{path}", timeout=15)
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = requests.get(f"{url}{path}", headers={"Authorization": "Bearer nope"}, timeout=15)
        assert wrong.status_code == 401
        right = requests.get(f"{url}{path}", headers={"Authorization": f"Bearer {HTTP_TOKEN}"}, timeout=15)
        assert right.status_code == 200, (path, right.text)
    for path in ("/health/live", "/health/ready", "/metrics"):
        assert requests.get(f"{url}{path}", timeout=15).status_code == 200
    # /track has its own credential (the signed body), not the operators' token
    assert post(url, event()).status_code == 202
    assert 'shop_auth_refused_total{endpoint="/kpis",reason="missing",service="analytics"}' in \
        requests.get(f"{url}/metrics", timeout=15).text


def test_beyond_loopback_without_a_configured_token_everything_but_health_is_refused(exposed):
    url = exposed("")
    refused = requests.get(f"{url}/kpis", headers={"Authorization": "Bearer "}, timeout=15)
    assert refused.status_code == 401 and refused.json()["details"]["reason"] == "no_token_configured"
    assert requests.get(f"{url}/health/ready", timeout=15).status_code == 200

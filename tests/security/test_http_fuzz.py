"""Every HTTP endpoint with hostile input, against the real analytics service
listening beyond loopback: `/track` with hostile bodies (signed, so they reach
validation), the operators' endpoints with hostile query strings, health and
metrics with junk. A 4xx writes nothing, nothing answers 5xx, and the service
is ready afterwards."""
from __future__ import annotations

import json

import requests
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from services.analytics.schemas import TRACKING_TYPES
from services.analytics.service import AnalyticsService
from shared.security.auth import track_headers
from tests.security import strategies
from tests.security.conftest import BROWSER_KEY, EXAMPLES, HTTP_TOKEN, TRACK_KEY, TRACK_SETTINGS
from tools.testing import store_of

FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                suppress_health_check=list(HealthCheck))

hostile_event = st.fixed_dictionaries(
    {"event_type": st.one_of(st.sampled_from(TRACKING_TYPES), strategies.value),
     "session_id": st.one_of(st.just("ses_1"), strategies.value),
     "occurred_at": st.one_of(st.just("2026-11-21T02:00:00Z"), strategies.value)},
    optional={"member_id": strategies.value, "member_token": strategies.value,
              "event_id": strategies.value, "path": strategies.value, "extra": strategies.value})
bodies = st.one_of(hostile_event, st.lists(hostile_event, max_size=3),
                   st.fixed_dictionaries({"events": st.one_of(st.lists(hostile_event, max_size=3),
                                                              strategies.value)}),
                   strategies.value)
query_values = st.one_of(st.text(max_size=40), strategies.long_strings, strategies.non_bmp,
                         st.sampled_from(["2026-11-21T00:00:00Z", "NaN", "-1", "9" * 30, "{\"$gt\":\"\"}"]))


def test_hostile_http_input_gets_a_4xx_or_success_never_a_5xx(start_service, settings_for):
    settings = settings_for("analytics", http_host="0.0.0.0",
                            extra={**TRACK_SETTINGS, "http_token": HTTP_TOKEN})
    container = start_service(AnalyticsService, settings=settings)
    url, db = f"http://127.0.0.1:{settings.http_port}", store_of(container)
    session = requests.Session()

    @FUZZ
    @given(body=bodies, key=st.sampled_from([BROWSER_KEY, TRACK_KEY, None]))
    def track(body, key):
        raw = json.dumps(body).encode()
        before = db.raw.count_documents({})
        headers = {"Content-Type": "application/json", **(track_headers(*key, raw) if key else {})}
        answer = session.post(f"{url}/track", data=raw, headers=headers, timeout=30)
        assert answer.status_code in (202, 400, 401, 429), (answer.status_code, answer.text[:300])
        if answer.status_code != 202:
            assert db.raw.count_documents({}) == before, (body, answer.text[:300])
            assert answer.json()["code"] in ("validation_failed", "unauthorized", "rate_limited")

    @FUZZ
    @given(path=st.sampled_from(["/kpis", "/dashboard", "/dashboard/data", "/dashboard.js"]),
           params=st.dictionaries(st.sampled_from(["start", "end", "x"]), query_values, max_size=3),
           authorised=st.booleans())
    def operators(path, params, authorised):
        headers = {"Authorization": f"Bearer {HTTP_TOKEN}"} if authorised else {}
        answer = session.get(f"{url}{path}", params=params, headers=headers, timeout=30)
        # 414: the HTTP server's own limit on the request line, before any handler.
        expected = (200, 400, 414) if authorised else (401, 414)
        assert answer.status_code in expected, (path, params, answer.status_code, answer.text[:300])

    @FUZZ
    @given(path=st.sampled_from(["/health/live", "/health/ready", "/metrics"]),
           params=st.dictionaries(st.text(max_size=5), query_values, max_size=2))
    def open_endpoints(path, params):
        assert session.get(f"{url}{path}", params=params, timeout=30).status_code in (200, 414)

    track()
    operators()
    open_endpoints()
    raw_junk = session.post(f"{url}/track", data=b"\xff\xfe{", timeout=30,
                            headers=track_headers(*BROWSER_KEY, b"\xff\xfe{"))
    assert raw_junk.status_code == 400
    assert session.get(f"{url}/health/ready", timeout=30).status_code == 200

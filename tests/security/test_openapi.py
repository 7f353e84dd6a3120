"""docs/openapi.json is what the code serves (drift test), and a short
schemathesis run against the live analytics service finds no server error and
no response outside the document."""
from __future__ import annotations

import json

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from services.analytics.service import AnalyticsService
from shared.security.auth import track_headers
from shared.service import ShopService
from tests.security.conftest import ALL_SERVICES, BROWSER_KEY, HTTP_TOKEN, TRACK_SETTINGS
from tools import openapi


def test_the_openapi_document_is_up_to_date():
    on_disk = openapi.DOCUMENT.read_text(encoding="utf-8")
    assert on_disk == openapi.render(), "docs/openapi.json is stale: python -m tools.openapi --write"


def test_every_http_endpoint_is_in_the_document():
    paths = json.loads(openapi.DOCUMENT.read_text(encoding="utf-8"))["paths"]
    for cls in [ShopService, *ALL_SERVICES.values()]:
        for _, _, entrypoint in openapi.http_entrypoints(cls):
            assert entrypoint.method.lower() in paths[openapi._path(entrypoint.url)]


@pytest.fixture
def live(start_service, settings_for):
    # Beyond loopback, so the bearer token is checked as in a pod.
    settings = settings_for("analytics", http_host="0.0.0.0",
                            extra={**TRACK_SETTINGS, "http_token": HTTP_TOKEN})
    start_service(AnalyticsService, settings=settings)
    return f"http://127.0.0.1:{settings.http_port}"


SCHEMA = schemathesis.openapi.from_dict(json.loads(openapi.DOCUMENT.read_text(encoding="utf-8")))
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(live):
    session = requests.Session()
    for operation in OPERATIONS:
        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            if case.method == "POST":
                # Signed as a browser would: schemathesis's body, our signature over its bytes.
                body = json.dumps(case.body).encode()
                response = session.post(f"{live}{case.formatted_path}", data=body, timeout=15,
                                        headers={"Content-Type": "application/json",
                                                 **track_headers(*BROWSER_KEY, body)})
            else:
                response = case.call(base_url=live, session=session,
                                     headers={"Authorization": f"Bearer {HTTP_TOKEN}"})
            assert response.status_code < 500, (case.method, case.formatted_path, response.text[:300])
            # A schema-valid range can still break a business rule (start after end): a
            # documented 400, so "positive data accepted" is not required here.
            case.validate_response(response, excluded_checks=[checks.positive_data_acceptance])

        check()
    assert requests.get(f"{live}/health/ready", timeout=15).status_code == 200

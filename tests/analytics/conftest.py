"""Helpers for analytics tests: envelopes as producers build them, published on the real broker."""
from __future__ import annotations

import json
import secrets

import pytest
import requests
from nameko.amqp.publish import Publisher

from shared.clock import to_iso
from shared.ids import new_id
from shared.messaging.topology import event_exchange
from shared.security.auth import track_headers

# A server-side tracking key made up for this test run (never a fixed secret).
TRACK_KEY = ("test-backend", secrets.token_urlsafe(24))
TRACK_SETTINGS = {"track_keys": f"{TRACK_KEY[0]}:{TRACK_KEY[1]}", "track_server_keys": TRACK_KEY[0]}


def post_track(url: str, payload=None, *, data: bytes | None = None, timeout: float = 15):
    """POST /track signed with the test key, as an authenticated backend does."""
    body = data if data is not None else json.dumps(payload).encode()
    return requests.post(url, data=body, timeout=timeout,
                         headers={"Content-Type": "application/json", **track_headers(*TRACK_KEY, body)})


def envelope(source: str, event_type: str, data: dict, at) -> dict:
    return {"event_id": new_id("evt"), "event_type": event_type, "schema_version": 1,
            "source": source, "occurred_at": to_iso(at), "correlation_id": new_id("cor"),
            "causation_id": None, "data": data}


@pytest.fixture
def publish(amqp_uri):
    publisher = Publisher(amqp_uri, use_confirms=True, serializer="json")

    def send(env: dict) -> None:
        exchange = event_exchange(env["source"])
        publisher.publish(env, exchange=exchange, routing_key=env["event_type"], declare=[exchange])

    return send

"""Helpers for analytics tests: envelopes as producers build them, published on the real broker."""
from __future__ import annotations

import pytest
from nameko.amqp.publish import Publisher

from shared.clock import to_iso
from shared.ids import new_id
from shared.topology import event_exchange


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

"""Helpers for the member service's tests: the service with test settings,
and order events published exactly as the order service's relay would."""
from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from nameko.amqp.publish import Publisher

from services.member.service import MemberService
from shared.clock import to_iso
from shared.messaging.outbox import build_envelope
from shared.messaging.topology import event_exchange
from shared.observability.metrics import REGISTRY
from tools.testing import store_of

# Small numbers so tests read easily: 1 point per 1.00, silver from 1000.00 of
# paid spend in 30 days, gold from 5000.00, platinum from 20000.00.
TEST_SETTINGS = {
    "MEMBER_TIER_THRESHOLDS": "silver:100000,gold:500000,platinum:2000000",
    "MEMBER_TIER_MULTIPLIERS": "bronze:1,silver:1.5,gold:2,platinum:3",
    "MEMBER_TIER_DISCOUNTS": "bronze:0,silver:2,gold:5,platinum:10",
    "MEMBER_TIER_WINDOW_DAYS": "30",
    "MEMBER_POINTS_EXPIRY_DAYS": "90",
}


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def member_payload(**overrides) -> dict:
    payload = {"email": f"{uid('li')}@Example.com", "name": "Li Wei", "phone": "+8613800138000",
               "birth_year": 1994, "gender": "female", "region": "Shanghai",
               "interests": ["skincare", "running"], "consent": {"email": True}}
    payload.update(overrides)
    return payload


def _lines(total: int) -> list[dict]:
    return [{"product_id": "prd_1", "category": "apparel", "quantity": 1, "unit_price": total,
             "discount": 0, "line_total": total}]


def order_paid(order_id: str, member_id: str, total: int) -> dict:
    return {"order_id": order_id, "member_id": member_id, "lines": _lines(total), "total": total,
            "currency": "CNY", "shipping_address": {"region": "Shanghai", "name": "Li Wei"},
            "payment_ref": "pay_1"}


def order_completed(order_id: str, member_id: str, total: int) -> dict:
    return {"order_id": order_id, "member_id": member_id, "total": total, "currency": "CNY",
            "lines": _lines(total)}


def order_refunded(order_id: str, member_id: str, amount: int, refund_id: str | None = None) -> dict:
    return {"refund_id": refund_id or uid("rfd"), "order_id": order_id, "member_id": member_id,
            "return_id": None, "amount": amount, "currency": "CNY", "reason": "return",
            "lines": [{"product_id": "prd_1", "quantity": 1, "amount": amount}]}


def counter(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Events:
    """Publishes order events on the test virtual host, as the order service's relay would."""

    def __init__(self, amqp_uri: str):
        self.publisher = Publisher(amqp_uri, serializer="json", use_confirms=True, mandatory=True)

    def envelope(self, event_type: str, data: dict, occurred_at: datetime | None = None) -> dict:
        envelope = build_envelope("order", event_type, data)
        if occurred_at is not None:
            envelope["occurred_at"] = to_iso(occurred_at)
        return envelope

    def publish(self, envelope: dict) -> dict:
        exchange = event_exchange(envelope["source"])
        self.publisher.publish(envelope, exchange=exchange, routing_key=envelope["event_type"],
                               declare=[exchange])
        return envelope

    def send(self, event_type: str, data: dict, occurred_at: datetime | None = None) -> dict:
        return self.publish(self.envelope(event_type, data, occurred_at))


@pytest.fixture
def events(amqp_uri):
    return Events(amqp_uri)


@pytest.fixture
def member_service(start_service):
    """The member service with the test settings; returns (container, db)."""
    container = start_service(MemberService, extra=dict(TEST_SETTINGS))
    return container, store_of(container)


def outbox_events(db, event_type: str, member_id: str | None = None) -> list[dict]:
    query = {"event_type": event_type}
    if member_id:
        query["envelope.data.member_id"] = member_id
    return [row["envelope"] for row in db.outbox.find(query).sort("created_at", 1)]

"""Fixtures for fulfillment's tests: the service on the real broker and mongod,
and a publisher that injects events as order and member would publish them."""
from __future__ import annotations

import pytest
from nameko.amqp.publish import Publisher

from shared.clock import to_iso
from shared.messaging.outbox import build_envelope
from shared.messaging.topology import event_exchange


class EventInjector:
    """Publishes envelopes on the producer's exchange, with confirms and
    `mandatory`, so a publish that reaches no queue fails the test."""

    def __init__(self, amqp_uri: str):
        self.publisher = Publisher(amqp_uri, use_confirms=True, mandatory=True, serializer="json")

    def envelope(self, source: str, event_type: str, data: dict, occurred_at=None) -> dict:
        return build_envelope(source, event_type, data, occurred_at)

    def publish(self, envelope: dict) -> dict:
        self.publisher.publish(envelope, exchange=event_exchange(envelope["source"]),
                               routing_key=envelope["event_type"])
        return envelope

    def send(self, source: str, event_type: str, data: dict, occurred_at=None) -> dict:
        return self.publish(self.envelope(source, event_type, data, occurred_at))


@pytest.fixture
def events(amqp_uri):
    return EventInjector(amqp_uri)


def order_paid_data(order_id: str, member_id: str = "mem_1", region: str = "Shanghai",
                    lines=None) -> dict:
    lines = lines or [{"product_id": "prd_a", "quantity": 2}, {"product_id": "prd_b", "quantity": 1}]
    return {
        "order_id": order_id, "member_id": member_id, "total": 1000, "currency": "CNY",
        "payment_ref": "pay_1",
        "lines": [{"product_id": line["product_id"], "category": "apparel",
                   "quantity": line["quantity"], "unit_price": 100, "discount": 0,
                   "line_total": 100 * line["quantity"]} for line in lines],
        "shipping_address": {"name": "Li Wei", "line1": "88 Century Avenue", "city": "Shanghai",
                             "region": region, "postal_code": "200120", "phone": "+8613800138000",
                             "country": "CN"},
    }


def iso(moment) -> str:
    return to_iso(moment)

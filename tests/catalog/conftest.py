"""Helpers for the catalog's tests: products, and events published as their
real producers would (order, fulfillment, member) on the test's broker."""
from __future__ import annotations

import dataclasses
import uuid

import pytest
from nameko.amqp.publish import Publisher

from shared.config import Settings
from shared.messaging.outbox import build_envelope
from shared.messaging.topology import event_exchange
from tools import devstack
from tools.testing import store_of


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def product_payload(**overrides) -> dict:
    payload = {"sku": uid("SKU"), "title": "Cotton crew T-shirt", "description": "Soft cotton tee.",
               "category": "apparel", "price": 12900, "currency": "CNY", "stock": 10}
    payload.update(overrides)
    return payload


def order_placed(order_id: str, lines: list[tuple[str, int]], member_id: str = "mem_1") -> dict:
    priced = [{"product_id": pid, "category": "apparel", "quantity": qty, "unit_price": 100,
               "discount": 0, "line_total": 100 * qty} for pid, qty in lines]
    total = sum(line["line_total"] for line in priced)
    return {"order_id": order_id, "member_id": member_id, "lines": priced, "subtotal": total,
            "discount": 0, "shipping_fee": 0, "total": total, "currency": "CNY", "coupon_code": None,
            "promotion_ids": [], "attribution": {"session_id": None, "campaign_id": None,
                                                 "referral_code": None}}


def order_paid(order_id: str, lines: list[tuple[str, int]]) -> dict:
    placed = order_placed(order_id, lines)
    return {"order_id": order_id, "member_id": "mem_1", "lines": placed["lines"], "total": placed["total"],
            "currency": "CNY", "shipping_address": {"region": "Shanghai"}, "payment_ref": "pay_1"}


def order_cancelled(order_id: str, was_paid: bool = False) -> dict:
    return {"order_id": order_id, "member_id": "mem_1", "reason": "member", "was_paid": was_paid}


def dispatched(order_id: str, lines: list[tuple[str, int]]) -> dict:
    return {"shipment_id": uid("shp"), "order_id": order_id, "carrier": "SF", "tracking_number": "SF1",
            "lines": [{"product_id": pid, "quantity": qty} for pid, qty in lines]}


def returned(order_id: str, lines: list[tuple[str, int, str]]) -> dict:
    return {"return_id": uid("ret"), "order_id": order_id,
            "lines": [{"product_id": pid, "quantity": qty, "condition": cond} for pid, qty, cond in lines]}


class Events:
    """Publishes envelopes on the test virtual host, as their producer would."""

    def __init__(self, amqp_uri: str):
        self.publisher = Publisher(amqp_uri, serializer="json")

    def envelope(self, source: str, event_type: str, data: dict) -> dict:
        return build_envelope(source, event_type, data)

    def send(self, envelope: dict) -> dict:
        self.publisher.publish(envelope, exchange=event_exchange(envelope["source"]),
                               routing_key=envelope["event_type"])
        return envelope

    def publish(self, source: str, event_type: str, data: dict) -> dict:
        return self.send(self.envelope(source, event_type, data))


@pytest.fixture
def events(amqp_uri):
    return Events(amqp_uri)


@pytest.fixture(scope="module")
def catalog(mongo_uri, amqp_uri):
    """One catalog container per test module (starting and stopping one takes
    seconds); tests keep apart by their own unique products and orders."""
    from nameko.containers import ServiceContainer

    from services.catalog.service import CatalogService

    settings = dataclasses.replace(
        Settings.from_env("catalog"), mongo_uri=mongo_uri, amqp_uri=amqp_uri,
        database=f"test_catalog_{uuid.uuid4().hex[:8]}", http_port=devstack.free_port(),
        outbox_sweep_interval=0.5, outbox_sweep_grace=1.0, transient_backoff=0.1)
    container = ServiceContainer(CatalogService, settings.nameko_config())
    container.start()
    yield container
    try:
        container.stop()
    except Exception:
        container.kill()


@pytest.fixture(scope="module")
def db(catalog):
    return store_of(catalog)


def emitted(db, event_type: str, **match) -> list[dict]:
    """The data of every event the catalog emitted of `event_type` (from its outbox)."""
    rows = db.outbox.find({"event_type": event_type})
    found = [row["envelope"]["data"] for row in rows]
    return [d for d in found if all(d.get(k) == v for k, v in match.items())]


def inbox_count(db, event_id: str) -> int:
    return db.inbox.count_documents({"event_id": event_id})

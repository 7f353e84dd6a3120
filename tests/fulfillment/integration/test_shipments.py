"""Shipments over the real broker and mongod: created once per paid order,
dispatched, tracked, delivered; cancelled with the order in either arrival order."""
from __future__ import annotations

from datetime import timedelta

import eventlet
import pytest

from services.fulfillment.service import FulfillmentService
from shared.clock import utcnow
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.ids import new_id
from shared.observability import metrics
from tests.fulfillment.conftest import order_paid_data
from tools.client import connect
from tools.testing import store_of, wait_for

WAIT = 30


def outbox_types(db, order_id=None) -> list[str]:
    query = {} if order_id is None else {"envelope.data.order_id": order_id}
    return sorted(row["event_type"] for row in db.outbox.find(query))


def shipment_of(db, order_id):
    return wait_for(lambda: db.shipments.find_one({"order_id": order_id}), timeout=WAIT,
                    what=f"shipment of {order_id}")


def duplicates(event_type: str) -> float:
    return metrics.EVENTS_DUPLICATE.labels("fulfillment", event_type)._value.get()


@pytest.fixture
def service(start_service):
    return start_service(FulfillmentService)


def test_order_paid_creates_one_shipment_in_the_shipping_region(service, rpc, events):
    db = store_of(service)
    rpc.fulfillment.create_warehouse({"code": "BJ1", "name": "Beijing", "region": "Beijing",
                                      "address": "1 Chang'an", "priority": 1})
    sh = rpc.fulfillment.create_warehouse({"code": "SH1", "name": "Shanghai", "region": "Shanghai",
                                           "address": "2 Bund", "priority": 9})
    order_id = new_id("ord")
    dup_before = duplicates("order_paid")
    envelope = events.send("order", "order_paid", order_paid_data(order_id))
    shipment = shipment_of(db, order_id)
    assert shipment["warehouse_id"] == sh["id"] and shipment["allocation_rule"] == "region"

    events.publish(envelope)  # the same message redelivered
    second = events.send("order", "order_paid", order_paid_data(order_id))  # a second order_paid
    wait_for(lambda: duplicates("order_paid") > dup_before, timeout=WAIT, what="duplicate skipped")
    wait_for(lambda: db.inbox.find_one({"event_id": second["event_id"]}), timeout=WAIT,
             what="second order_paid handled")
    assert db.shipments.count_documents({"order_id": order_id}) == 1
    assert outbox_types(db, order_id) == ["shipment_created"]

    found = rpc.fulfillment.get_shipment_for_order(order_id)
    assert found["id"] == shipment["_id"] and found["status"] == "created"
    assert found["lines"] == [{"product_id": "prd_a", "quantity": 2},
                              {"product_id": "prd_b", "quantity": 1}]
    with pytest.raises(NotFound):
        rpc.fulfillment.get_shipment_for_order("ord_unknown")


def test_racing_replicas_create_exactly_one_shipment(start_service, settings_for, events):
    settings = settings_for("fulfillment")
    first = start_service(FulfillmentService, settings=settings)
    start_service(FulfillmentService, settings=settings)
    db = store_of(first)
    order_id = new_id("ord")
    handled = metrics.EVENTS_CONSUMED.labels("fulfillment", "order_paid", "ok")
    before = handled._value.get()
    for _ in range(6):  # six distinct order_paid for one order, spread over both replicas
        events.send("order", "order_paid", order_paid_data(order_id))
    wait_for(lambda: handled._value.get() >= before + 6, timeout=WAIT,
             what="every order_paid handled")
    assert db.shipments.count_documents({"order_id": order_id}) == 1
    assert outbox_types(db, order_id) == ["shipment_created"]


def test_no_active_warehouse_uses_the_fallback(service, events):
    db = store_of(service)
    order_id = new_id("ord")
    events.send("order", "order_paid", order_paid_data(order_id))
    shipment = shipment_of(db, order_id)
    assert (shipment["warehouse_id"], shipment["allocation_rule"]) == ("wh_unassigned", "fallback")


def test_dispatch_track_deliver(service, rpc, events):
    db = store_of(service)
    order_id = new_id("ord")
    events.send("order", "order_paid", order_paid_data(order_id))
    shipment_id = shipment_of(db, order_id)["_id"]

    with pytest.raises(Conflict):
        rpc.fulfillment.confirm_delivery(shipment_id)  # before dispatch
    with pytest.raises(Conflict):
        rpc.fulfillment.add_tracking_event(shipment_id, {"status": "in_transit"})
    with pytest.raises(NotFound):
        rpc.fulfillment.dispatch_shipment("shp_unknown", "SF", "1")
    with pytest.raises(ValidationFailed) as err:
        rpc.fulfillment.dispatch_shipment(shipment_id, "", "1")
    assert "carrier" in err.value.field_errors
    assert outbox_types(db, order_id) == ["shipment_created"]

    dispatched = rpc.fulfillment.dispatch_shipment(shipment_id, "SF Express", "SF1")
    assert dispatched["status"] == "dispatched" and dispatched["carrier"] == "SF Express"
    with pytest.raises(Conflict):
        rpc.fulfillment.dispatch_shipment(shipment_id, "SF Express", "SF2")
    row = db.outbox.find_one({"event_type": "shipment_dispatched",
                              "envelope.data.order_id": order_id})
    assert row["envelope"]["data"]["lines"] == [{"product_id": "prd_a", "quantity": 2},
                                                {"product_id": "prd_b", "quantity": 1}]
    assert row["envelope"]["data"]["tracking_number"] == "SF1"

    later = (utcnow() + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    earlier = (utcnow() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rpc.fulfillment.add_tracking_event(shipment_id, {"status": "out_for_delivery",
                                                     "occurred_at": later})
    rpc.fulfillment.add_tracking_event(shipment_id, {"status": "in_transit", "location": "Hub",
                                                     "occurred_at": earlier})
    again = rpc.fulfillment.add_tracking_event(shipment_id, {"status": "in_transit",
                                                             "location": "Hub",
                                                             "occurred_at": earlier})
    assert [e["status"] for e in again["timeline"]] == ["in_transit", "out_for_delivery"]
    with pytest.raises(ValidationFailed):
        rpc.fulfillment.add_tracking_event(shipment_id, {"status": ""})

    delivered = rpc.fulfillment.confirm_delivery(shipment_id)
    assert delivered["status"] == "delivered"
    with pytest.raises(Conflict):
        rpc.fulfillment.confirm_delivery(shipment_id)
    assert outbox_types(db, order_id) == ["shipment_created", "shipment_delivered",
                                          "shipment_dispatched"]
    listed = rpc.fulfillment.list_shipments(status="delivered")
    assert shipment_id in [s["id"] for s in listed["items"]] and listed["total"] >= 1


def test_default_carrier_and_tracking_number(service, rpc, events):
    db = store_of(service)
    order_id = new_id("ord")
    events.send("order", "order_paid", order_paid_data(order_id))
    shipment_id = shipment_of(db, order_id)["_id"]
    dispatched = rpc.fulfillment.dispatch_shipment(shipment_id)
    assert dispatched["carrier"] == "in_house" and dispatched["tracking_number"]


def test_concurrent_dispatch_succeeds_once(service, amqp_uri, events):
    db = store_of(service)
    order_id = new_id("ord")
    events.send("order", "order_paid", order_paid_data(order_id))
    shipment_id = shipment_of(db, order_id)["_id"]

    def attempt(n):
        with connect(amqp_uri, timeout=20) as client:
            try:
                client.fulfillment.dispatch_shipment(shipment_id, "SF", f"T{n}")
                return "ok"
            except Conflict:
                return "conflict"

    results = list(eventlet.GreenPool(6).imap(attempt, range(6)))
    assert results.count("ok") == 1 and results.count("conflict") == 5
    assert outbox_types(db, order_id) == ["shipment_created", "shipment_dispatched"]


def test_cancelled_after_paid_cancels_the_shipment(service, rpc, events):
    db = store_of(service)
    order_id = new_id("ord")
    events.send("order", "order_paid", order_paid_data(order_id))
    shipment_id = shipment_of(db, order_id)["_id"]
    cancel = events.send("order", "order_cancelled", {"order_id": order_id, "member_id": "mem_1",
                                                      "reason": "member", "was_paid": True})
    wait_for(lambda: db.shipments.find_one({"_id": shipment_id, "status": "cancelled"}),
             timeout=WAIT, what="shipment cancelled")
    events.publish(cancel)  # redelivered
    events.send("order", "order_cancelled", {"order_id": order_id, "member_id": "mem_1",
                                             "reason": "member", "was_paid": True})
    wait_for(lambda: db.inbox.count_documents({"event_type": "order_cancelled"}) == 2,
             timeout=WAIT, what="second cancellation handled")
    assert outbox_types(db, order_id) == ["shipment_cancelled", "shipment_created"]
    with pytest.raises(Conflict):
        rpc.fulfillment.dispatch_shipment(shipment_id, "SF", "1")


def test_cancelled_before_paid_leaves_a_tombstone(service, rpc, events):
    db = store_of(service)
    order_id = new_id("ord")
    events.send("order", "order_cancelled", {"order_id": order_id, "member_id": "mem_1",
                                             "reason": "expired", "was_paid": True})
    wait_for(lambda: db.cancelled_orders.find_one({"_id": order_id}), timeout=WAIT,
             what="tombstone")
    events.send("order", "order_paid", order_paid_data(order_id))
    shipment = shipment_of(db, order_id)
    assert shipment["status"] == "cancelled" and shipment["warehouse_id"] is None
    assert outbox_types(db, order_id) == ["shipment_cancelled"]  # never shipment_created
    assert rpc.fulfillment.get_shipment_for_order(order_id)["status"] == "cancelled"


def test_cancellation_after_dispatch_changes_nothing(service, rpc, events):
    db = store_of(service)
    order_id = new_id("ord")
    events.send("order", "order_paid", order_paid_data(order_id))
    shipment_id = shipment_of(db, order_id)["_id"]
    rpc.fulfillment.dispatch_shipment(shipment_id, "SF", "1")
    sent = events.send("order", "order_cancelled", {"order_id": order_id, "member_id": "mem_1",
                                                    "reason": "member", "was_paid": True})
    wait_for(lambda: db.inbox.find_one({"event_id": sent["event_id"]}), timeout=WAIT,
             what="cancellation handled")
    assert db.shipments.find_one({"_id": shipment_id})["status"] == "dispatched"
    assert "shipment_cancelled" not in outbox_types(db, order_id)


def test_warehouses_crud_and_errors(service, rpc):
    created = rpc.fulfillment.create_warehouse({"code": "GZ1", "name": "Guangzhou",
                                                "region": "Guangdong", "address": "3 Road"})
    assert created["priority"] == 100 and created["active"] is True and created["id"]
    with pytest.raises(Conflict):
        rpc.fulfillment.create_warehouse({"code": "GZ1", "name": "Again", "region": "Guangdong",
                                          "address": "3 Road"})
    with pytest.raises(ValidationFailed) as err:
        rpc.fulfillment.create_warehouse({"code": "GZ2", "name": "", "region": "Guangdong",
                                          "address": "3 Road"})
    assert "name" in err.value.field_errors
    assert store_of(service).warehouses.count_documents({}) == 1
    updated = rpc.fulfillment.update_warehouse(created["id"], {"active": False})
    assert updated["active"] is False
    with pytest.raises(NotFound):
        rpc.fulfillment.update_warehouse("wh_nope", {"active": False})
    page = rpc.fulfillment.list_warehouses(active=False)
    assert [w["code"] for w in page["items"]] == ["GZ1"] and page["total"] == 1

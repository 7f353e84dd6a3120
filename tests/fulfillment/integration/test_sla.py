"""The dispatch SLA with a controlled clock: late shipments flagged once
(`shipment_late`), counted, listed."""
from __future__ import annotations

from datetime import timedelta

import pytest

from services.fulfillment import metrics as fmetrics
from services.fulfillment.service import FulfillmentService
from shared.clock import to_iso, utcnow
from shared.errors import ValidationFailed
from shared.ids import new_id
from tests.fulfillment.conftest import order_paid_data
from tools.testing import store_of, wait_for

WAIT = 30


def late_count() -> float:
    return fmetrics.SHIPMENTS_LATE.labels("timer")._value.get()


@pytest.fixture
def service(start_service):
    return start_service(FulfillmentService, extra={"dispatch_sla_hours": 24})


def test_late_shipments_are_flagged_once(service, rpc, events):
    db = store_of(service)
    now = utcnow()
    overdue, fresh = new_id("ord"), new_id("ord")
    events.send("order", "order_paid", order_paid_data(overdue), occurred_at=now - timedelta(hours=30))
    events.send("order", "order_paid", order_paid_data(fresh), occurred_at=now)
    wait_for(lambda: db.shipments.count_documents({"order_id": {"$in": [overdue, fresh]}}) == 2,
             timeout=WAIT, what="both shipments")
    due = db.shipments.find_one({"order_id": overdue})["dispatch_due_at"]
    assert abs((due - (now - timedelta(hours=6))).total_seconds()) < 2  # payment time + 24 h

    before = late_count()
    assert rpc.fulfillment.run_sla_check(to_iso(now))["late_shipments_flagged"] == 1
    assert rpc.fulfillment.run_sla_check(to_iso(now))["late_shipments_flagged"] == 0
    assert late_count() == before + 1
    late = rpc.fulfillment.list_late_shipments()
    assert [s["order_id"] for s in late["items"]] == [overdue] and late["total"] == 1
    assert db.outbox.count_documents({"event_type": "shipment_late"}) == 1

    # A day later the fresh one is late too; the first is not flagged again.
    tomorrow = to_iso(now + timedelta(hours=25))
    assert rpc.fulfillment.run_sla_check(tomorrow)["late_shipments_flagged"] == 1
    assert db.outbox.count_documents({"event_type": "shipment_late"}) == 2
    assert {r["envelope"]["data"]["order_id"] for r in db.outbox.find(
        {"event_type": "shipment_late"})} == {overdue, fresh}

    # Dispatched late shipments leave the default list but stay in the full one.
    rpc.fulfillment.dispatch_shipment(db.shipments.find_one({"order_id": overdue})["_id"], "SF", "1")
    assert [s["order_id"] for s in rpc.fulfillment.list_late_shipments()["items"]] == [fresh]
    everything = rpc.fulfillment.list_late_shipments(include_dispatched=True, page_size=1)
    assert everything["total"] == 2 and len(everything["items"]) == 1
    assert db.outbox.count_documents({"event_type": "shipment_late"}) == 2  # not again at dispatch

    with pytest.raises(ValidationFailed):
        rpc.fulfillment.run_sla_check("not a time")


def test_dispatching_after_the_deadline_flags_it_at_dispatch(service, rpc, events):
    db = store_of(service)
    order_id = new_id("ord")
    events.send("order", "order_paid", order_paid_data(order_id),
                occurred_at=utcnow() - timedelta(hours=25))
    shipment = wait_for(lambda: db.shipments.find_one({"order_id": order_id}), timeout=WAIT,
                        what="shipment")
    dispatched = rpc.fulfillment.dispatch_shipment(shipment["_id"], "SF", "1")
    assert dispatched["late"] is True
    assert db.outbox.count_documents({"event_type": "shipment_late"}) == 1
    assert rpc.fulfillment.run_sla_check()["late_shipments_flagged"] == 0


def test_the_timer_entrypoint_flags_late_shipments(service, events):
    """The `@timer` entrypoint runs the same check on the real clock (its
    interval is minutes, so the test fires the entrypoint itself)."""
    db = store_of(service)
    order_id = new_id("ord")
    events.send("order", "order_paid", order_paid_data(order_id),
                occurred_at=utcnow() - timedelta(hours=25))
    wait_for(lambda: db.shipments.find_one({"order_id": order_id}), timeout=WAIT, what="shipment")
    timer = next(e for e in service.entrypoints if e.method_name == "sla_timer")
    service.spawn_worker(timer, (), {})
    wait_for(lambda: db.shipments.find_one({"order_id": order_id, "late": True}), timeout=WAIT,
             what="flagged by the timer")
    assert db.outbox.count_documents({"event_type": "shipment_late"}) == 1

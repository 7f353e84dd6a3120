"""The stock lifecycle on real events: reserve (all or nothing) → release /
commit → restock, with redeliveries, out-of-order delivery and a race."""
from __future__ import annotations

from datetime import timedelta

import eventlet
import pytest

from shared.clock import to_iso, utcnow
from shared.errors import NotFound, ValidationFailed
from tests.catalog.conftest import (
    dispatched,
    emitted,
    inbox_count,
    order_cancelled,
    order_paid,
    order_placed,
    product_payload,
    returned,
    uid,
)
from tools.testing import wait_for


def published(rpc, **overrides) -> str:
    product = rpc.catalog.create_product(product_payload(**overrides))
    rpc.catalog.publish_product(product["id"])
    return product["id"]


def reservation(db, order_id):
    return wait_for(lambda: db.reservations.find_one({"_id": order_id}), timeout=30,
                    what=f"reservation of {order_id}")


def handled(db, envelope):
    wait_for(lambda: inbox_count(db, envelope["event_id"]) == 1, timeout=30,
             what=f"{envelope['event_type']} handled")


def stock(rpc, product_id):
    s = rpc.catalog.get_stock(product_id)
    return s["on_hand"], s["reserved"], s["available"]


def test_adjust_stock_ledger_and_bad_input(catalog, db, rpc):
    pid = published(rpc, stock=5)
    assert rpc.catalog.adjust_stock(pid, 10, "purchase_order_received")["on_hand"] == 15
    assert rpc.catalog.adjust_stock(pid, -3, "damaged_in_warehouse")["available"] == 12
    ledger_before = db.stock_ledger.count_documents({"product_id": pid})
    outbox_before = db.outbox.count_documents({})
    with pytest.raises(ValidationFailed) as err:
        rpc.catalog.adjust_stock(pid, -13, "too much")
    assert "delta" in err.value.field_errors
    for delta, reason, field in [(1.5, "x", "delta"), ("3", "x", "delta"), (1, "", "reason")]:
        with pytest.raises(ValidationFailed) as err:
            rpc.catalog.adjust_stock(pid, delta, reason)
        assert field in err.value.field_errors
    with pytest.raises(NotFound):
        rpc.catalog.adjust_stock("prd_missing", 1, "x")
    assert stock(rpc, pid) == (12, 0, 12)
    assert db.stock_ledger.count_documents({"product_id": pid}) == ledger_before
    assert db.outbox.count_documents({}) == outbox_before
    ledger = rpc.catalog.get_stock_ledger(pid)
    assert [(e["reason"], e["delta_on_hand"], e["on_hand"]) for e in ledger] == [
        ("damaged_in_warehouse", -3, 12), ("purchase_order_received", 10, 15), ("initial_stock", 5, 5)]
    assert [d["delta"] for d in emitted(db, "stock_adjusted", product_id=pid)] == [10, -3]


def test_order_reserves_every_line_once_even_when_redelivered(catalog, db, rpc, events):
    a, b = published(rpc, stock=10), published(rpc, stock=4)
    order_id = uid("ord")
    envelope = events.publish("order", "order_placed", order_placed(order_id, [(a, 2), (b, 1), (a, 1)]))
    assert reservation(db, order_id)["state"] == "reserved"
    events.send(envelope)  # the broker redelivers the same event
    wait_for(lambda: db.inbox.count_documents({"event_id": envelope["event_id"]}) == 1)
    again = events.publish("order", "order_placed", order_placed(order_id, [(a, 2), (b, 1)]))
    handled(db, again)  # a re-published placement (new event id) is ignored too
    eventlet.sleep(0.3)
    assert stock(rpc, a) == (10, 3, 7)
    assert stock(rpc, b) == (4, 1, 3)
    reserved = emitted(db, "stock_reserved", order_id=order_id)
    assert len(reserved) == 1
    assert sorted((line["product_id"], line["quantity"]) for line in reserved[0]["lines"]) == sorted(
        [(a, 3), (b, 1)])


def test_a_short_line_reserves_nothing(catalog, db, rpc, events):
    a, b = published(rpc, stock=10), published(rpc, stock=1)
    hidden = rpc.catalog.create_product(product_payload(stock=50))["id"]  # draft: not for sale
    order_id = uid("ord")
    events.publish("order", "order_placed", order_placed(order_id, [(a, 2), (b, 3), (hidden, 1)]))
    assert reservation(db, order_id)["state"] == "failed"
    assert stock(rpc, a) == (10, 0, 10)
    assert stock(rpc, b) == (1, 0, 1)
    failed = emitted(db, "stock_reservation_failed", order_id=order_id)
    assert len(failed) == 1
    assert sorted(failed[0]["short_lines"], key=lambda s: s["requested"]) == [
        {"product_id": hidden, "requested": 1, "available": 0},
        {"product_id": b, "requested": 3, "available": 1}]
    assert db.stock_ledger.count_documents({"ref": order_id}) == 0


def test_cancellation_before_placement_leaves_nothing_reserved(catalog, db, rpc, events):
    pid = published(rpc, stock=5)
    order_id = uid("ord")
    cancel = events.publish("order", "order_cancelled", order_cancelled(order_id))
    handled(db, cancel)
    assert reservation(db, order_id)["state"] == "cancelled"
    placed = events.publish("order", "order_placed", order_placed(order_id, [(pid, 2)]))
    handled(db, placed)
    assert stock(rpc, pid) == (5, 0, 5)
    assert reservation(db, order_id)["state"] == "cancelled"
    assert emitted(db, "stock_reserved", order_id=order_id) == []


def test_cancellation_releases_once(catalog, db, rpc, events):
    pid = published(rpc, stock=5)
    order_id = uid("ord")
    events.publish("order", "order_placed", order_placed(order_id, [(pid, 2)]))
    reservation(db, order_id)
    assert stock(rpc, pid) == (5, 2, 3)
    first = events.publish("order", "order_cancelled", order_cancelled(order_id))
    events.send(first)
    second = events.publish("order", "order_cancelled", order_cancelled(order_id))
    handled(db, first)
    handled(db, second)
    assert stock(rpc, pid) == (5, 0, 5)
    assert reservation(db, order_id)["state"] == "released"
    released = emitted(db, "stock_released", order_id=order_id)
    assert released == [{"order_id": order_id, "lines": [{"product_id": pid, "quantity": 2}],
                         "reason": "order_cancelled"}]


def test_paid_dispatched_returned(catalog, db, rpc, events):
    pid = published(rpc, stock=10)
    order_id = uid("ord")
    events.publish("order", "order_placed", order_placed(order_id, [(pid, 3)]))
    reservation(db, order_id)
    paid = events.publish("order", "order_paid", order_paid(order_id, [(pid, 3)]))
    handled(db, paid)
    events.send(paid)  # redelivered: counted once
    ship = events.publish("fulfillment", "shipment_dispatched", dispatched(order_id, [(pid, 3)]))
    handled(db, ship)
    events.send(ship)
    assert stock(rpc, pid) == (7, 0, 7)
    assert reservation(db, order_id)["state"] == "committed"
    assert rpc.catalog.get_product(pid)["sales"] == 3
    late_cancel = events.publish("order", "order_cancelled", order_cancelled(order_id, was_paid=True))
    handled(db, late_cancel)  # after dispatch: nothing to give back
    back = events.publish("fulfillment", "return_received",
                          returned(order_id, [(pid, 1, "resellable"), (pid, 1, "damaged")]))
    handled(db, back)
    events.send(back)
    again = events.publish("fulfillment", "return_received", {**back["data"]})  # same return, new id
    handled(db, again)
    assert stock(rpc, pid) == (8, 0, 8)
    assert rpc.catalog.get_product(pid)["sales"] == 1
    assert db.inbox.count_documents({"event_id": paid["event_id"]}) == 1


def test_low_stock_fires_once_per_crossing(catalog, db, rpc, events):
    pid = published(rpc, stock=8, low_stock_threshold=5)
    for quantity in (2, 2, 1):  # 8 → 6 → 4 (crosses) → 3
        order_id = uid("ord")
        events.publish("order", "order_placed", order_placed(order_id, [(pid, quantity)]))
        reservation(db, order_id)
    assert len(emitted(db, "stock_ran_low", product_id=pid)) == 1
    assert rpc.catalog.get_stock(pid)["low_stock"] is True
    rpc.catalog.adjust_stock(pid, 1, "recount")  # 4: still low, no event
    rpc.catalog.adjust_stock(pid, 10, "restock")  # 14: back above → replenished, re-armed
    # the whole stock level, at the product's version: create 1, publish 2, three
    # reservations and the flip to low 3-6, two adjustments 7-8, the flip back 9
    assert emitted(db, "stock_replenished", product_id=pid) == [
        {"product_id": pid, "available": 14, "threshold": 5, "on_hand": 19, "low": False,
         "version": 9}]
    rpc.catalog.adjust_stock(pid, -10, "shrinkage")  # 4: crosses again
    assert [e["available"] for e in emitted(db, "stock_ran_low", product_id=pid)] == [4, 4]


def test_reservation_ttl_releases_unpaid_orders_only(catalog, db, rpc, events):
    pid = published(rpc, stock=10)
    unpaid, paid = uid("ord"), uid("ord")
    events.publish("order", "order_placed", order_placed(unpaid, [(pid, 2)]))
    events.publish("order", "order_placed", order_placed(paid, [(pid, 3)]))
    reservation(db, unpaid)
    reservation(db, paid)
    handled(db, events.publish("order", "order_paid", order_paid(paid, [(pid, 3)])))
    assert rpc.catalog.run_reservation_expiry(now=to_iso(utcnow()))["released"] == 0
    later = to_iso(utcnow() + timedelta(days=2))
    assert rpc.catalog.run_reservation_expiry(now=later)["released"] >= 1  # earlier tests' too
    assert rpc.catalog.run_reservation_expiry(now=later)["released"] == 0
    assert reservation(db, unpaid)["state"] == "expired"
    assert reservation(db, paid)["state"] == "reserved"
    assert stock(rpc, pid) == (10, 3, 7)
    assert emitted(db, "stock_released", order_id=unpaid)[0]["reason"] == "reservation_expired"
    from services.catalog import metrics

    assert metrics.RESERVATIONS_EXPIRED._value.get() >= 1
    late = events.publish("order", "order_cancelled", order_cancelled(unpaid))
    handled(db, late)
    assert stock(rpc, pid) == (10, 3, 7)  # nothing released twice
    with pytest.raises(ValidationFailed):
        rpc.catalog.run_reservation_expiry(now="yesterday")


def test_race_for_the_last_units_never_oversells(catalog, db, rpc, events):
    """Many orders at once for few units: exactly the available number succeed."""
    pid = published(rpc, stock=3, low_stock_threshold=0)
    order_ids = [uid("ord") for _ in range(16)]
    envelopes = [events.envelope("order", "order_placed", order_placed(o, [(pid, 1)])) for o in order_ids]
    for envelope in envelopes:
        events.send(envelope)
    wait_for(lambda: db.reservations.count_documents({"_id": {"$in": order_ids}}) == len(order_ids),
             timeout=60, what="every order decided")
    states = [db.reservations.find_one({"_id": o})["state"] for o in order_ids]
    assert states.count("reserved") == 3
    assert states.count("failed") == 13
    assert stock(rpc, pid) == (3, 3, 0)
    assert len(emitted(db, "stock_reserved")) >= 3
    assert sum(1 for o in order_ids if emitted(db, "stock_reserved", order_id=o)) == 3
    assert sum(1 for o in order_ids if emitted(db, "stock_reservation_failed", order_id=o)) == 13
    assert len(emitted(db, "stock_ran_low", product_id=pid)) == 1

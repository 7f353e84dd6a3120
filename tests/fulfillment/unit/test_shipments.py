from datetime import datetime, timedelta, timezone

import pytest

from services.fulfillment.domain import shipments as shp
from services.fulfillment.domain.allocation import Allocation
from shared.errors import Conflict
from shared.events.base import spec_for

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
SLA = timedelta(hours=48)
ORDER = {"order_id": "ord_1", "member_id": "mem_1", "shipping_address": {
    "region": "Shanghai", "name": "Li Wei", "line1": "88 Century Ave", "phone": "+86138"},
    "lines": [{"product_id": "p1", "quantity": 2, "category": "c"},
              {"product_id": "p2", "quantity": 1, "category": "c"},
              {"product_id": "p1", "quantity": 1, "category": "c"}]}
ALLOC = Allocation("wh_1", "SH1", "region")


def valid(events):
    for event_type, data in events:
        spec_for("fulfillment", event_type).validate(data)
    return events


def created():
    doc, events = shp.new_shipment("shp_1", ORDER, ALLOC, paid_at=T0, now=T0, dispatch_sla=SLA)
    return doc, events


def test_new_shipment_merges_lines_and_sets_deadline():
    doc, events = created()
    assert doc["lines"] == [{"product_id": "p1", "quantity": 3}, {"product_id": "p2", "quantity": 1}]
    assert doc["dispatch_due_at"] == T0 + SLA
    assert doc["status"] == shp.CREATED and doc["late"] is False
    (event_type, data), = valid(events)
    assert event_type == "shipment_created"
    assert data["warehouse_id"] == "wh_1" and data["order_id"] == "ord_1"
    assert "shipping_address" not in data  # personal data stays here


def test_new_shipment_for_an_erased_member_keeps_no_address():
    doc, _ = shp.new_shipment("shp_1", ORDER, ALLOC, paid_at=T0, now=T0, dispatch_sla=SLA,
                              member_erased=True)
    assert doc["shipping_address"]["region"] == "Shanghai"
    assert doc["shipping_address"]["name"] is None and doc["shipping_address"]["line1"] is None


def test_dispatch_then_deliver():
    doc, _ = created()
    changes, events = shp.dispatch(doc, "SF", "SF123", T0 + timedelta(hours=1))
    assert changes["status"] == shp.DISPATCHED
    (event_type, data), = valid(events)
    assert event_type == "shipment_dispatched" and data["lines"] == doc["lines"]
    assert data["late"] is False
    doc.update(changes)
    changes, events = shp.deliver(doc, T0 + timedelta(days=2))
    assert changes["status"] == shp.DELIVERED
    assert [e for e, _ in valid(events)] == ["shipment_delivered"]


def test_dispatch_twice_is_a_conflict():
    doc, _ = created()
    doc.update(shp.dispatch(doc, "SF", "1", T0)[0])
    with pytest.raises(Conflict):
        shp.dispatch(doc, "SF", "1", T0)


def test_deliver_before_dispatch_is_a_conflict():
    doc, _ = created()
    with pytest.raises(Conflict, match="only a dispatched"):
        shp.deliver(doc, T0)


def test_deliver_twice_is_a_conflict():
    doc, _ = created()
    doc.update(shp.dispatch(doc, "SF", "1", T0)[0])
    doc.update(shp.deliver(doc, T0)[0])
    with pytest.raises(Conflict):
        shp.deliver(doc, T0)


def test_cancel_only_undispatched():
    doc, _ = created()
    changes, events = shp.cancel(doc, "member", T0)
    assert changes["status"] == shp.CANCELLED
    assert valid(events)[0] == ("shipment_cancelled", {"shipment_id": "shp_1", "order_id": "ord_1",
                                                        "reason": "member"})
    doc.update(changes)
    assert shp.cancel(doc, "member", T0) is None  # already cancelled: no second event
    with pytest.raises(Conflict):
        shp.dispatch(doc, "SF", "1", T0)
    other, _ = created()
    other.update(shp.dispatch(other, "SF", "1", T0)[0])
    assert shp.cancel(other, "member", T0) is None


def test_cancelled_before_paid_publishes_only_cancelled():
    doc, events = shp.cancelled_before_paid("shp_1", ORDER, reason="expired", paid_at=T0, now=T0)
    assert doc["status"] == shp.CANCELLED and doc["warehouse_id"] is None
    assert [e for e, _ in valid(events)] == ["shipment_cancelled"]


def test_late_flag_only_after_deadline_and_only_once():
    doc, _ = created()
    assert shp.flag_late(doc, T0 + SLA) is None  # exactly at the deadline: on time
    changes, events = shp.flag_late(doc, T0 + SLA + timedelta(seconds=1))
    assert changes["late"] is True
    (event_type, data), = valid(events)
    assert event_type == "shipment_late" and data["dispatch_due_at"].startswith("2026-11-28T12:00")
    doc.update(changes)
    assert shp.flag_late(doc, T0 + SLA * 3) is None


def test_dispatched_shipments_are_never_flagged_by_the_timer():
    doc, _ = created()
    doc.update(shp.dispatch(doc, "SF", "1", T0)[0])
    assert shp.flag_late(doc, T0 + SLA * 2) is None


def test_late_dispatch_flags_once_at_dispatch():
    doc, _ = created()
    changes, events = shp.dispatch(doc, "SF", "1", T0 + SLA + timedelta(hours=1))
    assert changes["late"] is True
    assert [e for e, _ in valid(events)] == ["shipment_late", "shipment_dispatched"]
    assert events[1][1]["late"] is True


def test_late_dispatch_of_an_already_flagged_shipment_does_not_flag_again():
    doc, _ = created()
    doc.update(shp.flag_late(doc, T0 + SLA * 2)[0])
    changes, events = shp.dispatch(doc, "SF", "1", T0 + SLA * 3)
    assert "late" not in changes
    assert [e for e, _ in events] == ["shipment_dispatched"]
    assert events[0][1]["late"] is True


def test_tracking_needs_dispatch_and_dedupes_by_key():
    doc, _ = created()
    with pytest.raises(Conflict, match="tracking starts at dispatch"):
        shp.tracking_entry(doc, {"status": "in_transit"}, T0)
    doc.update(shp.dispatch(doc, "SF", "1", T0)[0])
    a = shp.tracking_entry(doc, {"status": "in_transit", "location": "Hub", "occurred_at": T0}, T0)
    b = shp.tracking_entry(doc, {"status": "in_transit", "location": "Hub", "occurred_at": T0},
                           T0 + timedelta(minutes=5))
    assert a["key"] == b["key"]
    c = shp.tracking_entry(doc, {"status": "out_for_delivery"}, T0 + timedelta(hours=1))
    assert c["occurred_at"] == T0 + timedelta(hours=1)
    assert shp.sorted_timeline([c, a]) == [a, c]


def test_redact_address_keeps_only_region():
    out = shp.redact_address({"region": "Shanghai", "name": "Li", "phone": "1", "custom": "x"})
    assert out == {"region": "Shanghai", "name": None, "phone": None, "custom": None,
                   "redacted": True}

"""Customer-service tickets: the lifecycle, SLA timing with a controlled clock,
events without free text, redaction on `member_erased`."""
from __future__ import annotations

from datetime import timedelta

import pytest

from services.fulfillment.service import FulfillmentService
from shared.clock import to_iso, utcnow
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.ids import new_id
from tests.fulfillment.conftest import order_paid_data
from tools.testing import store_of, wait_for

WAIT = 30


@pytest.fixture
def service(start_service):
    return start_service(FulfillmentService, extra={"ticket_response_sla_hours": 2,
                                                    "ticket_resolution_sla_hours": 24})


def test_ticket_lifecycle_within_sla(service, rpc):
    db = store_of(service)
    with pytest.raises(ValidationFailed) as err:
        rpc.fulfillment.open_ticket("mem_1", "ord_1", "late_delivery", "   ")
    assert "message" in err.value.field_errors
    assert db.tickets.count_documents({}) == 0 and db.outbox.count_documents({}) == 0

    ticket = rpc.fulfillment.open_ticket("mem_1", "ord_1", "late_delivery", "Where is my parcel?")
    assert ticket["status"] == "open" and ticket["messages"][0]["text"] == "Where is my parcel?"
    replied = rpc.fulfillment.reply_ticket(ticket["id"], "It ships today.")
    assert replied["status"] == "answered" and replied["first_response_breached"] is False
    assert replied["first_response_seconds"] < 60
    resolved = rpc.fulfillment.resolve_ticket(ticket["id"], "Shipped with SF1.")
    assert resolved["status"] == "resolved" and resolved["resolution_breached"] is False
    with pytest.raises(Conflict):
        rpc.fulfillment.resolve_ticket(ticket["id"], "again")
    with pytest.raises(Conflict):
        rpc.fulfillment.reply_ticket(ticket["id"], "after")
    with pytest.raises(NotFound):
        rpc.fulfillment.reply_ticket("tkt_unknown", "hello")
    with pytest.raises(ValidationFailed):
        rpc.fulfillment.resolve_ticket(ticket["id"], "")

    rows = list(db.outbox.find({}, sort=[("created_at", 1)]))
    assert [r["event_type"] for r in rows] == ["ticket_opened", "ticket_replied", "ticket_resolved"]
    for row in rows:
        text = str(row["envelope"]["data"])
        assert "parcel" not in text and "ships today" not in text and "SF1" not in text
        assert row["envelope"]["data"]["category"] == "late_delivery"


def test_ticket_sla_breaches_with_a_controlled_clock(service, rpc):
    slow = rpc.fulfillment.open_ticket("mem_2", None, "damaged_item", "Broken")
    quick = rpc.fulfillment.open_ticket("mem_2", None, "account", "Password")
    rpc.fulfillment.reply_ticket(quick["id"], "Reset link sent")

    result = rpc.fulfillment.run_sla_check(to_iso(utcnow() + timedelta(hours=3)))
    assert result["ticket_first_response_breaches"] == 1
    assert result["ticket_resolution_breaches"] == 0
    again = rpc.fulfillment.run_sla_check(to_iso(utcnow() + timedelta(hours=3)))
    assert again["ticket_first_response_breaches"] == 0

    breached = rpc.fulfillment.list_tickets(breached=True)
    assert [t["id"] for t in breached["items"]] == [slow["id"]]
    # A reply after the timer flagged the breach stays breached.
    assert rpc.fulfillment.reply_ticket(slow["id"], "Sorry")["first_response_breached"] is True

    result = rpc.fulfillment.run_sla_check(to_iso(utcnow() + timedelta(hours=25)))
    assert result["ticket_resolution_breaches"] == 2
    assert rpc.fulfillment.resolve_ticket(quick["id"], "done")["resolution_breached"] is True

    answered = rpc.fulfillment.list_tickets(status="answered")
    assert [t["id"] for t in answered["items"]] == [slow["id"]]
    page = rpc.fulfillment.list_tickets(member_id="mem_2", page=2, page_size=1)
    assert page["total"] == 2 and len(page["items"]) == 1 and page["page"] == 2


def test_member_erased_redacts_tickets_and_addresses(service, rpc, events):
    db = store_of(service)
    member_id, other = new_id("mem"), new_id("mem")
    order_id = new_id("ord")
    events.send("order", "order_paid", order_paid_data(order_id, member_id=member_id))
    events.send("order", "order_paid", order_paid_data(new_id("ord"), member_id=other))
    wait_for(lambda: db.shipments.count_documents({}) == 2, timeout=WAIT, what="shipments")
    ticket = rpc.fulfillment.open_ticket(member_id, order_id, "wrong_item", "I am Li Wei")
    rpc.fulfillment.reply_ticket(ticket["id"], "Hello Li Wei")
    rpc.fulfillment.resolve_ticket(ticket["id"], "Sent to 88 Century Avenue")
    kept = rpc.fulfillment.open_ticket(other, None, "other", "Keep me")

    erased = events.send("member", "member_erased", {"member_id": member_id})
    wait_for(lambda: db.inbox.find_one({"event_id": erased["event_id"]}), timeout=WAIT,
             what="erasure handled")
    doc = db.tickets.find_one({"_id": ticket["id"]})
    assert {m["text"] for m in doc["messages"]} == {"[redacted]"}
    assert doc["resolution"] == "[redacted]"
    address = db.shipments.find_one({"member_id": member_id})["shipping_address"]
    assert address["region"] == "Shanghai" and address["name"] is None and address["phone"] is None
    assert "Li Wei" not in str(rpc.fulfillment.get_shipment_for_order(order_id))
    assert db.shipments.find_one({"member_id": other})["shipping_address"]["name"] == "Li Wei"
    assert rpc.fulfillment.get_ticket(kept["id"])["messages"][0]["text"] == "Keep me"

    # After the erasure: a late order_paid stores no address, no new ticket opens.
    late_order = new_id("ord")
    events.send("order", "order_paid", order_paid_data(late_order, member_id=member_id))
    shipment = wait_for(lambda: db.shipments.find_one({"order_id": late_order}), timeout=WAIT,
                        what="late shipment")
    assert shipment["shipping_address"]["line1"] is None
    with pytest.raises(Conflict):
        rpc.fulfillment.open_ticket(member_id, None, "other", "again")

"""Returns received: NotFound before `return_requested` (nothing written), then
once, with conditions, publishing `return_received`."""
from __future__ import annotations

import pytest

from services.fulfillment.service import FulfillmentService
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.ids import new_id
from tools.testing import store_of, wait_for

WAIT = 30


def return_requested(return_id, order_id):
    return {"return_id": return_id, "order_id": order_id, "member_id": "mem_1",
            "reason": "wrong_size", "lines": [{"product_id": "prd_a", "quantity": 2},
                                              {"product_id": "prd_b", "quantity": 1}]}


@pytest.fixture
def service(start_service):
    return start_service(FulfillmentService)


def test_return_flow(service, rpc, events):
    db = store_of(service)
    return_id, order_id = new_id("ret"), new_id("ord")

    with pytest.raises(NotFound):
        rpc.fulfillment.receive_return(return_id)
    assert db.returns.count_documents({}) == 0 and db.outbox.count_documents({}) == 0

    sent = events.send("order", "return_requested", return_requested(return_id, order_id))
    wait_for(lambda: db.returns.find_one({"_id": return_id}), timeout=WAIT, what="return expected")
    events.publish(sent)  # redelivery: still one expected return
    assert rpc.fulfillment.get_return(return_id)["status"] == "expected"

    with pytest.raises(ValidationFailed) as err:
        rpc.fulfillment.receive_return(return_id, [{"product_id": "prd_a", "quantity": 3}])
    assert "lines" in err.value.field_errors
    with pytest.raises(ValidationFailed) as err:
        rpc.fulfillment.receive_return(return_id, [{"product_id": "prd_a", "quantity": 1,
                                                    "condition": "soggy"}])
    assert "lines" in err.value.field_errors
    assert db.returns.find_one({"_id": return_id})["status"] == "expected"
    assert db.outbox.count_documents({"event_type": "return_received"}) == 0

    received = rpc.fulfillment.receive_return(return_id, [
        {"product_id": "prd_a", "quantity": 1, "condition": "resellable"},
        {"product_id": "prd_a", "quantity": 1, "condition": "damaged"}])
    assert received["status"] == "received" and received["id"] == return_id
    rows = list(db.outbox.find({"event_type": "return_received"}))
    assert len(rows) == 1
    data = rows[0]["envelope"]["data"]
    assert data["order_id"] == order_id
    assert sorted((x["product_id"], x["condition"], x["quantity"]) for x in data["lines"]) == [
        ("prd_a", "damaged", 1), ("prd_a", "resellable", 1)]

    with pytest.raises(Conflict):
        rpc.fulfillment.receive_return(return_id)
    assert db.outbox.count_documents({"event_type": "return_received"}) == 1


def test_receive_defaults_to_every_expected_line_resellable(service, rpc, events):
    db = store_of(service)
    return_id = new_id("ret")
    events.send("order", "return_requested", return_requested(return_id, new_id("ord")))
    wait_for(lambda: db.returns.find_one({"_id": return_id}), timeout=WAIT, what="return expected")
    received = rpc.fulfillment.receive_return(return_id)
    assert received["received_lines"] == [
        {"product_id": "prd_a", "quantity": 2, "condition": "resellable"},
        {"product_id": "prd_b", "quantity": 1, "condition": "resellable"}]

from datetime import datetime, timezone

import pytest

from services.fulfillment.domain import returns as ret
from shared.errors import Conflict, ValidationFailed
from shared.events.base import spec_for

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
REQUEST = {"return_id": "ret_1", "order_id": "ord_1", "member_id": "mem_1", "reason": "wrong_size",
           "lines": [{"product_id": "p1", "quantity": 2}, {"product_id": "p2", "quantity": 1}]}


def expected():
    return ret.expected_return(REQUEST, T0)


def test_default_receives_everything_resellable():
    changes, events = ret.receive(expected(), None, T0)
    assert changes["status"] == ret.RECEIVED
    (event_type, data), = events
    spec_for("fulfillment", event_type).validate(data)
    assert data["lines"] == [{"product_id": "p1", "quantity": 2, "condition": "resellable"},
                             {"product_id": "p2", "quantity": 1, "condition": "resellable"}]


def test_a_product_may_arrive_split_by_condition():
    _, events = ret.receive(expected(), [
        {"product_id": "p1", "quantity": 1, "condition": "resellable"},
        {"product_id": "p1", "quantity": 1, "condition": "damaged"}], T0)
    assert sorted((x["condition"], x["quantity"]) for x in events[0][1]["lines"]) == [
        ("damaged", 1), ("resellable", 1)]


def test_same_product_and_condition_lines_merge():
    lines = ret.check_received_lines(expected()["expected_lines"], [
        {"product_id": "p1", "quantity": 1, "condition": "damaged"},
        {"product_id": "p1", "quantity": 1, "condition": "damaged"}])
    assert lines == [{"product_id": "p1", "quantity": 2, "condition": "damaged"}]


def test_more_than_expected_is_refused():
    with pytest.raises(ValidationFailed) as err:
        ret.receive(expected(), [{"product_id": "p1", "quantity": 2, "condition": "resellable"},
                                 {"product_id": "p1", "quantity": 1, "condition": "damaged"}], T0)
    assert "lines" in err.value.field_errors


def test_unexpected_product_is_refused_naming_the_line():
    with pytest.raises(ValidationFailed) as err:
        ret.receive(expected(), [{"product_id": "p9", "quantity": 1, "condition": "resellable"}], T0)
    assert "lines.0.product_id" in err.value.field_errors


def test_receiving_twice_is_a_conflict():
    record = expected()
    record.update(ret.receive(record, None, T0)[0])
    with pytest.raises(Conflict):
        ret.receive(record, None, T0)


def test_expected_return_merges_duplicate_product_lines():
    doc = ret.expected_return({**REQUEST, "lines": [{"product_id": "p1", "quantity": 1},
                                                    {"product_id": "p1", "quantity": 2}]}, T0)
    assert doc["expected_lines"] == [{"product_id": "p1", "quantity": 3}]
    assert doc["_id"] == "ret_1" and doc["status"] == ret.EXPECTED

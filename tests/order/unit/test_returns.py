"""Returns and refunds: window, quantities, proportional refunds, statuses."""
from datetime import timedelta

import pytest

from services.order.domain import returns, states
from services.order.domain.order import OrderRuleBroken
from tests.order.unit.helpers import NOW, make_order

WINDOW = timedelta(days=7)


def delivered(**kwargs):
    order = make_order("paid", **kwargs)
    states.advance(order, states.DELIVERED, NOW, "shipment_delivered")
    return order


def refund_and_complete(order, return_id, lines):
    refund = returns.receive_return(order, return_id, lines, f"rfd_{return_id}", NOW)
    refund["id"] = f"rfd_{return_id}"
    return refund, returns.complete_refund(order, refund, NOW)


def test_request_return_within_window():
    order = delivered()
    events = returns.request_return(order, "ret_1", [{"product_id": "prd_a", "quantity": 1}], "size",
                                    NOW + timedelta(days=3), WINDOW)
    assert events[0][0] == "return_requested"
    assert events[0][1]["lines"] == [{"product_id": "prd_a", "quantity": 1}]
    assert order["lines"][0]["returned_quantity"] == 1


def test_return_window_closed():
    with pytest.raises(OrderRuleBroken, match="window"):
        returns.request_return(delivered(), "ret_1", [{"product_id": "prd_a", "quantity": 1}], "x",
                               NOW + timedelta(days=8), WINDOW)


@pytest.mark.parametrize("status", ["pending", "paid", "shipped", "cancelled", "refunded"])
def test_return_needs_delivered_order(status):
    with pytest.raises(OrderRuleBroken):
        returns.request_return(make_order(status), "r", [{"product_id": "prd_a", "quantity": 1}], "x",
                               NOW, WINDOW)


def test_cannot_return_more_than_bought_minus_returned():
    order = delivered()
    returns.request_return(order, "ret_1", [{"product_id": "prd_a", "quantity": 1}], "x", NOW, WINDOW)
    with pytest.raises(OrderRuleBroken) as caught:
        returns.request_return(order, "ret_2", [{"product_id": "prd_a", "quantity": 2}], "x", NOW, WINDOW)
    assert caught.value.field == "lines.0.quantity"
    with pytest.raises(OrderRuleBroken) as caught:
        returns.request_return(order, "ret_3", [{"product_id": "prd_zz", "quantity": 1}], "x", NOW, WINDOW)
    assert caught.value.field == "lines.0"
    assert order["lines"][0]["returned_quantity"] == 1 and len(order["returns"]) == 1


def test_partial_then_full_return_refunds_paid_amounts_exactly():
    order = delivered()  # prd_a: 2 x 129.00 - 20.00 = 238.00; prd_b: 89.00
    returns.request_return(order, "ret_1", [{"product_id": "prd_a", "quantity": 1}], "x", NOW, WINDOW)
    refund, events = refund_and_complete(order, "ret_1", [{"product_id": "prd_a", "quantity": 1,
                                                           "condition": "resellable"}])
    assert refund["amount"] == 11900
    assert order["status"] == "partially_refunded"
    assert events[0][1]["lines"] == [{"product_id": "prd_a", "quantity": 1, "amount": 11900}]
    returns.request_return(order, "ret_2", [{"product_id": "prd_a", "quantity": 1},
                                            {"product_id": "prd_b", "quantity": 1}], "x", NOW, WINDOW)
    refund, _ = refund_and_complete(order, "ret_2", [
        {"product_id": "prd_a", "quantity": 1, "condition": "damaged"},
        {"product_id": "prd_b", "quantity": 1, "condition": "resellable"}])
    assert refund["amount"] == 11900 + 8900
    assert order["status"] == "refunded"
    assert order["refunded_amount"] == order["total"] - order["shipping_fee"]


def test_odd_discount_split_refunds_add_up():
    lines = [{"product_id": "prd_a", "category": "x", "unit_price": 1000, "quantity": 3}]
    order = make_order("paid", lines=lines, discount=100)  # paid 2900 for 3 units
    states.advance(order, states.DELIVERED, NOW, "d")
    amounts = []
    for n in range(3):
        returns.request_return(order, f"r{n}", [{"product_id": "prd_a", "quantity": 1}], "x", NOW, WINDOW)
        refund, _ = refund_and_complete(order, f"r{n}", [{"product_id": "prd_a", "quantity": 1,
                                                          "condition": "resellable"}])
        amounts.append(refund["amount"])
    assert amounts == [966, 967, 967] and sum(amounts) == 2900


def test_receive_twice_or_unknown_return_refunds_nothing():
    order = delivered()
    returns.request_return(order, "ret_1", [{"product_id": "prd_a", "quantity": 1}], "x", NOW, WINDOW)
    got = [{"product_id": "prd_a", "quantity": 1, "condition": "resellable"}]
    assert returns.receive_return(order, "ret_1", got, "rfd", NOW) is not None
    assert returns.receive_return(order, "ret_1", got, "rfd", NOW) is None
    assert returns.receive_return(order, "ret_x", got, "rfd", NOW) is None


def test_received_more_than_asked_is_capped():
    order = delivered()
    returns.request_return(order, "ret_1", [{"product_id": "prd_a", "quantity": 1}], "x", NOW, WINDOW)
    refund = returns.receive_return(order, "ret_1", [{"product_id": "prd_a", "quantity": 2,
                                                      "condition": "resellable"},
                                                     {"product_id": "prd_b", "quantity": 1,
                                                      "condition": "resellable"}], "rfd", NOW)
    assert refund["lines"] == [{"product_id": "prd_a", "quantity": 1, "amount": 11900}]


def test_refund_of_cancelled_order_keeps_status_cancelled():
    order = make_order("cancelled")
    refund = {"id": "rfd_c", "reason": "cancelled", "return_id": None, "amount": order["total"],
              "lines": [{"product_id": "prd_a", "quantity": 2, "amount": 23800}]}
    events = returns.complete_refund(order, refund, NOW)
    assert order["status"] == "cancelled" and events[0][1]["reason"] == "cancelled"
    assert events[0][1]["return_id"] is None

"""Order saga moves: placement, rejection, shipment progress, cancellation, expiry."""
from datetime import timedelta

import pytest

from services.order.domain import order as domain
from tests.order.unit.helpers import NOW, make_order


def test_new_order_is_pending_with_priced_lines():
    order = make_order()
    assert order["status"] == "pending"
    assert order["subtotal"] == 34700 and order["discount"] == 2000 and order["total"] == 32700
    event = domain.placed_event(order)
    assert event["attribution"] == {"session_id": None, "campaign_id": None, "referral_code": None}
    assert set(event["lines"][0]) == {"product_id", "category", "quantity", "unit_price", "discount",
                                      "line_total"}


def test_reject_only_from_pending():
    order = make_order()
    short = [{"product_id": "prd_a", "requested": 2, "available": 1}]
    events = domain.reject(order, short, NOW)
    assert events[0][0] == "order_rejected" and order["status"] == "rejected"
    assert domain.reject(order, short, NOW) == []
    confirmed = make_order("confirmed")
    assert domain.reject(confirmed, short, NOW) == [] and confirmed["status"] == "confirmed"


def test_stock_reserved_after_cancel_is_ignored():
    order = make_order("cancelled")
    assert domain.confirm(order, NOW) == []
    assert order["status"] == "cancelled"


def test_shipment_happy_path_and_duplicates():
    order = make_order("paid")
    assert domain.shipment_progress(order, "shipment_created", NOW, {"shipment_id": "shp_1"}) == []
    assert order["status"] == "fulfilling" and order["shipment"]["shipment_id"] == "shp_1"
    events = domain.shipment_progress(order, "shipment_dispatched", NOW)
    assert events == [("order_shipped", {"order_id": "ord_1"})]
    assert domain.shipment_progress(order, "shipment_dispatched", NOW) == []
    events = domain.shipment_progress(order, "shipment_delivered", NOW)
    assert [e[0] for e in events] == ["order_delivered", "order_completed"]
    assert events[1][1]["total"] == 32700 and order["status"] == "completed"
    assert domain.shipment_progress(order, "shipment_created", NOW) == []


def test_delivered_before_dispatched_jumps_forward_once():
    order = make_order("paid")
    events = domain.shipment_progress(order, "shipment_delivered", NOW)
    assert [e[0] for e in events] == ["order_shipped", "order_delivered", "order_completed"]
    assert domain.shipment_progress(order, "shipment_dispatched", NOW) == []


@pytest.mark.parametrize("status", ["pending", "confirmed", "cancelled", "rejected"])
def test_shipment_news_before_payment_or_after_cancel_is_ignored(status):
    order = make_order(status)
    assert domain.shipment_progress(order, "shipment_dispatched", NOW) == []
    assert order["status"] == status


def test_cancel_pending_is_not_paid():
    order = make_order()
    events, refund = domain.cancel(order, "member", NOW)
    assert events == [("order_cancelled", {"order_id": "ord_1", "member_id": "mem_1",
                                           "reason": "member", "was_paid": False})]
    assert refund is None


def test_cancel_paid_refunds_whole_total():
    order = make_order("paid")
    events, refund = domain.cancel(order, "member", NOW)
    assert events[0][1]["was_paid"] is True
    assert refund["amount"] == order["total"] and refund["reason"] == "cancelled"
    assert sum(line["amount"] for line in refund["lines"]) == order["total"] - order["shipping_fee"]


@pytest.mark.parametrize("status", ["shipped", "delivered", "completed", "rejected", "refunded"])
def test_cancel_after_dispatch_is_refused(status):
    with pytest.raises(domain.OrderRuleBroken):
        domain.cancel(make_order(status), "member", NOW)


def test_cancel_twice_is_refused():
    order = make_order()
    domain.cancel(order, "member", NOW)
    with pytest.raises(domain.OrderRuleBroken):
        domain.cancel(order, "member", NOW)


def test_cancel_refused_while_payment_attempt_holds_lease():
    order = make_order("confirmed")
    order["payment"]["lease_until"] = NOW + timedelta(seconds=5)
    with pytest.raises(domain.OrderRuleBroken):
        domain.cancel(order, "member", NOW)


def test_expiry():
    ttl = timedelta(minutes=30)
    order = make_order()
    assert not domain.expired(order, NOW + timedelta(minutes=29), ttl)
    assert domain.expired(order, NOW + ttl, ttl)
    assert not domain.expired(make_order("paid"), NOW + ttl * 10, ttl)
    leased = make_order("confirmed")
    leased["payment"]["lease_until"] = NOW + ttl * 2
    assert not domain.expired(leased, NOW + ttl, ttl)

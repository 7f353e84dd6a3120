"""The order saga end to end on the real broker and mongod, with stand-in services."""
from __future__ import annotations

from datetime import timedelta

import eventlet
import pytest

from shared.clock import to_iso, utcnow
from shared.errors import Conflict, ValidationFailed
from shared.ids import new_id
from tests.order.conftest import ADDRESS, FakeMember, publish
from tools.testing import store_of, wait_for

WAIT = 30


def product(rpc, price=5000, stock=10, category="apparel", published=True, announce=True):
    pid = new_id("prd")
    rpc.catalog.add_product({"id": pid, "price": price, "stock": stock, "category": category},
                            published=published, announce=announce)
    return pid


def place(rpc, lines, token="tok_visa", member="mem_1", **kwargs):
    return rpc.order.place_order(member, lines, ADDRESS, {"token": token}, **kwargs)


def status_is(rpc, order_id, status):
    return lambda: rpc.order.get_order(order_id)["status"] == status


def emitted(db, event_type, order_id=None):
    query = {"event_type": event_type}
    if order_id:
        query["envelope.data.order_id"] = order_id
    return [row["envelope"]["data"] for row in db.outbox.find(query)]


def test_happy_path_to_completed_with_redeliveries(stack, rpc, amqp_uri):
    s = stack()
    db = store_of(s["order"])
    FakeMember.tiers["mem_gold"] = "gold"
    a, b = product(rpc, price=12900), product(rpc, price=8900, category="beauty")
    order = place(rpc, [{"product_id": a, "quantity": 2}, {"product_id": b, "quantity": 1}],
                  member="mem_gold", coupon_code="SAVE10", idempotency_key="k-happy",
                  attribution={"session_id": "ses_1", "campaign_id": None, "referral_code": "KOL1"})
    assert order["status"] == "pending"
    # gold: 2580 + 890 off the lines; SAVE10: 1000 more split 23220:8010 → 743.5 / 256.5 → 744 / 256
    assert order["subtotal"] == 34700 and order["discount"] == 3470 + 1000
    assert [x["discount"] for x in order["lines"]] == [2580 + 744, 890 + 256]
    assert order["shipping_fee"] == 0 and order["total"] == 34700 - 4470
    assert order["attribution"]["referral_code"] == "KOL1"
    placed = emitted(db, "order_placed", order["id"])[0]
    assert placed["promotion_ids"] == ["prm_save10", "prm_gold"] or set(placed["promotion_ids"]) == {
        "prm_save10", "prm_gold"}
    assert rpc.marketing.coupon_of(order["id"])["state"] == "reserved"

    wait_for(status_is(rpc, order["id"], "paid"), WAIT, what="paid")
    paid = emitted(db, "order_paid", order["id"])[0]
    assert paid["shipping_address"]["region"] == "Shanghai" and paid["total"] == order["total"]
    full = rpc.order.get_order(order["id"])
    assert [r["kind"] for r in full["payments"]] == ["authorization", "capture"]
    assert "token" not in full["payment"]

    created = publish(amqp_uri, "fulfillment", "shipment_created",
                      {"shipment_id": "shp_1", "order_id": order["id"], "warehouse_id": "wh_1"})
    wait_for(status_is(rpc, order["id"], "fulfilling"), WAIT, what="fulfilling")
    publish(amqp_uri, "fulfillment", "shipment_dispatched",
            {"shipment_id": "shp_1", "order_id": order["id"], "carrier": "SF", "tracking_number": "SF1",
             "lines": [{"product_id": a, "quantity": 2}, {"product_id": b, "quantity": 1}]})
    wait_for(status_is(rpc, order["id"], "shipped"), WAIT, what="shipped")
    delivered = publish(amqp_uri, "fulfillment", "shipment_delivered",
                        {"shipment_id": "shp_1", "order_id": order["id"]})
    wait_for(status_is(rpc, order["id"], "completed"), WAIT, what="completed")
    # redeliveries and a late old event change nothing
    publish(amqp_uri, "", "", {}, envelope=delivered)
    publish(amqp_uri, "", "", {}, envelope=created)
    done = publish(amqp_uri, "fulfillment", "shipment_delivered",
                   {"shipment_id": "shp_1", "order_id": order["id"]})
    wait_for(lambda: db.inbox.find_one({"event_id": done["event_id"]}), WAIT, what="late event seen")
    wait_for(lambda: db.inbox.count_documents({"event_id": created["event_id"]}) == 1, WAIT)
    eventlet.sleep(0.3)
    assert len(emitted(db, "order_completed", order["id"])) == 1
    history = [h["status"] for h in rpc.order.get_order(order["id"])["history"]]
    assert history == ["pending", "confirmed", "paid", "fulfilling", "shipped", "delivered", "completed"]


def test_read_model_fallback_and_unorderable_products(stack, rpc):
    s = stack()
    db = store_of(s["order"])
    fresh = product(rpc, price=2000, announce=False)  # no events: only catalog.get_product knows it
    quote = rpc.order.quote("mem_1", [{"product_id": fresh, "quantity": 2}])
    assert quote["subtotal"] == 4000 and quote["shipping_fee"] == 1000 and quote["total"] == 5000
    assert db.products.find_one({"_id": fresh})["price"] == 2000
    draft = product(rpc, published=False, announce=False)
    for bad, problem in ((draft, "product is not on sale"), ("prd_nope", "unknown product")):
        with pytest.raises(ValidationFailed) as caught:
            place(rpc, [{"product_id": fresh, "quantity": 1}, {"product_id": bad, "quantity": 1}])
        assert caught.value.field_errors == {"lines": {"1": {"product_id": [problem]}}}
    assert db.orders.count_documents({}) == 0
    assert db.outbox.count_documents({"event_type": "order_placed"}) == 0


@pytest.mark.parametrize("change,field", [
    ({"lines": []}, "lines"),
    ({"lines": [{"product_id": "P", "quantity": 0}]}, "lines"),
    ({"lines": [{"product_id": "P", "quantity": "2"}]}, "lines"),
    ({"shipping_address": {"name": "x", "city": "y", "region": "z"}}, "shipping_address"),
    ({"shipping_address": {**ADDRESS, "phone": "call me"}}, "shipping_address"),
    ({"payment": {}}, "payment"),
    ({"payment": {"token": ""}}, "payment"),
    ({"coupon_code": "NOPE"}, "coupon_code"),
    ({"member_id": ""}, "member_id"),
    ({"member_id": "mem_unknown"}, "member_id"),
])
def test_bad_input_names_the_problem_and_writes_nothing(stack, rpc, change, field):
    s = stack()
    db = store_of(s["order"])
    pid = product(rpc)
    args = {"member_id": "mem_1", "lines": [{"product_id": pid, "quantity": 1}],
            "shipping_address": ADDRESS, "payment": {"token": "tok_visa"}}
    args.update({k: ([{**x, "product_id": pid} for x in v] if k == "lines" else v)
                 for k, v in change.items()})
    with pytest.raises(ValidationFailed) as caught:
        rpc.order.place_order(**args)
    assert field in caught.value.field_errors
    assert db.orders.count_documents({}) == 0 and db.outbox.count_documents({}) == 0


def test_same_idempotency_key_under_concurrent_retries_makes_one_order(stack, rpc, amqp_uri):
    from tools.client import connect

    s = stack()
    db = store_of(s["order"])
    pid = product(rpc)

    def attempt(_):
        with connect(amqp_uri, timeout=30) as client:
            return client.order.place_order("mem_1", [{"product_id": pid, "quantity": 1}], ADDRESS,
                                            {"token": "tok_visa"}, idempotency_key="same-key")["id"]

    pool = eventlet.GreenPool(8)
    ids = list(pool.imap(attempt, range(8)))
    assert len(set(ids)) == 1
    assert db.orders.count_documents({}) == 1
    assert db.outbox.count_documents({"event_type": "order_placed"}) == 1
    other = place(rpc, [{"product_id": pid, "quantity": 1}], idempotency_key="other-key")
    assert other["id"] != ids[0]


def test_a_repeat_running_beside_the_first_call_answers_its_order_even_once_closed(stack, rpc, amqp_uri):
    """Two runs of one place_order at once (a caller's retry, or a request redelivered while
    its first delivery still ran; the cluster tests saw it under a partition): the repeat
    passes the check for an existing order before the first run stores it, and by the time
    it prices the cart the first run's order was cancelled and its coupon released. The
    repeat answers the first run's order instead of failing on the coupon."""
    from eventlet.event import Event

    from tests.order.conftest import FakeMarketing
    from tools.client import connect

    s = stack()
    db = store_of(s["order"])
    pid = product(rpc)
    first_priced, repeat_priced = Event(), Event()
    FakeMarketing.gates[:] = [first_priced, repeat_priced]

    def call():
        with connect(amqp_uri, timeout=30) as client:
            return client.order.place_order("mem_1", [{"product_id": pid, "quantity": 1}], ADDRESS,
                                            {"token": "tok_visa"}, coupon_code="SAVE10",
                                            idempotency_key="twice-at-once")
    try:
        first = eventlet.spawn(call)
        wait_for(lambda: FakeMarketing.gates == [repeat_priced], what="the first call pricing")
        repeat = eventlet.spawn(call)
        wait_for(lambda: not FakeMarketing.gates, what="the repeat pricing")
        first_priced.send()
        order = first.wait()
        rpc.order.cancel_order(order["id"], "member")
        wait_for(lambda: rpc.marketing.coupon_of(order["id"])["state"] == "released", WAIT,
                 what="the coupon released")
        repeat_priced.send()
        assert repeat.wait()["id"] == order["id"]
    finally:
        FakeMarketing.gates.clear()
    assert db.orders.count_documents({}) == 1
    assert db.outbox.count_documents({"event_type": "order_placed"}) == 1


def test_out_of_stock_is_rejected_and_coupon_released(stack, rpc):
    s = stack()
    db = store_of(s["order"])
    pid = product(rpc, stock=1)
    order = place(rpc, [{"product_id": pid, "quantity": 3}], coupon_code="SAVE10")
    wait_for(status_is(rpc, order["id"], "rejected"), WAIT, what="rejected")
    rejected = emitted(db, "order_rejected", order["id"])[0]
    assert rejected["short_lines"] == [{"product_id": pid, "requested": 3, "available": 1}]
    wait_for(lambda: rpc.marketing.coupon_of(order["id"])["state"] == "released", WAIT)


def test_declined_payment_cancels_and_releases_stock_and_coupon(stack, rpc):
    s = stack()
    db = store_of(s["order"])
    pid = product(rpc)
    order = place(rpc, [{"product_id": pid, "quantity": 1}], token="tok_decline_nsf", coupon_code="SAVE10")
    wait_for(status_is(rpc, order["id"], "cancelled"), WAIT, what="cancelled")
    assert emitted(db, "payment_failed", order["id"])[0]["reason"] == "card_declined"
    cancelled = emitted(db, "order_cancelled", order["id"])[0]
    assert cancelled["reason"] == "payment_failed" and cancelled["was_paid"] is False
    assert not emitted(db, "order_paid", order["id"])
    wait_for(lambda: rpc.catalog.reservation_of(order["id"])["state"] == "released", WAIT)
    wait_for(lambda: rpc.marketing.coupon_of(order["id"])["state"] == "released", WAIT)


def test_provider_timeout_then_success(stack, rpc):
    s = stack()
    db = store_of(s["order"])
    pid = product(rpc)
    order = place(rpc, [{"product_id": pid, "quantity": 1}], token="tok_timeout_1")
    wait_for(lambda: rpc.order.get_order(order["id"])["payment"]["last_error"] == "timeout", WAIT)
    state = rpc.order.get_order(order["id"])
    assert state["status"] == "confirmed" and state["payment"]["attempts"] == 1
    # not due yet: nothing happens
    assert rpc.order.run_payment_retries(now=to_iso(utcnow())) == {}
    later = to_iso(utcnow() + timedelta(minutes=5))
    assert rpc.order.run_payment_retries(now=later) == {"approved": 1}
    assert rpc.order.get_order(order["id"])["status"] == "paid"
    assert rpc.order.run_payment_retries(now=later) == {}
    assert len(emitted(db, "order_paid", order["id"])) == 1


def test_provider_keeps_timing_out_then_order_is_cancelled(stack, rpc):
    s = stack(payment_max_attempts=2)
    db = store_of(s["order"])
    order = place(rpc, [{"product_id": product(rpc), "quantity": 1}], token="tok_timeout_99")
    wait_for(lambda: rpc.order.get_order(order["id"])["payment"]["attempts"] == 1, WAIT)
    wait_for(lambda: rpc.order.get_order(order["id"])["payment"]["last_error"] == "timeout", WAIT)
    rpc.order.run_payment_retries(now=to_iso(utcnow() + timedelta(hours=1)))
    assert rpc.order.get_order(order["id"])["status"] == "cancelled"
    assert emitted(db, "payment_failed", order["id"])[0]["reason"] == "provider_unavailable"


def test_crash_between_capture_and_record_is_recovered_by_retry(stack, rpc):
    from services.order.payments import MongoLedger, SandboxProvider
    from services.order.store import OrderRepo

    s = stack()
    db = store_of(s["order"])
    order = place(rpc, [{"product_id": product(rpc), "quantity": 1}], token="tok_timeout_1")
    wait_for(lambda: rpc.order.get_order(order["id"])["payment"]["last_error"] == "timeout", WAIT)
    # a replica claims the next attempt, the provider captures, then the replica dies
    now = utcnow() + timedelta(minutes=5)
    claimed = OrderRepo(db).claim_payment(order["id"], now, now + timedelta(seconds=30))
    lost = SandboxProvider(MongoLedger(db.sandbox_provider)).charge(
        order["id"], claimed["total"], "CNY", "tok_timeout_1")
    assert lost.outcome == "approved"
    # lease still held: nobody else may try; cancelling is refused meanwhile
    assert rpc.order.run_payment_retries(now=to_iso(now + timedelta(seconds=10))) == {}
    with pytest.raises(Conflict):
        rpc.order.cancel_order(order["id"], "member")
    assert rpc.order.run_payment_retries(now=to_iso(now + timedelta(seconds=31))) == {"approved": 1}
    state = rpc.order.get_order(order["id"])
    assert state["status"] == "paid" and state["payment"]["ref"] == lost.payment_ref
    assert len([r for r in state["payments"] if r["kind"] == "capture"]) == 1


def test_cancel_after_payment_refunds(stack, rpc):
    s = stack()
    db = store_of(s["order"])
    order = place(rpc, [{"product_id": product(rpc, price=3000), "quantity": 2}])
    wait_for(status_is(rpc, order["id"], "paid"), WAIT, what="paid")
    result = rpc.order.cancel_order(order["id"], "member")
    assert result["status"] == "cancelled"
    assert [r["state"] for r in result["refunds"]] == ["succeeded"]
    assert emitted(db, "order_cancelled", order["id"])[0]["was_paid"] is True
    refunded = emitted(db, "order_refunded", order["id"])
    assert len(refunded) == 1 and refunded[0]["reason"] == "cancelled"
    assert refunded[0]["amount"] == order["total"] == 7000 and refunded[0]["return_id"] is None
    with pytest.raises(Conflict):
        rpc.order.cancel_order(order["id"], "member")
    assert len(emitted(db, "order_refunded", order["id"])) == 1


def test_cancel_after_dispatch_is_refused(stack, rpc, amqp_uri):
    stack()
    order = place(rpc, [{"product_id": product(rpc), "quantity": 1}])
    wait_for(status_is(rpc, order["id"], "paid"), WAIT)
    publish(amqp_uri, "fulfillment", "shipment_dispatched",
            {"shipment_id": "shp_2", "order_id": order["id"], "carrier": "SF", "tracking_number": "1",
             "lines": [{"product_id": "x", "quantity": 1}]})
    wait_for(status_is(rpc, order["id"], "shipped"), WAIT)
    with pytest.raises(Conflict):
        rpc.order.cancel_order(order["id"], "member")


def test_expiry_cancels_unpaid_orders(stack, rpc):
    s = stack(expiry_seconds=1800)
    db = store_of(s["order"])
    out_of_stock = product(rpc, stock=0)
    pending = place(rpc, [{"product_id": out_of_stock, "quantity": 1}])  # stays pending: we never reserve
    db.orders.update_one({"_id": pending["id"]}, {"$set": {"status": "pending"}})
    assert rpc.order.run_expiry(now=to_iso(utcnow() + timedelta(minutes=29)))["expired"] == 0
    wait_for(lambda: db.inbox.count_documents({"event_type": "stock_reservation_failed"}) == 1, WAIT)
    db.orders.update_one({"_id": pending["id"]}, {"$set": {"status": "pending"}})  # as if never answered
    assert rpc.order.run_expiry(now=to_iso(utcnow() + timedelta(minutes=31)))["expired"] == 1
    assert rpc.order.get_order(pending["id"])["status"] == "cancelled"
    assert emitted(db, "order_cancelled", pending["id"])[0]["reason"] == "expired"
    assert rpc.order.run_expiry(now=to_iso(utcnow() + timedelta(minutes=31)))["expired"] == 0


def test_partial_then_full_return(stack, rpc, amqp_uri):
    s = stack()
    db = store_of(s["order"])
    a, b = product(rpc, price=12900), product(rpc, price=8900)
    order = place(rpc, [{"product_id": a, "quantity": 2}, {"product_id": b, "quantity": 1}],
                  coupon_code="SAVE10")
    wait_for(status_is(rpc, order["id"], "paid"), WAIT)
    with pytest.raises(Conflict):
        rpc.order.request_return(order["id"], [{"product_id": a, "quantity": 1}], "too early")
    publish(amqp_uri, "fulfillment", "shipment_delivered", {"shipment_id": "s", "order_id": order["id"]})
    wait_for(status_is(rpc, order["id"], "completed"), WAIT)
    line_a = order["lines"][0]
    ret1 = rpc.order.request_return(order["id"], [{"product_id": a, "quantity": 1}], "wrong_size")
    assert ret1["id"].startswith("ret_") and ret1["status"] == "requested"
    with pytest.raises(ValidationFailed) as caught:
        rpc.order.request_return(order["id"], [{"product_id": a, "quantity": 2}], "more")
    assert "lines.0.quantity" in caught.value.field_errors
    got = publish(amqp_uri, "fulfillment", "return_received", {
        "return_id": ret1["id"], "order_id": order["id"],
        "lines": [{"product_id": a, "quantity": 1, "condition": "resellable"}]})
    wait_for(status_is(rpc, order["id"], "partially_refunded"), WAIT)
    publish(amqp_uri, "", "", {}, envelope=got)  # redelivered: no second refund
    first = emitted(db, "order_refunded", order["id"])
    assert first[0]["amount"] == line_a["line_total"] // 2 and first[0]["return_id"] == ret1["id"]
    ret2 = rpc.order.request_return(order["id"], [{"product_id": a, "quantity": 1},
                                                  {"product_id": b, "quantity": 1}], "changed_mind")
    publish(amqp_uri, "fulfillment", "return_received", {
        "return_id": ret2["id"], "order_id": order["id"],
        "lines": [{"product_id": a, "quantity": 1, "condition": "damaged"},
                  {"product_id": b, "quantity": 1, "condition": "resellable"}]})
    wait_for(status_is(rpc, order["id"], "refunded"), WAIT)
    # recorded once (the return, then the refund's record: two keyed steps), the
    # redelivery added nothing
    wait_for(lambda: db.inbox.count_documents({"event_id": got["event_id"], "step": 0}) == 1, WAIT)
    assert db.inbox.count_documents({"event_id": got["event_id"]}) <= 2
    refunds = emitted(db, "order_refunded", order["id"])
    assert len(refunds) == 2
    assert sum(r["amount"] for r in refunds) == order["total"] - order["shipping_fee"]
    final = rpc.order.get_order(order["id"])
    assert [r["status"] for r in final["returns"]] == ["refunded", "refunded"]
    assert len(final["refunds"]) == 2
    with pytest.raises(Conflict):
        rpc.order.request_return(order["id"], [{"product_id": b, "quantity": 1}], "again")


def test_member_erased_redacts_addresses_and_list_orders(stack, rpc, amqp_uri):
    s = stack()
    db = store_of(s["order"])
    pid = product(rpc)
    mine = [place(rpc, [{"product_id": pid, "quantity": 1}], member="mem_e")["id"] for _ in range(2)]
    other = place(rpc, [{"product_id": pid, "quantity": 1}], member="mem_keep")["id"]
    listed = rpc.order.list_orders(member_id="mem_e")
    assert listed["total"] == 2 and {o["id"] for o in listed["items"]} == set(mine)
    assert rpc.order.list_orders(page_size=1, page=2)["total"] == 3
    assert rpc.order.list_orders(since=to_iso(utcnow() + timedelta(hours=1)))["total"] == 0
    with pytest.raises(ValidationFailed):
        rpc.order.list_orders(status="lost")
    publish(amqp_uri, "member", "member_erased", {"member_id": "mem_e"})
    wait_for(lambda: all(db.orders.find_one({"_id": i})["shipping_address"].get("redacted") for i in mine),
             WAIT, what="redacted")
    for order_id in mine:
        address = rpc.order.get_order(order_id)["shipping_address"]
        assert address["name"] is None and address["phone"] is None and address["region"] == "Shanghai"
    assert rpc.order.get_order(other)["shipping_address"]["name"] == "Li Wei"


def test_tier_from_events_prices_with_benefit(stack, rpc, amqp_uri):
    s = stack()
    db = store_of(s["order"])
    publish(amqp_uri, "member", "member_registered", {"member_id": "mem_t", "region": None, "gender": None,
                                                       "birth_year": None, "interests": [], "tier": "bronze",
                                                       "version": 1})
    publish(amqp_uri, "member", "tier_changed", {"member_id": "mem_t", "old_tier": "bronze",
                                                  "new_tier": "gold", "version": 2})
    wait_for(lambda: (db.members.find_one({"_id": "mem_t"}) or {}).get("tier") == "gold", WAIT)
    quote = rpc.order.quote("mem_t", [{"product_id": product(rpc, price=10000), "quantity": 1}])
    assert quote["discount"] == 1000 and quote["shipping_fee"] == 1000


def test_timer_retries_payment_on_its_own(stack, rpc):
    stack(timers_enabled=1, payment_retry_base_seconds=0.1)
    order = place(rpc, [{"product_id": product(rpc), "quantity": 1}], token="tok_timeout_1")
    wait_for(status_is(rpc, order["id"], "paid"), WAIT, what="paid by the timer's retry")
    assert rpc.order.get_order(order["id"])["payment"]["attempts"] == 2

"""Points over the real broker and mongod: earning on order_completed (once),
reversal on refunds, redemption (idempotent, never below zero), expiry."""
from datetime import timedelta

import eventlet
import pytest

from shared.clock import to_iso, utcnow
from shared.errors import Conflict, ValidationFailed
from tests.member.conftest import (
    counter,
    member_payload,
    order_completed,
    order_paid,
    order_refunded,
    outbox_events,
    uid,
)
from tools.testing import wait_for


def balance(rpc, member_id):
    return rpc.member.get_points(member_id)["balance"]


def lots_match_balance(db, member_id):
    """The invariant: spendable lots add up to the balance (when it is not negative)."""
    remaining = sum(lot["remaining"] for lot in db.point_lots.find({"member_id": member_id}))
    bal = db.members.find_one({"_id": member_id})["points_balance"]
    return remaining == max(0, bal)


def earn(rpc, events, member_id, total, order_id=None):
    order_id = order_id or uid("ord")
    before = balance(rpc, member_id)
    events.send("order_completed", order_completed(order_id, member_id, total))
    wait_for(lambda: balance(rpc, member_id) > before, timeout=30, what="points earned")
    return order_id


def test_redelivered_order_completed_earns_once(member_service, rpc, events):
    _, db = member_service
    mid = rpc.member.register_member(member_payload())["id"]
    order_id = uid("ord")
    envelope = events.send("order_completed", order_completed(order_id, mid, 32700))
    wait_for(lambda: balance(rpc, mid) == 327, timeout=30, what="points earned")

    duplicates = counter("shop_events_duplicate_total", service="member", event_type="order_completed")
    events.publish(envelope)                         # the broker redelivers the same envelope
    wait_for(lambda: counter("shop_events_duplicate_total", service="member",
                             event_type="order_completed") > duplicates, timeout=30, what="duplicate seen")
    # the same fact under a new event id (a producer re-publishing) earns nothing either
    events.send("order_completed", order_completed(order_id, mid, 32700))
    wait_for(lambda: db.inbox.count_documents({"event_type": "order_completed"}) == 2, timeout=30,
             what="second envelope handled")
    assert balance(rpc, mid) == 327
    assert db.ledger.count_documents({"member_id": mid, "kind": "earn"}) == 1
    earned = outbox_events(db, "points_earned", mid)
    assert [e["data"] for e in earned] == [{"member_id": mid, "points": 327, "balance": 327,
                                            "order_id": order_id, "version": 2}]
    points = rpc.member.get_points(mid)
    assert points["entries"][0]["kind"] == "earn" and points["expiring"][0]["points"] == 327


def test_partial_then_full_refund_reverses_proportionally(member_service, rpc, events):
    _, db = member_service
    mid = rpc.member.register_member(member_payload())["id"]
    order_id = earn(rpc, events, mid, 32700)
    other = earn(rpc, events, mid, 10000)
    assert balance(rpc, mid) == 427

    refund = order_refunded(order_id, mid, 11900)
    events.send("order_refunded", refund)
    wait_for(lambda: balance(rpc, mid) == 427 - 119, timeout=30, what="partial reversal")
    # the same refund again (re-published) reverses nothing more
    events.send("order_refunded", refund)
    wait_for(lambda: db.inbox.count_documents({"event_type": "order_refunded"}) == 2, timeout=30,
             what="duplicate refund handled")
    assert balance(rpc, mid) == 308

    events.send("order_refunded", order_refunded(order_id, mid, 32700 - 11900))
    wait_for(lambda: balance(rpc, mid) == 100, timeout=30, what="full reversal")
    # more refunds than the order total never take more than the order earned
    events.send("order_refunded", order_refunded(order_id, mid, 5000))
    wait_for(lambda: db.inbox.count_documents({"event_type": "order_refunded"}) == 4, timeout=30,
             what="over-refund handled")
    assert balance(rpc, mid) == 100
    reversed_ = [e["data"]["points"] for e in outbox_events(db, "points_reversed", mid)]
    assert reversed_ == [119, 208] and sum(reversed_) == 327
    order = db.orders.find_one({"_id": order_id})
    assert order["reversed"] == order["earned"] == 327
    assert db.orders.find_one({"_id": other})["reversed"] == 0
    assert lots_match_balance(db, mid)


def test_refund_before_completion_is_applied_when_points_are_earned(member_service, rpc, events):
    _, db = member_service
    mid = rpc.member.register_member(member_payload())["id"]
    order_id = uid("ord")
    events.send("order_refunded", order_refunded(order_id, mid, 5000))
    wait_for(lambda: db.orders.find_one({"_id": order_id}), timeout=30, what="early refund recorded")
    events.send("order_completed", order_completed(order_id, mid, 20000))
    wait_for(lambda: db.orders.find_one({"_id": order_id, "earned": {"$ne": None}}), timeout=30,
             what="earned")
    assert balance(rpc, mid) == 200 - 50
    assert [e["data"]["points"] for e in outbox_events(db, "points_reversed", mid)] == [50]


def test_reversing_spent_points_leaves_a_debt_the_next_earn_repays(member_service, rpc, events):
    _, db = member_service
    mid = rpc.member.register_member(member_payload())["id"]
    order_id = earn(rpc, events, mid, 10000)
    rpc.member.redeem_points(mid, 80, "checkout")
    events.send("order_refunded", order_refunded(order_id, mid, 10000))
    wait_for(lambda: balance(rpc, mid) == -80, timeout=30, what="reversal into debt")
    with pytest.raises(ValidationFailed) as err:
        rpc.member.redeem_points(mid, 1, "checkout")
    assert "points" in err.value.field_errors
    earn(rpc, events, mid, 20000)
    assert balance(rpc, mid) == 120
    assert lots_match_balance(db, mid)


def test_redeem_validation_and_over_balance_write_nothing(member_service, rpc, events):
    _, db = member_service
    mid = rpc.member.register_member(member_payload())["id"]
    earn(rpc, events, mid, 10000)
    ledger_before = db.ledger.count_documents({})
    for points, reason, field in [(101, "checkout", "points"), (0, "checkout", "points"),
                                  (-5, "checkout", "points"), ("10", "checkout", "points"),
                                  (10, "Free text with Spaces", "reason"), (10, "", "reason")]:
        with pytest.raises(ValidationFailed) as err:
            rpc.member.redeem_points(mid, points, reason)
        assert field in err.value.field_errors
    assert db.ledger.count_documents({}) == ledger_before
    assert balance(rpc, mid) == 100
    assert outbox_events(db, "points_redeemed", mid) == []


def test_redeem_is_idempotent_by_request_id(member_service, rpc, events):
    _, db = member_service
    mid = rpc.member.register_member(member_payload())["id"]
    earn(rpc, events, mid, 10000)
    first = rpc.member.redeem_points(mid, 30, "checkout", request_id="req-1")
    assert first["balance"] == 70 and first["replayed"] is False and first["points"] == 30
    again = rpc.member.redeem_points(mid, 30, "checkout", request_id="req-1")
    assert again["replayed"] is True and again["id"] == first["id"] and again["balance"] == 70
    with pytest.raises(Conflict) as err:
        rpc.member.redeem_points(mid, 31, "checkout", request_id="req-1")
    assert "request_id" in err.value.details["fields"]
    assert balance(rpc, mid) == 70
    assert len(outbox_events(db, "points_redeemed", mid)) == 1
    rpc.member.redeem_points(mid, 30, "checkout", request_id="req-2")
    assert balance(rpc, mid) == 40


def test_concurrent_redemptions_never_go_below_zero(member_service, rpc, events, amqp_uri):
    from tools.client import connect

    _, db = member_service
    mid = rpc.member.register_member(member_payload())["id"]
    earn(rpc, events, mid, 10000)                       # 100 points

    def attempt(i):
        with connect(amqp_uri, timeout=30) as client:
            try:
                client.member.redeem_points(mid, 30, "checkout", request_id=f"r{i % 6}")
                return "ok"
            except ValidationFailed:
                return "refused"

    outcomes = list(eventlet.GreenPool(12).imap(attempt, range(12)))
    redeemed = db.ledger.count_documents({"member_id": mid, "kind": "redeem"})
    assert redeemed == 3                                 # 3 x 30 fit in 100, a 4th would not
    assert balance(rpc, mid) == 10
    assert outcomes.count("ok") >= 3
    assert len(outbox_events(db, "points_redeemed", mid)) == 3
    assert lots_match_balance(db, mid)


def test_expiry_with_an_explicit_clock_is_idempotent(member_service, rpc, events):
    _, db = member_service
    mid = rpc.member.register_member(member_payload())["id"]
    earn(rpc, events, mid, 10000)
    rpc.member.redeem_points(mid, 40, "checkout")
    assert rpc.member.run_expiry(now=to_iso(utcnow() + timedelta(days=89)))["points"] == 0
    later = to_iso(utcnow() + timedelta(days=91))
    result = rpc.member.run_expiry(now=later)
    assert result == {"lots": 1, "points": 60}
    assert balance(rpc, mid) == 0
    assert rpc.member.run_expiry(now=later) == {"lots": 0, "points": 0}
    expired = outbox_events(db, "points_expired", mid)
    assert [e["data"] for e in expired] == [{"member_id": mid, "points": 60, "balance": 0,
                                             "order_id": None, "version": 4}]  # earn 2, redeem 3
    kinds = [e["kind"] for e in rpc.member.get_points(mid)["entries"]]
    assert kinds == ["expire", "redeem", "earn"]
    with pytest.raises(ValidationFailed) as err:
        rpc.member.run_expiry(now="tomorrow")
    assert "now" in err.value.field_errors


def test_earn_uses_tier_multiplier(member_service, rpc, events):
    _, db = member_service
    mid = rpc.member.register_member(member_payload())["id"]
    paid = uid("ord")
    events.send("order_paid", order_paid(paid, mid, 150000))   # 1500.00 paid: silver (x1.5)
    wait_for(lambda: rpc.member.get_member(mid)["tier"] == "silver", timeout=30, what="silver")
    events.send("order_completed", order_completed(paid, mid, 150000))
    wait_for(lambda: balance(rpc, mid) > 0, timeout=30, what="points")
    assert balance(rpc, mid) == 2250


def test_points_are_earned_on_merchandise_so_a_full_return_reverses_them_all(member_service, rpc, events):
    _, db = member_service
    mid = rpc.member.register_member(member_payload())["id"]
    order_id = uid("ord")
    completed = order_completed(order_id, mid, 10000)
    completed["total"] = 11000  # 10000 of goods and a 1000 shipping fee
    events.send("order_completed", completed)
    wait_for(lambda: balance(rpc, mid) == 100, timeout=30, what="points on the goods only")
    # every item comes back: the goods are refunded, the shipping fee is not
    events.send("order_refunded", order_refunded(order_id, mid, 6000))
    wait_for(lambda: balance(rpc, mid) == 40, timeout=30, what="partial reversal")
    events.send("order_refunded", order_refunded(order_id, mid, 4000))
    wait_for(lambda: balance(rpc, mid) == 0, timeout=30, what="every point reversed")
    assert db.orders.find_one({"_id": order_id})["reversed"] == 100

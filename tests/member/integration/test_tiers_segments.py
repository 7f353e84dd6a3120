"""Tiers from paid spend in the rolling window, and lifecycle segments, with a controlled clock."""
from datetime import timedelta

import pytest

from shared.clock import to_iso, utcnow
from shared.errors import ValidationFailed
from tests.member.conftest import member_payload, order_paid, order_refunded, outbox_events, uid
from tools.testing import wait_for


def test_upgrade_on_paid_spend_and_downgrade_on_refund(member_service, rpc, events):
    _, db = member_service
    mid = rpc.member.register_member(member_payload())["id"]
    first, second = uid("ord"), uid("ord")
    events.send("order_paid", order_paid(first, mid, 60000))
    wait_for(lambda: db.orders.find_one({"_id": first, "paid": True}), timeout=30, what="paid")
    assert rpc.member.get_member(mid)["tier"] == "bronze"
    envelope = events.send("order_paid", order_paid(second, mid, 50000))
    wait_for(lambda: rpc.member.get_member(mid)["tier"] == "silver", timeout=30, what="silver")
    member = rpc.member.get_member(mid)
    assert member["tier_discount_percent"] == 2
    assert member["tier_progress"]["spend_in_window"] == 110000
    assert member["tier_progress"]["next_tier"] == "gold"
    events.publish(envelope)                                 # redelivered: spend counted once
    events.send("order_paid", order_paid(second, mid, 50000))  # re-published: counted once
    wait_for(lambda: db.inbox.count_documents({"event_type": "order_paid"}) == 3, timeout=30,
             what="duplicate paid handled")
    assert rpc.member.get_member(mid)["tier_progress"]["spend_in_window"] == 110000

    events.send("order_refunded", order_refunded(second, mid, 20000))
    wait_for(lambda: rpc.member.get_member(mid)["tier"] == "bronze", timeout=30, what="downgrade")
    changes = [e["data"] for e in outbox_events(db, "tier_changed", mid)]
    assert [(c["old_tier"], c["new_tier"], c["direction"]) for c in changes] == [
        ("bronze", "silver", "upgrade"), ("silver", "bronze", "downgrade")]
    assert changes[0]["tier"] == "silver" and changes[0]["tier_discount_percent"] == 2
    assert changes[1]["tier_discount_percent"] == 0
    stats = db.members.find_one({"_id": mid})
    assert stats["orders_count"] == 2 and stats["net_spend"] == 90000


def test_tier_review_downgrades_when_spend_leaves_the_window(member_service, rpc, events):
    _, db = member_service
    mid = rpc.member.register_member(member_payload())["id"]
    events.send("order_paid", order_paid(uid("ord"), mid, 600000))   # gold
    wait_for(lambda: rpc.member.get_member(mid)["tier"] == "gold", timeout=30, what="gold")
    assert rpc.member.run_tier_review(now=to_iso(utcnow() + timedelta(days=29)))["changed"] == 0
    assert rpc.member.get_member(mid)["tier"] == "gold"
    later = to_iso(utcnow() + timedelta(days=31))
    assert rpc.member.get_member(mid, now=later)["tier_progress"]["spend_in_window"] == 0
    result = rpc.member.run_tier_review(now=later)
    assert result["changed"] == 1
    assert rpc.member.get_member(mid)["tier"] == "bronze"
    assert rpc.member.run_tier_review(now=later) == {"reviewed": 0, "changed": 0}
    downgrade = outbox_events(db, "tier_changed", mid)[-1]["data"]
    assert (downgrade["old_tier"], downgrade["new_tier"]) == ("gold", "bronze")


def test_order_completed_counts_spend_when_order_paid_never_arrived(member_service, rpc, events):
    from tests.member.conftest import order_completed

    _, db = member_service
    mid = rpc.member.register_member(member_payload())["id"]
    order_id = uid("ord")
    events.send("order_completed", order_completed(order_id, mid, 120000))
    wait_for(lambda: rpc.member.get_member(mid)["tier"] == "silver", timeout=30, what="silver")
    # points at the tier reached by this very order: 1200 x 1.5
    assert rpc.member.get_points(mid)["balance"] == 1800
    events.send("order_paid", order_paid(order_id, mid, 120000))     # late: no second count
    wait_for(lambda: db.inbox.count_documents({"event_type": "order_paid"}) == 1, timeout=30,
             what="late paid handled")
    assert db.members.find_one({"_id": mid})["net_spend"] == 120000


def test_segments_and_rfm(member_service, rpc, events):
    _, db = member_service
    buyer = rpc.member.register_member(member_payload())["id"]
    browser = rpc.member.register_member(member_payload())["id"]
    events.send("order_paid", order_paid(uid("ord"), buyer, 60000))
    wait_for(lambda: rpc.member.get_segment(buyer)["segment"] == "active", timeout=30, what="active")

    segment = rpc.member.get_segment(buyer)
    assert segment["rfm"] == {"r": 5, "f": 1, "m": 2, "score": "512"}
    assert rpc.member.get_segment(browser)["segment"] == "new"
    assert rpc.member.get_segment(browser)["rfm"]["score"] == "000"

    def ids(name, days=0, **kw):
        now = to_iso(utcnow() + timedelta(days=days))
        return [i["member_id"] for i in rpc.member.list_segment(name, now=now, **kw)["items"]]

    assert ids("new") == [browser] and ids("active") == [buyer]
    assert ids("at_risk", 100) == sorted([buyer, browser])
    assert ids("dormant", 200) == sorted([buyer, browser])
    assert ids("churned", 400) == sorted([buyer, browser])
    assert ids("active", 100) == [] and ids("new", 100) == []
    page = rpc.member.list_segment("at_risk", page=2, page_size=1, now=to_iso(utcnow() + timedelta(days=100)))
    assert page["total"] == 2 and len(page["items"]) == 1 and page["page"] == 2
    # erased members drop out of every segment
    rpc.member.erase_member(browser)
    assert ids("new") == []
    for bad, field in [({"name": "vip"}, "name"), ({"name": "new", "page": 0}, "page"),
                       ({"name": "new", "page_size": 5000}, "page_size"),
                       ({"name": "new", "now": "soon"}, "now")]:
        with pytest.raises(ValidationFailed) as err:
            rpc.member.list_segment(**bad)
        assert field in err.value.field_errors


def test_get_tiers(member_service, rpc):
    tiers = rpc.member.get_tiers()
    assert [t["name"] for t in tiers["tiers"]] == ["bronze", "silver", "gold", "platinum"]
    assert tiers["tiers"][3]["discount_percent"] == 10 and tiers["window_days"] == 30

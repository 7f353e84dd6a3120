"""Campaigns (consent, frequency cap, quiet hours, idempotency, budget), transactional
notifications once per event, unsubscribe and erasure, over the real broker and mongod."""
from __future__ import annotations

import pytest

from shared.errors import ValidationFailed
from tests.marketing.conftest import FakeMember, FakeOrder
from tools.testing import publish_event, store_of, wait_for

QUIET_NIGHT = "2026-11-26T14:00:00Z"  # 22:00 in Asia/Shanghai
MORNING = "2026-11-27T01:30:00Z"      # 09:30 in Asia/Shanghai


def consent(rpc, member_id, channel, granted):
    return rpc.member.emit("member_consent_changed", {"member_id": member_id, "channel": channel,
                                                      "granted": granted})


def sent_to(db, campaign_id):
    return sorted(m["member_id"] for m in db.messages.find({"campaign_id": campaign_id}))


def test_campaign_consent_cap_quiet_hours_and_once(marketing, start_service, rpc):
    svc = marketing(MARKETING_QUIET_HOURS="21:00-09:00", MARKETING_FREQUENCY_CAP="1")
    start_service(FakeMember)
    db = store_of(svc)
    FakeMember.SEGMENTS = {"at_risk": ["m1", "m2", "m3", "m4", "m5"], "active": ["m4"]}
    for member in ("m1", "m3", "m4", "m5"):
        consent(rpc, member, "email", True)
    consent(rpc, "m2", "sms", True)  # consent on another channel only
    consent(rpc, "m5", "email", False)  # withdrawn later
    wait_for(lambda: db.inbox.count_documents({"event_type": "member_consent_changed"}) == 6,
             timeout=30, what="consents")
    # m4 already got a marketing message today: the frequency cap (1) keeps it out
    warmup = rpc.marketing.create_campaign({"name": "w", "segment": "active", "channel": "email",
                                            "template": {"subject": "Hi", "body": "Hello {member_id}"}})
    rpc.marketing.launch_campaign(warmup["id"], "2026-11-26T03:00:00Z")
    assert sent_to(db, warmup["id"]) == ["m4"]

    camp = rpc.marketing.create_campaign({"name": "winback", "segment": "at_risk", "channel": "email",
                                          "template": {"subject": "We miss you", "body": "Come back"}})
    launched = rpc.marketing.launch_campaign(camp["id"], QUIET_NIGHT)
    assert launched["status"] == "sending" and launched["audience_size"] == 3  # m1, m3, m4
    assert db.messages.count_documents({"campaign_id": camp["id"]}) == 0  # quiet hours
    assert launched["next_dispatch_at"] == "2026-11-27T01:00:00.000Z"
    launch_event = [r["envelope"]["data"] for r in db.outbox.find({"event_type": "campaign_launched",
                                                                   "envelope.data.campaign_id": camp["id"]})]
    assert launch_event == [{"campaign_id": camp["id"], "channel": "email", "segment": "at_risk",
                             "audience_size": 3}]
    # consent withdrawn while waiting: re-checked at send time
    consent(rpc, "m3", "email", False)
    wait_for(lambda: db.members.find_one({"_id": "m3"})["consents"]["email"]["granted"] is False,
             timeout=30)
    assert rpc.marketing.run_expiry(MORNING)["campaigns"] == 1
    assert sent_to(db, camp["id"]) == ["m1"]
    done = rpc.marketing.get_campaign(camp["id"])
    assert done["status"] == "completed" and done["sent"] == 1 and done["spent"] == 1
    assert done["skipped"] == {"no_consent": 3, "frequency_cap": 1}
    # launching again, or another dispatch round, sends nothing twice
    rpc.marketing.launch_campaign(camp["id"], MORNING)
    rpc.marketing.run_expiry(MORNING)
    assert sent_to(db, camp["id"]) == ["m1"]
    sent_events = [r["envelope"]["data"] for r in db.outbox.find({"event_type": "message_sent"})]
    assert len(sent_events) == 2 and all(e["kind"] == "marketing" and e["cost"] == 1 for e in sent_events)


def test_campaign_budget_and_unknown_segment(marketing, start_service, rpc):
    svc = marketing()
    start_service(FakeMember)
    db = store_of(svc)
    FakeMember.SEGMENTS = {"new": ["n1", "n2", "n3"]}
    for member in ("n1", "n2", "n3"):
        consent(rpc, member, "sms", True)
    wait_for(lambda: db.inbox.count_documents({}) == 3, timeout=30)
    camp = rpc.marketing.create_campaign({"name": "sms", "segment": "new", "channel": "sms",
                                          "template": {"body": "Welcome"}, "budget": 10})
    result = rpc.marketing.launch_campaign(camp["id"])
    assert result["sent"] == 2 and result["spent"] == 10 and result["skipped"]["budget"] == 1
    churn = rpc.marketing.create_campaign({"name": "c", "segment": "churned", "channel": "sms",
                                           "template": {"body": "x"}})
    with pytest.raises(ValidationFailed) as err:  # member does not know the segment
        rpc.marketing.launch_campaign(churn["id"])
    assert "segment" in err.value.field_errors
    assert rpc.marketing.get_campaign(churn["id"])["status"] == "draft"


def test_transactional_notifications_once_per_event(marketing, start_service, rpc, amqp_uri):
    svc = marketing()
    start_service(FakeOrder)
    db = store_of(svc)
    line = {"product_id": "prd_a", "category": "apparel", "quantity": 1, "unit_price": 100,
            "discount": 0, "line_total": 100}
    # shipped heard before the order itself: parked until order_placed names the member
    rpc.order.emit("order_shipped", {"order_id": "ord_t1"})
    wait_for(lambda: db.parked_notifications.count_documents({}) == 1, timeout=30)
    rpc.order.emit("order_placed", {
        "order_id": "ord_t1", "member_id": "mem_t", "lines": [line], "subtotal": 100, "discount": 0,
        "shipping_fee": 0, "total": 100, "currency": "CNY", "coupon_code": None, "promotion_ids": [],
        "attribution": {"session_id": None, "campaign_id": None, "referral_code": None}})
    paid = rpc.order.emit("order_paid", {
        "order_id": "ord_t1", "member_id": "mem_t", "lines": [line], "total": 100, "currency": "CNY",
        "shipping_address": {"region": "Shanghai"}, "payment_ref": "pay"})
    rpc.order.emit("order_completed", {"order_id": "ord_t1", "member_id": "mem_t", "total": 100,
                                       "currency": "CNY", "lines": [line]})
    refund = {"refund_id": "rfd_1", "order_id": "ord_t1", "member_id": "mem_t", "return_id": None,
              "amount": 100, "currency": "CNY", "reason": "return",
              "lines": [{"product_id": "prd_a", "quantity": 1, "amount": 100}]}
    rpc.order.emit("order_refunded", refund)
    wait_for(lambda: db.messages.count_documents({"member_id": "mem_t"}) == 4, timeout=30,
             what="four notifications")
    publish_event(amqp_uri, paid)          # redelivered
    rpc.order.emit("order_refunded", refund)  # re-published as a new event
    rpc.order.emit("order_shipped", {"order_id": "ord_t1"})
    wait_for(lambda: db.inbox.count_documents({"event_type": {"$in": ["order_refunded",
                                                                      "order_shipped"]}}) == 4,
             timeout=30)
    messages = list(db.messages.find({"member_id": "mem_t"}))
    assert sorted(m["dedupe_key"].split(":")[0] for m in messages) == [
        "order_confirmed", "order_delivered", "order_refunded", "order_shipped"]
    assert all(m["kind"] == "transactional" and m["campaign_id"] is None for m in messages)
    assert db.outbox.count_documents({"event_type": "message_sent"}) == 4
    assert db.parked_notifications.count_documents({}) == 0


def test_unsubscribe_and_erasure(marketing, start_service, rpc):
    svc = marketing()
    start_service(FakeMember)
    start_service(FakeOrder)
    db = store_of(svc)
    consent(rpc, "mem_e", "email", True)
    wait_for(lambda: db.members.find_one({"_id": "mem_e"}), timeout=30)
    assert rpc.marketing.unsubscribe("mem_e", "email")["granted"] is False
    wait_for(lambda: db.inbox.count_documents({"event_type": "member_consent_changed"}) == 2,
             timeout=30, what="member's consent event")
    assert db.members.find_one({"_id": "mem_e"})["consents"]["email"]["granted"] is False
    rpc.order.emit("order_completed", {"order_id": "ord_e", "member_id": "mem_e", "total": 1,
                                       "currency": "CNY", "lines": [
                                           {"product_id": "p", "category": "c", "quantity": 1,
                                            "unit_price": 1, "discount": 0, "line_total": 1}]})
    wait_for(lambda: db.messages.find_one({"member_id": "mem_e"}), timeout=30)
    rpc.member.emit("member_erased", {"member_id": "mem_e"})
    wait_for(lambda: db.members.find_one({"_id": "mem_e"}).get("erased"), timeout=30)
    message = db.messages.find_one({"member_id": "mem_e"})
    assert message["body"] == "" and message["subject"] == "" and message["redacted"]
    consent(rpc, "mem_e", "email", True)  # a late event cannot bring consent back
    wait_for(lambda: db.inbox.count_documents({"event_type": "member_consent_changed"}) == 3,
             timeout=30)
    assert db.members.find_one({"_id": "mem_e"})["consents"] == {}

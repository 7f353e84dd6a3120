"""Payment decisions and the sandbox provider (in-memory books)."""
from datetime import timedelta

import pytest

from services.order.domain import order as domain
from services.order.domain import payment as p
from services.order.payments import MemoryLedger, SandboxProvider
from tests.order.unit.helpers import NOW, make_order

POLICY = p.RetryPolicy(max_attempts=3, base_seconds=2, max_seconds=5)


def confirmed(token="tok_visa"):
    order = make_order(token=token)
    domain.confirm(order, NOW)
    order["payment"]["attempts"] = 1
    return order


def test_backoff_doubles_and_is_capped():
    assert [POLICY.delay(n).total_seconds() for n in (1, 2, 3, 4)] == [2, 4, 5, 5]


def test_confirm_makes_payment_due_now():
    order = make_order()
    events = domain.confirm(order, NOW)
    assert events == [("order_confirmed", {"order_id": "ord_1"})]
    assert order["payment"]["state"] == "due" and order["payment"]["next_attempt_at"] == NOW
    assert p.payment_due(order, NOW)
    assert domain.confirm(order, NOW) == []  # twice: no second effect


def test_approved_payment_pays_with_full_capture():
    order = confirmed()
    result = SandboxProvider(MemoryLedger()).charge("ord_1", order["total"], "CNY", "tok_visa")
    events = p.apply_charge(order, result, NOW, POLICY)
    assert order["status"] == "paid" and order["payment"]["state"] == "captured"
    assert [r["kind"] for r in order["payments"]] == ["authorization", "capture"]
    (event_type, data), = events
    assert event_type == "order_paid" and data["payment_ref"].startswith("pay_sandbox")
    assert data["shipping_address"]["region"] == "Shanghai" and data["total"] == order["total"]


def test_partial_capture_is_never_accepted():
    order = confirmed()
    result = p.ChargeResult(p.APPROVED, records=[{"kind": "capture", "ref": "x", "amount": 1}])
    with pytest.raises(ValueError):
        p.apply_charge(order, result, NOW, POLICY)


def test_declined_payment_fails_then_cancels():
    order = confirmed("tok_decline_insufficient")
    result = SandboxProvider(MemoryLedger()).charge("ord_1", order["total"], "CNY",
                                                    "tok_decline_insufficient")
    events = p.apply_charge(order, result, NOW, POLICY)
    assert [e[0] for e in events] == ["payment_failed", "order_cancelled"]
    assert events[1][1] == {"order_id": "ord_1", "member_id": "mem_1", "reason": "payment_failed",
                            "was_paid": False}
    assert order["status"] == "cancelled"
    assert [h["status"] for h in order["history"]][-2:] == ["payment_failed", "cancelled"]


def test_timeout_schedules_retry_then_gives_up():
    order = confirmed("tok_timeout_99")
    result = p.ChargeResult(p.TIMEOUT, "provider_timeout")
    assert p.apply_charge(order, result, NOW, POLICY) == []
    assert order["status"] == "confirmed"
    assert order["payment"]["next_attempt_at"] == NOW + timedelta(seconds=2)
    order["payment"]["attempts"] = 3
    events = p.apply_charge(order, result, NOW, POLICY)
    assert events[0] == ("payment_failed", {"order_id": "ord_1", "reason": "provider_unavailable"})
    assert order["status"] == "cancelled" and order["payment"]["state"] == "abandoned"


def test_result_for_order_no_longer_confirmed_is_ignored():
    order = confirmed()
    order["status"] = "cancelled"
    assert p.apply_charge(order, p.ChargeResult(p.APPROVED), NOW, POLICY) == []


def test_payment_not_due_while_leased_or_before_time():
    order = confirmed()
    order["payment"]["lease_until"] = NOW + timedelta(seconds=10)
    assert not p.payment_due(order, NOW)
    order["payment"]["lease_until"] = None
    order["payment"]["next_attempt_at"] = NOW + timedelta(seconds=1)
    assert not p.payment_due(order, NOW)
    assert p.payment_due(order, NOW + timedelta(seconds=1))


def test_sandbox_is_idempotent_by_key():
    provider = SandboxProvider(MemoryLedger())
    first = provider.charge("ord_9", 500, "CNY", "tok_ok")
    again = provider.charge("ord_9", 500, "CNY", "tok_ok")
    assert first.payment_ref == again.payment_ref and first.outcome == p.APPROVED


def test_sandbox_timeout_token_times_out_n_times_then_approves():
    provider = SandboxProvider(MemoryLedger())
    outcomes = [provider.charge("ord_t", 500, "CNY", "tok_timeout_2").outcome for _ in range(4)]
    assert outcomes == [p.TIMEOUT, p.TIMEOUT, p.APPROVED, p.APPROVED]
    assert provider.charge("ord_u", 500, "CNY", "tok_timeout").outcome == p.TIMEOUT
    assert provider.charge("ord_u", 500, "CNY", "tok_timeout").outcome == p.APPROVED


def test_crash_between_capture_and_record_recovers_with_same_capture():
    provider = SandboxProvider(MemoryLedger())
    order = confirmed()
    lost = provider.charge("ord_1", order["total"], "CNY", "tok_visa")  # recorded nowhere: crash
    order["payment"]["attempts"] = 2  # the retry timer's claim
    again = provider.charge("ord_1", order["total"], "CNY", "tok_visa")
    p.apply_charge(order, again, NOW, POLICY)
    assert order["payment"]["ref"] == lost.payment_ref
    assert len([r for r in order["payments"] if r["kind"] == "capture"]) == 1


def test_sandbox_refund_idempotent_by_refund_id():
    provider = SandboxProvider(MemoryLedger())
    assert provider.refund("rfd_1", "pay_1", 300, "CNY")["ref"] == provider.refund(
        "rfd_1", "pay_1", 300, "CNY")["ref"]


def test_unknown_outcome_is_refused():
    with pytest.raises(ValueError):
        p.ChargeResult("maybe")

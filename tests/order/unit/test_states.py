"""The order state machine: every allowed and forbidden move, forward jumps, the past."""
from datetime import datetime, timezone

import pytest

from services.order.domain import states as s

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)

ALLOWED_PAIRS = [(a, b) for a, targets in s.ALLOWED.items() for b in targets]
ALL_PAIRS = [(a, b) for a in s.STATES for b in s.STATES]


@pytest.mark.parametrize("current,target", ALLOWED_PAIRS)
def test_allowed_moves_apply_and_end_in_target(current, target):
    order = {"status": current, "history": []}
    entered = s.advance(order, target, NOW, "test")
    assert entered and entered[-1] in (target, s.COMPLETED)
    assert order["status"] == entered[-1]
    assert [h["status"] for h in order["history"]] == entered
    assert all(h["at"] == "2026-11-26T12:00:00.000Z" for h in order["history"])


@pytest.mark.parametrize("current,target", [p for p in ALL_PAIRS if p not in ALLOWED_PAIRS])
def test_other_moves_are_ignored_or_refused(current, target):
    order = {"status": current, "history": []}
    past = (target == current
            or (current in s.RANK and target in s.RANK and s.RANK[target] < s.RANK[current])
            or (current in (s.REJECTED, s.CANCELLED) and target in s.RANK))
    if past:
        assert s.advance(order, target, NOW, "late") == []
        assert order == {"status": current, "history": []}
    else:
        with pytest.raises(s.IllegalTransition):
            s.advance(order, target, NOW, "bad")
        assert order["status"] == current


def test_forward_jump_records_each_milestone_passed():
    order = {"status": s.PAID, "history": []}
    assert s.advance(order, s.DELIVERED, NOW, "shipment_delivered") == [
        s.SHIPPED, s.DELIVERED, s.COMPLETED]
    assert order["status"] == s.COMPLETED


def test_out_of_order_events_after_jump_are_ignored():
    order = {"status": s.FULFILLING, "history": []}
    s.advance(order, s.DELIVERED, NOW, "delivered first")
    assert s.advance(order, s.SHIPPED, NOW, "dispatched late") == []
    assert s.advance(order, s.FULFILLING, NOW, "created late") == []
    assert order["status"] == s.COMPLETED


def test_delivered_completes_at_once():
    order = {"status": s.SHIPPED, "history": []}
    assert s.advance(order, s.DELIVERED, NOW, "x") == [s.DELIVERED, s.COMPLETED]


@pytest.mark.parametrize("state", [s.SHIPPED, s.DELIVERED, s.COMPLETED, s.REFUNDED, s.REJECTED])
def test_cannot_cancel_after_dispatch_or_terminal(state):
    assert not s.can_cancel(state)
    if state not in (s.REJECTED,):
        with pytest.raises(s.IllegalTransition):
            s.advance({"status": state, "history": []}, s.CANCELLED, NOW, "member")


def test_cancelled_is_terminal():
    order = {"status": s.CANCELLED, "history": []}
    for target in (s.CONFIRMED, s.PAID, s.SHIPPED, s.DELIVERED):
        assert s.advance(order, target, NOW, "late") == []
    with pytest.raises(s.IllegalTransition):
        s.advance(order, s.REJECTED, NOW, "late")


def test_unknown_state_is_an_error():
    with pytest.raises(ValueError):
        s.decide("lost", s.PAID)


def test_timestamps_keep_first_entry():
    order = {"status": s.COMPLETED, "history": []}
    s.advance(order, s.PARTIALLY_REFUNDED, NOW, "r1")
    later = NOW.replace(hour=13)
    s.advance(order, s.PARTIALLY_REFUNDED, later, "r2")
    assert order["timestamps"][s.PARTIALLY_REFUNDED] == "2026-11-26T12:00:00.000Z"
    assert len(order["history"]) == 2

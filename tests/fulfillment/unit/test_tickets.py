from datetime import datetime, timedelta, timezone

import pytest

from services.fulfillment.domain import tickets as tkt
from shared.errors import Conflict
from shared.events.base import spec_for

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
SLA = tkt.TicketSla(first_response=timedelta(hours=4), resolution=timedelta(hours=72))


def opened():
    doc, events = tkt.open_ticket("tkt_1", "mem_1", "ord_1", "late_delivery", "Where is it?",
                                  "msg_1", SLA, T0)
    return doc, events


def check(events):
    for event_type, data in events:
        spec_for("fulfillment", event_type).validate(data)
        assert not ({"message", "text", "resolution"} & set(data))  # no free text in events
    return events


def test_open_sets_deadlines_and_publishes_without_text():
    doc, events = opened()
    assert doc["first_response_due_at"] == T0 + timedelta(hours=4)
    assert doc["resolution_due_at"] == T0 + timedelta(hours=72)
    (event_type, data), = check(events)
    assert event_type == "ticket_opened" and data["category"] == "late_delivery"


def test_first_reply_within_sla():
    doc, _ = opened()
    changes, entry, events = tkt.reply(doc, "On its way", "msg_2", T0 + timedelta(hours=1))
    assert changes["first_response_seconds"] == 3600
    assert changes["first_response_breached"] is False
    assert entry["author"] == "agent" and entry["text"] == "On its way"
    (_, data), = check(events)
    assert data["first_response"] is True and data["sla_breached"] is False


def test_first_reply_after_sla_is_a_breach_and_later_replies_are_not_first():
    doc, _ = opened()
    changes, _, events = tkt.reply(doc, "Sorry", "msg_2", T0 + timedelta(hours=5))
    assert changes["first_response_breached"] is True and events[0][1]["sla_breached"] is True
    doc.update(changes)
    changes, _, events = tkt.reply(doc, "More", "msg_3", T0 + timedelta(hours=6))
    assert "first_response_at" not in changes
    assert events[0][1]["first_response"] is False


def test_resolve_records_resolution_time_and_breach():
    doc, _ = opened()
    doc.update(tkt.reply(doc, "ok", "m", T0 + timedelta(hours=1))[0])
    changes, events = tkt.resolve(doc, "Refunded shipping", T0 + timedelta(hours=10))
    assert changes["resolution_seconds"] == 36000 and changes["resolution_breached"] is False
    (_, data), = check(events)
    assert data["resolution_seconds"] == 36000
    doc.update(changes)
    with pytest.raises(Conflict):
        tkt.resolve(doc, "again", T0)
    with pytest.raises(Conflict):
        tkt.reply(doc, "after", "m", T0)


def test_resolve_without_reply_counts_as_first_response():
    doc, _ = opened()
    changes, _ = tkt.resolve(doc, "done", T0 + timedelta(hours=80))
    assert changes["first_response_breached"] is True and changes["resolution_breached"] is True
    assert changes["first_response_seconds"] == 80 * 3600


def test_timer_flags_breaches_once():
    doc, _ = opened()
    assert tkt.breaches_due(doc, T0 + timedelta(hours=4)) == {}
    changes = tkt.breaches_due(doc, T0 + timedelta(hours=5))
    assert changes == {"first_response_breached": True}
    doc.update(changes)
    assert tkt.breaches_due(doc, T0 + timedelta(hours=6)) == {}
    assert tkt.breaches_due(doc, T0 + timedelta(hours=73)) == {"resolution_breached": True}


def test_a_reply_after_a_timer_breach_stays_breached():
    doc, _ = opened()
    doc.update(tkt.breaches_due(doc, T0 + timedelta(hours=5)))
    changes, _, _ = tkt.reply(doc, "late", "m", T0 + timedelta(hours=5))
    assert changes["first_response_breached"] is True


def test_answered_tickets_are_not_flagged_for_first_response():
    doc, _ = opened()
    doc.update(tkt.reply(doc, "ok", "m", T0 + timedelta(hours=1))[0])
    assert tkt.breaches_due(doc, T0 + timedelta(hours=10)) == {}


def test_resolved_tickets_are_never_flagged():
    doc, _ = opened()
    doc.update(tkt.resolve(doc, "done", T0 + timedelta(hours=1))[0])
    assert tkt.breaches_due(doc, T0 + timedelta(days=10)) == {}


def test_redaction_replaces_every_text():
    doc, _ = opened()
    assert [m["text"] for m in tkt.redacted_messages(doc["messages"])] == [tkt.REDACTED]

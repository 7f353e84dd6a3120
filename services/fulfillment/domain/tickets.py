"""Customer-service tickets (complaints) and their response-time SLAs.

    open ──reply──▶ answered ──reply──▶ answered
      └──────────┴──resolve──▶ resolved   (terminal)

First response: the time from opening to the first customer-service reply;
resolution: from opening to resolve. Each is compared with its deadline
(opened_at + the configured SLA). A deadline passed without the answer is a
breach, flagged once — by the SLA timer while the ticket waits, or at the late
reply/resolve. Texts stay here; events carry ids and the category only."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.fulfillment.domain import Event
from shared.clock import to_iso
from shared.errors import Conflict

OPEN = "open"
ANSWERED = "answered"
RESOLVED = "resolved"
STATUSES = (OPEN, ANSWERED, RESOLVED)

CATEGORIES = ("late_delivery", "damaged_item", "wrong_item", "missing_item", "return", "refund",
              "payment", "account", "other")

REDACTED = "[redacted]"


@dataclass(frozen=True)
class TicketSla:
    first_response: timedelta
    resolution: timedelta


def _ref(ticket: dict) -> dict:
    return {"ticket_id": ticket["_id"], "member_id": ticket["member_id"],
            "order_id": ticket.get("order_id"), "category": ticket["category"]}


def _seconds(start: datetime, end: datetime) -> int:
    return max(0, int((end - start).total_seconds()))


def open_ticket(ticket_id: str, member_id: str, order_id: str | None, category: str,
                message: str, message_id: str, sla: TicketSla,
                now: datetime) -> tuple[dict, list[Event]]:
    doc = {
        "_id": ticket_id, "member_id": member_id, "order_id": order_id, "category": category,
        "status": OPEN,
        "messages": [{"id": message_id, "author": "member", "text": message, "at": now}],
        "resolution": None, "opened_at": now, "updated_at": now,
        "first_response_due_at": now + sla.first_response,
        "resolution_due_at": now + sla.resolution,
        "first_response_at": None, "first_response_seconds": None,
        "first_response_breached": None, "resolved_at": None, "resolution_seconds": None,
        "resolution_breached": None, "redacted": False,
    }
    return doc, [("ticket_opened", {**_ref(doc),
                                    "first_response_due_at": to_iso(doc["first_response_due_at"]),
                                    "resolution_due_at": to_iso(doc["resolution_due_at"])})]


def reply(ticket: dict, message: str, message_id: str,
          now: datetime) -> tuple[dict, dict, list[Event]]:
    """A customer-service reply: returns ($set changes, the message, events)."""
    if ticket["status"] == RESOLVED:
        raise Conflict(f"ticket {ticket['_id']} is resolved",
                       {"ticket_id": ticket["_id"], "status": ticket["status"]})
    entry = {"id": message_id, "author": "agent", "text": message, "at": now}
    changes: dict = {"status": ANSWERED, "updated_at": now}
    data = _ref(ticket)
    if ticket.get("first_response_at") is None:
        seconds = _seconds(ticket["opened_at"], now)
        breached = bool(ticket.get("first_response_breached")) or now > ticket["first_response_due_at"]
        changes.update(first_response_at=now, first_response_seconds=seconds,
                       first_response_breached=breached)
        data.update(first_response=True, response_seconds=seconds, sla_breached=breached)
    else:
        data["first_response"] = False
    return changes, entry, [("ticket_replied", data)]


def resolve(ticket: dict, resolution: str, now: datetime) -> tuple[dict, list[Event]]:
    if ticket["status"] == RESOLVED:
        raise Conflict(f"ticket {ticket['_id']} is already resolved",
                       {"ticket_id": ticket["_id"], "status": ticket["status"]})
    seconds = _seconds(ticket["opened_at"], now)
    breached = bool(ticket.get("resolution_breached")) or now > ticket["resolution_due_at"]
    changes = {"status": RESOLVED, "resolution": resolution, "resolved_at": now,
               "resolution_seconds": seconds, "resolution_breached": breached, "updated_at": now}
    if ticket.get("first_response_at") is None:
        # Resolved without a reply: the resolution is the first response.
        changes.update(first_response_at=now, first_response_seconds=seconds,
                       first_response_breached=bool(ticket.get("first_response_breached"))
                       or now > ticket["first_response_due_at"])
    return changes, [("ticket_resolved", {**_ref(ticket), "resolution_seconds": seconds,
                                          "sla_breached": breached})]


def breaches_due(ticket: dict, now: datetime) -> dict:
    """The SLA timer's rule: flag a deadline that passed while the ticket
    waited, once ({} when nothing is newly breached)."""
    changes: dict = {}
    if ticket["status"] == RESOLVED:
        return changes
    if (ticket.get("first_response_at") is None and ticket.get("first_response_breached") is None
            and now > ticket["first_response_due_at"]):
        changes["first_response_breached"] = True
    if ticket.get("resolution_breached") is None and now > ticket["resolution_due_at"]:
        changes["resolution_breached"] = True
    return changes


def redacted_messages(messages: list[dict]) -> list[dict]:
    return [{**m, "text": REDACTED} for m in messages]

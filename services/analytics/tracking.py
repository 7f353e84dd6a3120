"""The tracking collector: `POST /track` bodies become validated envelopes.

A body is one event object, a list of them, or `{"events": [...]}`. Each event
carries `event_type` (one of the five tracking events), its payload fields
(`session_id`, `occurred_at`, optional `member_id`, ...) and optionally an
`event_id` so a client retrying a batch is not counted twice."""
from __future__ import annotations

from marshmallow import ValidationError

from services.analytics.store import TRACKING_TYPES, schema_of
from shared.errors import ValidationFailed
from shared.events import TRACKING_SOURCE
from shared.events.base import SCHEMA_VERSION
from shared.ids import new_id


def events_of(body, max_batch: int, currency: str) -> list[dict]:
    """Envelopes for every event of `body`, or ValidationFailed naming each bad field
    (prefixed `events.<i>.` in a batch). All or nothing: one bad event rejects the batch."""
    if isinstance(body, dict) and "events" in body:
        items, prefix = body["events"], "events."
        if not isinstance(items, list):
            raise ValidationFailed.field("events", "Must be a list of events.")
    elif isinstance(body, list):
        items, prefix = body, "events."
    elif isinstance(body, dict):
        items, prefix = [body], ""
    else:
        raise ValidationFailed.field("_schema", "The body must be a JSON object or a list.")
    if not items:
        raise ValidationFailed.field("events", "At least one event is needed.")
    if len(items) > max_batch:
        raise ValidationFailed.field("events", f"At most {max_batch} events per request.")
    errors: dict = {}
    envelopes = []
    for index, item in enumerate(items):
        where = f"{prefix}{index}." if prefix else ""
        problems = _check(item, currency)
        if problems:
            errors.update({f"{where}{k}": v for k, v in problems.items()})
            continue
        data = {k: v for k, v in item.items() if k not in ("event_type", "event_id")}
        envelopes.append({
            "event_id": item.get("event_id") or new_id("evt"),
            "event_type": item["event_type"], "schema_version": SCHEMA_VERSION,
            "source": TRACKING_SOURCE, "occurred_at": item["occurred_at"],
            "correlation_id": None, "causation_id": None, "data": data})
    if errors:
        raise ValidationFailed.fields(errors, "Invalid tracking event(s).")
    return envelopes


def _check(item, currency: str) -> dict:
    if not isinstance(item, dict):
        return {"_schema": ["Must be an object."]}
    event_type = item.get("event_type")
    if event_type not in TRACKING_TYPES:
        return {"event_type": [f"Must be one of: {', '.join(TRACKING_TYPES)}."]}
    event_id = item.get("event_id")
    if event_id is not None and (not isinstance(event_id, str) or not 0 < len(event_id) <= 200):
        return {"event_id": ["Must be a non-empty string of at most 200 characters."]}
    data = {k: v for k, v in item.items() if k not in ("event_type", "event_id")}
    try:
        schema_of(TRACKING_SOURCE, event_type).check(data)
    except ValidationError as exc:
        return exc.messages
    if data.get("currency") not in (None, currency):
        return {"currency": [f"Must be {currency}."]}
    return {}

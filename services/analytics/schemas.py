"""What analytics accepts at its edges: the schemas of its RPC and HTTP arguments,
the tracking collector's bodies (`POST /track`: `events_of`) and every event's payload
schema, compiled once (`schema_of`).

A `/track` body is one event object, a list of them, or `{"events": [...]}`. Each
event carries `event_type` (one of the five tracking events), its payload fields
(`session_id`, `occurred_at`, optional `member_id`, ...) and optionally an
`event_id` so a client retrying a batch is not counted twice."""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

from shared.errors import ValidationFailed
from shared.events import TRACKING_SOURCE
from shared.events.base import REGISTRY, SCHEMA_VERSION, TOLERATED_MISSING, load_all
from shared.events.fields import Id
from shared.ids import new_id
from shared.validation import Precompiled

TRACKING_TYPES = ("session_started", "page_viewed", "product_viewed", "cart_updated",
                  "checkout_started")


class Limit(Schema):
    limit = fields.Int(strict=True, load_default=10, validate=validate.Range(min=1, max=500))


class Cohorts(Schema):
    period = fields.Str(load_default="month", validate=validate.OneOf(["month", "week"]))
    first = fields.Str(load_default=None, allow_none=True, validate=validate.Length(min=1, max=10))
    last = fields.Str(load_default=None, allow_none=True, validate=validate.Length(min=1, max=10))


class ExperimentKey(Schema):
    experiment_key = fields.Str(required=True, validate=validate.Length(min=1, max=200))


class TrackItem(Schema):
    """The collector's own envelope fields; the rest is the event's payload."""

    class Meta:
        unknown = "include"

    event_type = fields.Str(required=True)
    event_id = Id(load_default=None, validate=validate.Length(max=200))


# --- event payloads --------------------------------------------------------------------

_SCHEMAS: dict[tuple[str, str], Precompiled | None] = {}
_PARTIAL: dict[tuple[str, str], tuple] = {}


def schema_of(source: str, event_type: str) -> Precompiled | None:
    """The event's data schema, compiled once (None for an unknown event): building a
    marshmallow schema costs more than loading a payload with it, and loading costs
    more than the event's whole fold (`shared.validation.Precompiled`)."""
    key = (source, event_type)
    if key not in _SCHEMAS:
        spec = REGISTRY.get(key) or (load_all() and REGISTRY.get(key))
        if spec is None:
            return None
        schema = spec.schema()
        _SCHEMAS[key] = Precompiled(schema)
        _PARTIAL[key] = tuple(n for n in TOLERATED_MISSING if n in schema.fields)
    return _SCHEMAS[key]


def tolerated_missing(source: str, event_type: str) -> tuple:
    """The fields of a known event a consumer accepts missing (`TOLERATED_MISSING`)."""
    schema_of(source, event_type)
    return _PARTIAL[(source, event_type)]


# --- the tracking collector ------------------------------------------------------------

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

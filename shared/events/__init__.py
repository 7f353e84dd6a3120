"""Every event's envelope and payload schema, and the documents generated from them.

`python -m shared.events markdown` writes docs/events.md and
`python -m shared.events asyncapi` writes docs/asyncapi.json; a contract test
fails when either is stale.
"""
from __future__ import annotations

import json
from typing import Any

from marshmallow import RAISE, Schema, validate
from marshmallow import fields as mfields  # `fields` is our submodule's name here

from shared.events.base import (
    REGISTRY,
    SCHEMA_VERSION,
    Envelope,
    EventData,
    EventSpec,
    event,
    load_all,
    spec_for,
    subscriptions_of,
)

TRACKING_SOURCE = "tracking"  # collected over HTTP by analytics, never on the broker

__all__ = [
    "REGISTRY",
    "TRACKING_SOURCE",
    "Envelope",
    "EventData",
    "EventSpec",
    "asyncapi",
    "consumers_table",
    "event",
    "events_markdown",
    "example_envelope",
    "json_schema",
    "load_all",
    "producer_consumer_markdown",
    "spec_for",
    "subscriptions_of",
]


def consumers_table() -> list[tuple[str, str, list[str]]]:
    """(source, event_type, consumers) for every declared event, sorted."""
    load_all()
    return sorted((s.source, s.event_type, sorted(s.consumers)) for s in REGISTRY.values())


# --- marshmallow → JSON Schema ---------------------------------------------------------

def json_schema(schema: Schema | type[Schema]) -> dict[str, Any]:
    """The JSON Schema (draft 7, as AsyncAPI 2.6 uses) of a marshmallow schema."""
    instance = schema() if isinstance(schema, type) else schema
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in instance.fields.items():
        key = field.data_key or name
        properties[key] = field_schema(field)
        if field.required:
            required.append(key)
    out: dict[str, Any] = {"type": "object"}
    doc = (type(instance).__doc__ or "").strip()
    if doc:
        out["description"] = " ".join(doc.split())
    out["properties"] = properties
    if required:
        out["required"] = required
    out["additionalProperties"] = instance.unknown != RAISE  # read tolerantly
    return out


def field_schema(field: mfields.Field) -> dict[str, Any]:
    """The JSON Schema of one marshmallow field, with its validators and nullability."""
    if isinstance(field, mfields.Nested):
        out = json_schema(field.schema)
        if field.many:
            out = {"type": "array", "items": out}
    elif isinstance(field, mfields.List):
        out = {"type": "array", "items": field_schema(field.inner)}
    elif isinstance(field, mfields.Dict):
        out = {"type": "object"}
        if field.value_field is not None:
            out["additionalProperties"] = field_schema(field.value_field)
    elif isinstance(field, mfields.Boolean):
        out = {"type": "boolean"}
    elif isinstance(field, mfields.Integer):
        out = {"type": "integer"}
    elif isinstance(field, mfields.Number):
        out = {"type": "number"}
    elif isinstance(field, mfields.DateTime):
        out = {"type": "string", "format": "date-time"}
    elif isinstance(field, mfields.String):
        out = {"type": "string"}
    else:
        out = {}
    description = field.metadata.get("description") or _own_doc(field)
    if description:
        out = {"description": description, **out}
    for validator in field.validators:
        out.update(_validator_schema(validator, out.get("type")))
    if field.allow_none:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _own_doc(field: mfields.Field) -> str:
    """The short `description` our own field classes (shared.events.fields) carry."""
    return getattr(type(field), "description", "") or ""


def _validator_schema(validator: Any, type_: str | None) -> dict[str, Any]:
    if isinstance(validator, validate.Length):
        lo, hi = ("minItems", "maxItems") if type_ == "array" else ("minLength", "maxLength")
        if validator.equal is not None:
            return {lo: validator.equal, hi: validator.equal}
        return {k: v for k, v in ((lo, validator.min), (hi, validator.max)) if v is not None}
    if isinstance(validator, validate.Range):
        out: dict[str, Any] = {}
        if validator.min is not None:
            out["minimum" if validator.min_inclusive else "exclusiveMinimum"] = validator.min
        if validator.max is not None:
            out["maximum" if validator.max_inclusive else "exclusiveMaximum"] = validator.max
        return out
    if isinstance(validator, validate.OneOf):
        return {"enum": list(validator.choices)}
    if isinstance(validator, validate.Regexp):
        return {"pattern": validator.regex.pattern}
    if isinstance(validator, validate.Equal):
        return {"const": validator.comparable}
    return {}


# --- Markdown --------------------------------------------------------------------------

def producer_consumer_markdown() -> str:
    """The producer → consumers table, as Markdown."""
    rows = ["| Event | Producer | Consumers |", "|---|---|---|"]
    rows += [f"| `{event_type}` | {source} | {', '.join(consumers)} |"
             for source, event_type, consumers in consumers_table()]
    return "\n".join(rows) + "\n"


def events_markdown() -> str:
    """docs/events.md: the producer → consumers table, then every payload's fields."""
    out = [
        "# Events",
        "",
        ("<!-- Generated from shared/events/ by `python -m shared.events markdown`."
         " Do not edit. -->"),
        "",
        ("Every event travels in the envelope of DESIGN.md (\"Events\"), on the"
         " `<source>.events` exchange with its event type as routing key. Payloads are read"
         " tolerantly: fields beyond these are welcome. Source `tracking` is the exception:"
         " those events reach analytics over `POST /track`, not the broker."),
        "",
        "## Producer → consumers",
        "",
        producer_consumer_markdown(),
        "## Payloads",
    ]
    for source, event_type, consumers in consumers_table():
        spec = REGISTRY[(source, event_type)]
        out += ["", f"### `{event_type}` ({source})", ""]
        if spec.description:
            out += [" ".join(spec.description.split()), ""]
        out += [f"Consumers: {', '.join(consumers)}.", "",
                "| Field | Type | Required | Notes |", "|---|---|---|---|"]
        out += [f"| `{path}` | {type_text} | {'yes' if req else 'no'} | {notes} |"
                for path, type_text, req, notes in _field_rows(json_schema(spec.schema))]
        out += ["", "Example:", "", "```json",
                json.dumps(spec.example, indent=2, ensure_ascii=False), "```"]
    return "\n".join(out) + "\n"


def _field_rows(schema: dict[str, Any], prefix: str = "") -> list[tuple[str, str, bool, str]]:
    """(path, type, required in its object, notes) per property; nested as `lines[].sku`."""
    rows = []
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        path = prefix + name
        rows.append((path, _type_text(prop), name in required, _notes(prop)))
        inner, suffix = prop, "."
        if "array" in _types(prop) and "properties" in prop.get("items", {}):
            inner, suffix = prop["items"], "[]."
        if "properties" in inner:
            rows += _field_rows(inner, path + suffix)
    return rows


def _types(prop: dict[str, Any]) -> list[str]:
    type_ = prop.get("type", [])
    return [type_] if isinstance(type_, str) else list(type_)


def _type_text(prop: dict[str, Any]) -> str:
    types = _types(prop)
    main = next((t for t in types if t != "null"), "any")
    if main == "array":
        main = f"array of {_type_text(prop.get('items', {}))}"
    if "enum" in prop:
        main += " (" + " \\| ".join(f"`{v}`" for v in prop["enum"] if v is not None) + ")"
    return main + (" or null" if "null" in types else "")


def _notes(prop: dict[str, Any]) -> str:
    notes = []
    if "properties" not in prop and prop.get("description"):
        notes.append(prop["description"].rstrip("."))
    if prop.get("minLength") is not None and prop.get("minLength") == prop.get("maxLength"):
        notes.append(f"length {prop['minLength']}")
    elif prop.get("minLength") == 1 and "maxLength" not in prop:
        notes.append("non-empty")
    else:
        notes += [text.format(prop[key]) for key, text in (
            ("minLength", "length ≥ {}"), ("maxLength", "length ≤ {}")) if key in prop]
    bounds = [("minimum", "≥ {}"), ("exclusiveMinimum", "> {}"), ("maximum", "≤ {}"),
              ("exclusiveMaximum", "< {}"), ("minItems", "≥ {} items"),
              ("maxItems", "≤ {} items")]
    notes += [text.format(prop[key]) for key, text in bounds if key in prop]
    if "pattern" in prop and not prop.get("description"):
        notes.append(f"matches `{prop['pattern']}`")
    return "; ".join(notes).replace("|", "\\|")


# --- AsyncAPI ----------------------------------------------------------------------------

def asyncapi() -> dict[str, Any]:
    """An AsyncAPI 2.6 document of every event: one channel per `<source>.events/<type>`."""
    load_all()
    schemas: dict[str, Any] = {"Envelope": json_schema(Envelope)}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    tracking: list[dict[str, str]] = []
    for source, event_type, consumers in consumers_table():
        spec = REGISTRY[(source, event_type)]
        key = f"{source}.{event_type}"
        schemas[key] = json_schema(spec.schema)
        data_ref = {"$ref": f"#/components/schemas/{key}"}
        message: dict[str, Any] = {
            "name": event_type,
            "title": spec.schema.__name__,
            "summary": " ".join(spec.description.split()),
            "contentType": "application/json",
            "tags": [{"name": source}],
            "x-source": source,
            "x-consumers": consumers,
        }
        if source == TRACKING_SOURCE:
            message["payload"] = data_ref
            message["examples"] = [{"name": "example", "payload": spec.example}]
            messages[key] = message
            tracking.append({"$ref": f"#/components/messages/{key}"})
            continue
        message["payload"] = {"allOf": [
            {"$ref": "#/components/schemas/Envelope"},
            {"type": "object", "properties": {
                "event_type": {"const": event_type}, "source": {"const": source},
                "schema_version": {"const": spec.version}, "data": data_ref}},
        ]}
        message["examples"] = [{"name": "example", "payload": example_envelope(spec)}]
        messages[key] = message
        exchange = f"{source}.events"
        channels[f"{exchange}/{event_type}"] = {
            "description": f"`{event_type}` on the `{exchange}` exchange (routing key "
                           f"`{event_type}`); consumed by {', '.join(consumers)}.",
            "servers": ["broker"],
            "subscribe": {
                "operationId": f"{source}_{event_type}",
                "summary": f"{source} publishes {event_type}",
                "message": {"$ref": f"#/components/messages/{key}"},
            },
            "bindings": {"amqp": {
                "is": "routingKey",
                "exchange": {"name": exchange, "type": "topic", "durable": True,
                             "autoDelete": False, "vhost": "/"},
                "bindingVersion": "0.2.0",
            }},
        }
    if tracking:
        channels["track"] = {
            "description": "Tracking events POSTed to analytics' `/track` by browsers and"
                           " apps; they never travel on the broker.",
            "servers": ["analytics-http"],
            "publish": {
                "operationId": "track",
                "summary": "A client reports a tracking event",
                "message": {"oneOf": tracking},
            },
            "bindings": {"http": {"type": "request", "method": "POST",
                                  "bindingVersion": "0.1.0"}},
        }
    return {
        "asyncapi": "2.6.0",
        "id": "urn:shop:events",
        "info": {
            "title": "Shop suite events",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "Generated from shared/events/ by `python -m shared.events"
                           " asyncapi`. Every event is published on its source's nameko"
                           " event exchange with the event type as routing key; delivery"
                           " is at-least-once and unordered; consumers read tolerantly.",
        },
        "servers": {
            "broker": {"url": "amqp://127.0.0.1:5672/", "protocol": "amqp",
                       "protocolVersion": "0.9.1",
                       "description": "RabbitMQ (AMQP_URI)"},
            "analytics-http": {"url": "http://127.0.0.1:8006", "protocol": "http",
                               "description": "The analytics service's HTTP port"},
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "components": {"schemas": schemas, "messages": messages},
    }


def example_envelope(spec: EventSpec) -> dict[str, Any]:
    """`spec`'s example payload inside a plausible envelope."""
    return {
        "event_id": f"evt_01JDF0K2M4N6P8Q0R2S4T6V8W0_{spec.event_type}",
        "event_type": spec.event_type,
        "schema_version": spec.version,
        "source": spec.source,
        "occurred_at": "2026-11-26T12:00:00Z",
        "correlation_id": "cor_01JDF0K2M4N6P8Q0R2S4T6V8W1",
        "causation_id": None,
        "data": spec.example,
    }

"""The event envelope and the registry of every event's `data` schema.

Each publishing service declares its events in `shared/events/<service>.py`
with the `event` decorator; that module is the single source of truth for the
payload (required fields), its consumers and a valid example.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

SCHEMA_VERSION = 1
# Required of producers, optional to consumers: the aggregate version (shared/storage/readmodel.py)
# came after events already in queues, outboxes and analytics' raw store.
TOLERATED_MISSING = ("version",)


class EventData(Schema):
    """Base of every event payload schema: more fields are welcome."""

    class Meta:
        unknown = INCLUDE


class Envelope(Schema):
    """The envelope every event travels in (DESIGN.md, "Events")."""

    class Meta:
        unknown = INCLUDE  # read tolerantly: newer envelopes may carry more

    event_id = fields.Str(required=True, validate=validate.Length(min=1, max=200))
    event_type = fields.Str(required=True, validate=validate.Length(min=1, max=100))
    schema_version = fields.Int(required=True, validate=validate.Range(min=1))
    source = fields.Str(required=True, validate=validate.Length(min=1, max=100))
    occurred_at = fields.Str(required=True, validate=validate.Regexp(
        r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$",
        error="Not an ISO 8601 UTC timestamp."))
    correlation_id = fields.Str(load_default=None, allow_none=True)
    causation_id = fields.Str(load_default=None, allow_none=True)
    data = fields.Dict(required=True)


@dataclass(frozen=True)
class EventSpec:
    source: str
    event_type: str
    schema: type[EventData]
    consumers: tuple[str, ...]
    example: dict[str, Any]
    description: str = ""
    version: int = SCHEMA_VERSION
    tags: tuple[str, ...] = field(default=())

    def validate(self, data: dict) -> dict:
        """Return the loaded payload, or raise marshmallow's ValidationError."""
        return _instance_of(self.schema).load(data)

    def validate_received(self, data: dict) -> dict:
        """`validate` for a consumer: fields added as required later (`TOLERATED_MISSING`)
        may be missing from events published before them, still in flight or replayed."""
        schema = _instance_of(self.schema)
        return schema.load(data, partial=tuple(n for n in TOLERATED_MISSING if n in schema.fields))


# Building a marshmallow schema costs several times loading a payload with it
# (it deep-copies every declared field), and every emitted or ingested event is
# validated: one instance per schema, reused (`load` keeps no state between calls).
_INSTANCES: dict[type, Schema] = {}


def _instance_of(schema: type[Schema]) -> Schema:
    instance = _INSTANCES.get(schema)
    if instance is None:
        instance = _INSTANCES[schema] = schema()
    return instance


REGISTRY: dict[tuple[str, str], EventSpec] = {}


def event(source: str, event_type: str, *, consumers: list[str] | tuple[str, ...],
          example: dict[str, Any]):
    """Class decorator registering an `EventData` schema as `source`'s event."""

    def register(schema: type[EventData]) -> type[EventData]:
        key = (source, event_type)
        if key in REGISTRY:
            raise ValueError(f"event {source}.{event_type} declared twice")
        REGISTRY[key] = EventSpec(
            source=source, event_type=event_type, schema=schema,
            consumers=tuple(consumers), example=example,
            description=(schema.__doc__ or "").strip(),
        )
        return schema

    return register


def spec_for(source: str, event_type: str) -> EventSpec:
    load_all()
    try:
        return REGISTRY[(source, event_type)]
    except KeyError:
        raise KeyError(f"no schema for event {source}.{event_type}") from None


def subscriptions_of(service: str) -> list[EventSpec]:
    """Every event the catalog says `service` consumes."""
    load_all()
    return [s for s in REGISTRY.values() if service in s.consumers]


def load_all() -> dict[tuple[str, str], EventSpec]:
    from shared.events import analytics, catalog, fulfillment, marketing, member, order  # noqa: F401  (registration by import)
    return REGISTRY


__all__ = ["Envelope", "EventData", "EventSpec", "REGISTRY", "ValidationError",
           "event", "load_all", "spec_for", "subscriptions_of", "fields", "validate"]

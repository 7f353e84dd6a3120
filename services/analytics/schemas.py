"""Marshmallow schemas of analytics' RPC and HTTP payloads."""
from __future__ import annotations

from marshmallow import Schema, fields, validate

from shared.events.fields import Id


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

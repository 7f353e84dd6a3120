"""Validation at the edge: marshmallow errors become ValidationFailed naming
every bad field, before anything is written."""
from __future__ import annotations

import math

from marshmallow import Schema, ValidationError

from shared.errors import ValidationFailed


def load(schema: Schema, payload, *, partial=False) -> dict:
    if not isinstance(payload, dict):
        raise ValidationFailed("The payload must be an object.",
                               {"fields": {"_schema": ["must be an object"]}})
    try:
        return schema.load(payload, partial=partial)
    except ValidationError as exc:
        raise ValidationFailed.fields(exc.messages) from None


class Precompiled:
    """`schema.load` as a yes/no check, compiled once for the field kinds event payloads
    use (strings, strict integers, numbers, booleans, dicts, lists, nested shapes with
    Length, Range, Regexp and OneOf validators): a payload the compiled check passes
    is one `schema.load` accepts. Anything it cannot vouch for (another field kind or
    validator, a schema hook, a value it does not pass) goes to `schema.load`, which
    decides and names the errors, so the answer is always marshmallow's. For the ingest
    paths, where building marshmallow's result for every event costs more than the rest
    of the event's work."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.fast = _compile_schema(schema)

    def check(self, data, partial: tuple = ()) -> None:
        """None if `schema.load(data, partial=partial)` succeeds, else its ValidationError."""
        if self.fast is None or not self.fast(data, partial):
            self.schema.load(data, partial=partial)


def _compile_schema(schema: Schema):
    """A predicate `(data, partial) -> bool` that is only True for data the schema loads,
    or None when the schema has something the predicate cannot decide."""
    from marshmallow import RAISE

    if schema.many or any(schema._hooks.values()):
        return None
    checks = []
    for name, field in schema.load_fields.items():
        value_ok = _compile_field(field)
        if value_ok is None:
            return None
        checks.append((field.data_key or name, name, field.required, value_ok))
    known = {key for key, _, _, _ in checks}
    closed = schema.unknown == RAISE

    def fast(data, partial=()) -> bool:
        if type(data) is not dict or (closed and not data.keys() <= known):
            return False
        for key, name, required, value_ok in checks:
            if key in data:
                if not value_ok(data[key]):
                    return False
            elif required and name not in partial:
                return False
        return True

    return fast


def _compile_field(field):
    """A predicate `(value) -> bool` for a present value, or None."""
    from marshmallow import fields, validate

    def same(method: str, base) -> bool:
        return getattr(type(field), method) is getattr(base, method)

    kind = None
    if isinstance(field, fields.String) and same("_deserialize", fields.String):
        kind = lambda v: type(v) is str  # noqa: E731 (marshmallow also takes bytes: JSON has none)
    elif isinstance(field, fields.Integer) and same("_validated", fields.Integer) \
            and same("_deserialize", fields.Number):
        kind = lambda v: type(v) is int  # noqa: E731 (never bool: marshmallow refuses it too)
    elif type(field) is fields.Float and not field.allow_nan:
        kind = lambda v: type(v) is int or (type(v) is float and math.isfinite(v))  # noqa: E731
    elif type(field) is fields.Boolean:
        kind = lambda v: type(v) is bool  # noqa: E731
    elif type(field) is fields.Dict and field.key_field is None and field.value_field is None:
        kind = lambda v: type(v) is dict  # noqa: E731
    elif type(field) is fields.Raw:
        kind = lambda v: True  # noqa: E731
    elif type(field) is fields.List:
        inner = _compile_field(field.inner)
        if inner is None:
            return None
        kind = lambda v: type(v) is list and all(map(inner, v))  # noqa: E731
    elif type(field) is fields.Nested and not field.many:
        nested = _compile_schema(field.schema)
        if nested is None:
            return None
        kind = lambda v: nested(v)  # noqa: E731
    if kind is None or not same("deserialize", fields.Field) or not same("_validate", fields.Field):
        return None
    rules = []
    for rule in field.validators:
        if type(rule) is validate.Length:
            rules.append(lambda v, r=rule: (r.equal is None or len(v) == r.equal)
                         and (r.min is None or len(v) >= r.min) and (r.max is None or len(v) <= r.max))
        elif type(rule) is validate.Range:
            rules.append(lambda v, r=rule: (
                r.min is None or (v >= r.min if r.min_inclusive else v > r.min)) and (
                r.max is None or (v <= r.max if r.max_inclusive else v < r.max)))
        elif type(rule) is validate.Regexp:
            rules.append(lambda v, r=rule: r.regex.match(v) is not None)
        elif type(rule) is validate.OneOf:
            rules.append(lambda v, r=rule: v in r.choices)
        else:
            return None
    allow_none = field.allow_none

    def value_ok(value) -> bool:
        if value is None:
            return allow_none
        if not kind(value):
            return False
        for rule in rules:
            if not rule(value):
                return False
        return True

    return value_ok

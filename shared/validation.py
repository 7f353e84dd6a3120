"""Validation at the edge: marshmallow errors become ValidationFailed naming
every bad field, before anything is written."""
from __future__ import annotations

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

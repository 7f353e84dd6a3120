"""Marshmallow schemas of the member service's RPC payloads (validated at the edge)."""
from __future__ import annotations

from datetime import datetime, timezone

from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates_schema

from services.member.domain import GENDERS, SEGMENTS
from shared.events.fields import CHANNELS, Choice, Id, IsoTime, Text

PHONE = r"^\+?[0-9][0-9 \-]{5,19}$"
REASON_CODE = r"^[a-z0-9][a-z0-9_.:\-]{0,63}$"


def _max_birth_year() -> int:
    return datetime.now(timezone.utc).year


def _birth_year(value: int) -> None:
    if not 1900 <= value <= _max_birth_year():
        raise ValidationError(f"Must be between 1900 and {_max_birth_year()}.")


class StrictBool(fields.Boolean):
    """true or false only: never "yes", 1 or "0"."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class _Strict(Schema):
    """Unknown fields are rejected (named in the error), never silently stored."""


class ProfileFields(_Strict):
    email = fields.Email(validate=validate.Length(max=254))
    name = fields.Str(validate=validate.Length(min=1, max=100))
    phone = fields.Str(allow_none=True, validate=validate.Regexp(PHONE, error="Not a valid phone number."))
    birth_year = fields.Int(strict=True, allow_none=True, validate=_birth_year)
    gender = fields.Str(allow_none=True, validate=validate.OneOf(GENDERS))
    region = fields.Str(allow_none=True, validate=validate.Length(min=1, max=100))
    interests = fields.List(fields.Str(validate=validate.Length(min=1, max=40)),
                            validate=validate.Length(max=20))

    @pre_load
    def strip(self, data, **kwargs):
        if isinstance(data, dict):
            data = dict(data)
            for key in ("email", "name", "phone", "region"):
                if isinstance(data.get(key), str):
                    data[key] = data[key].strip()
        return data


class Register(ProfileFields):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    name = fields.Str(required=True, validate=validate.Length(min=1, max=100))
    interests = fields.List(fields.Str(validate=validate.Length(min=1, max=40)),
                            validate=validate.Length(max=20), load_default=list)
    consent = fields.Dict(keys=Choice(CHANNELS), values=StrictBool(), load_default=dict)


class UpdateProfile(_Strict):
    member_id = Id(required=True)
    changes = fields.Nested(ProfileFields, required=True)

    @validates_schema
    def not_empty(self, data, **kwargs):
        if "changes" in data and not data["changes"]:
            raise ValidationError("Nothing to change.", "changes")


class MemberRef(_Strict):
    member_id = Id(required=True)
    now = IsoTime(load_default=None, allow_none=True)


class UpdateConsent(_Strict):
    member_id = Id(required=True)
    channel = Choice(CHANNELS, required=True)
    granted = StrictBool(required=True)


class ContactRef(_Strict):
    member_id = Id(required=True)
    channel = Choice(CHANNELS, required=True)


class ListContactable(_Strict):
    channel = Choice(CHANNELS, required=True)
    member_ids = fields.List(Id(), allow_none=True, load_default=None,
                             validate=validate.Length(max=1000))
    page = fields.Int(strict=True, load_default=1, validate=validate.Range(min=1))
    page_size = fields.Int(strict=True, load_default=100, validate=validate.Range(min=1, max=1000))


class GetPoints(_Strict):
    member_id = Id(required=True)
    limit = fields.Int(strict=True, load_default=20, validate=validate.Range(min=1, max=200))


class RedeemPoints(_Strict):
    member_id = Id(required=True)
    points = fields.Int(strict=True, required=True, validate=validate.Range(min=1))
    reason = Text(required=True, validate=validate.Regexp(
        REASON_CODE, error="Must be a short code (a-z, 0-9, _ . : -), not free text."))
    request_id = fields.Str(allow_none=True, load_default=None, validate=validate.Length(min=1, max=200))


class ListSegment(_Strict):
    name = Choice(SEGMENTS, required=True)
    page = fields.Int(strict=True, load_default=1, validate=validate.Range(min=1))
    page_size = fields.Int(strict=True, load_default=50, validate=validate.Range(min=1, max=1000))
    now = IsoTime(load_default=None, allow_none=True)


class RunAt(_Strict):
    now = IsoTime(load_default=None, allow_none=True)

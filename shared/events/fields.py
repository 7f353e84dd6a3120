"""Reusable marshmallow fields and nested shapes for event payloads (DESIGN.md runtime rules)."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from marshmallow import INCLUDE, Schema, fields, validate

ISO_8601 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"

CHANNELS = ("email", "sms")  # the channels members consent to and campaigns use


def _validators(own: list[Callable], kwargs: dict[str, Any]) -> list[Callable]:
    """Our validators first, then whatever the caller passed as `validate=`."""
    extra = kwargs.pop("validate", None)
    if extra is None:
        return own
    return [*own, *([extra] if callable(extra) else list(extra))]


class Id(fields.Str):
    """An identifier chosen by the owning service: a non-empty string."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validate=_validators([validate.Length(min=1)], kwargs), **kwargs)


class Text(fields.Str):
    """A non-empty string (a title, a category, a reason, a code)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validate=_validators([validate.Length(min=1)], kwargs), **kwargs)


class WholeNumber(fields.Int):
    """A strict integer (never "3", 3.0 or True), optionally bounded."""

    def __init__(self, *, minimum: int | None = None, maximum: int | None = None,
                 **kwargs: Any) -> None:
        own = [] if minimum is None and maximum is None else [
            validate.Range(min=minimum, max=maximum)]
        super().__init__(strict=True, validate=_validators(own, kwargs), **kwargs)


class Count(WholeNumber):
    """A quantity or count: a strict integer, 0 or more unless `minimum` says otherwise."""

    def __init__(self, *, minimum: int = 0, **kwargs: Any) -> None:
        super().__init__(minimum=minimum, **kwargs)


class Money(WholeNumber):
    """An amount in minor units (fen for CNY): a strict integer, never negative."""

    description = "minor units"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(minimum=0, **kwargs)


class Version(WholeNumber):
    """The owner's version of the aggregate whose state the event carries (shared/storage/readmodel.py)."""

    description = ("the aggregate's version: +1 with each change of its state, in the owner's "
                   "transaction; read models apply only a higher one (missing on events "
                   "published before versions: counts as 0)")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(minimum=1, **kwargs)


class Currency(fields.Str):
    """An ISO 4217 code; one per deployment (SHOP_CURRENCY)."""

    description = "ISO 4217 code"

    def __init__(self, **kwargs: Any) -> None:
        own = [validate.Length(equal=3), validate.Regexp(r"^[A-Z]{3}$",
                                                         error="Not an ISO 4217 code.")]
        super().__init__(validate=_validators(own, kwargs), **kwargs)


class IsoTime(fields.Str):
    """A UTC ISO 8601 timestamp kept as a string, as in the envelope's `occurred_at`."""

    description = "ISO 8601 timestamp, UTC"

    def __init__(self, **kwargs: Any) -> None:
        own = [validate.Regexp(ISO_8601, error="Not an ISO 8601 UTC timestamp.")]
        super().__init__(validate=_validators(own, kwargs), **kwargs)


class IsoDate(fields.Str):
    """A calendar date, YYYY-MM-DD."""

    description = "ISO 8601 date"

    def __init__(self, **kwargs: Any) -> None:
        own = [validate.Regexp(ISO_DATE, error="Not an ISO 8601 date.")]
        super().__init__(validate=_validators(own, kwargs), **kwargs)


class Choice(fields.Str):
    """A string from a closed set."""

    def __init__(self, choices: Iterable[str], **kwargs: Any) -> None:
        own = [validate.OneOf(list(choices))]
        super().__init__(validate=_validators(own, kwargs), **kwargs)


class Part(Schema):
    """Base of nested shapes inside a payload: read tolerantly, like the payload itself."""

    class Meta:
        unknown = INCLUDE


class ProductQuantity(Part):
    """A line naming a product and a quantity (reservations, shipments, returns)."""

    product_id = Id(required=True)
    quantity = Count(required=True, minimum=1)


class ShortLine(Part):
    """A line that could not be reserved: what was asked for and what was there."""

    product_id = Id(required=True)
    requested = Count(required=True, minimum=1)
    available = Count(required=True)


def lines_of(shape: type[Schema], **kwargs: Any) -> fields.List:
    """A list of nested `shape` lines; at least one line unless `min_items` says otherwise."""
    min_items = kwargs.pop("min_items", 1)
    own = [validate.Length(min=min_items)] if min_items else []
    return fields.List(fields.Nested(shape), validate=_validators(own, kwargs), **kwargs)


__all__ = ["CHANNELS", "ISO_8601", "ISO_DATE", "Choice", "Count", "Currency", "Id",
           "IsoDate", "IsoTime", "Money", "Part", "ProductQuantity", "ShortLine", "Text",
           "WholeNumber", "lines_of"]

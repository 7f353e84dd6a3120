"""What a caller can hand the suite, checked before any use case runs.

Three layers, so that no MongoDB operator can come from a caller whatever a
use case later does with the value:

1. `inspect(value)` bounds the *shape* of every RPC argument and HTTP body:
   no dict key starting with `$` (an operator) or holding NUL, integers within
   int64 (what BSON stores), finite floats, UTF-8-encodable strings, bounded
   lengths and nesting. A caller can therefore never build an operator.
2. An argument schema per entrypoint (`@rpc(schema={...})`, fields below):
   ids are bounded strings of a known charset, integers range-checked, every
   parameter of the method named. `Arguments.check` runs both and then marks
   every dict the caller sent as `CallerDict`.
3. The store (`guarded(db)`, installed by `shared.storage.store.Store`) refuses a
   filter that holds a `CallerDict` anywhere or uses server-side JavaScript
   (`$where`, `$function`, `$accumulator`): a filter is built by our code
   from scalars, never taken from a caller.

Refusals are `ValidationFailed` naming the field; nothing is written."""
from __future__ import annotations

import math
import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from shared.errors import ValidationFailed

INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
MAX_DEPTH = 12          # nesting of objects and arrays in one argument
MAX_ITEMS = 1000        # entries of one object or array
MAX_STRING = 20_000     # characters of one string (a field's schema bounds it tighter)
MAX_KEY = 200           # characters of one object key
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+=/-]{0,199}$")
# The operators that run JavaScript on the server: the suite never uses them.
SERVER_JS = frozenset({"$where", "$function", "$accumulator"})


class CallerDict(dict):
    """A dict as a caller sent it (after `check_arguments`): data, never a filter."""


def _refuse(path: str, problem: str):
    raise ValidationFailed.field(path or "_schema", problem)


def inspect(value: Any, path: str = "", depth: int = 0) -> None:
    """Raise ValidationFailed (naming the path) unless `value` is plain, bounded JSON
    with no operator keys. Run on everything a caller sends, before any schema."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            _refuse(path, "integer out of range (64-bit)")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            _refuse(path, "number must be finite")
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            _refuse(path, f"longer than {MAX_STRING} characters")
        _encodable(value, path)
        return
    if depth >= MAX_DEPTH:
        _refuse(path, f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            _refuse(path, f"more than {MAX_ITEMS} entries")
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                _refuse(path, "object keys must be strings")
            if key.startswith("$"):
                _refuse(path, f"operator {key[:20]} is not accepted")
            if "\x00" in key or len(key) > MAX_KEY or not key:
                _refuse(path, f"object keys must be 1 to {MAX_KEY} characters without NUL")
            _encodable(key, path)
            inspect(item, where, depth + 1)
        return
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_ITEMS:
            _refuse(path, f"more than {MAX_ITEMS} items")
        for index, item in enumerate(value):
            inspect(item, f"{path}.{index}" if path else str(index), depth + 1)
        return
    _refuse(path, f"unsupported type {type(value).__name__}")


def _encodable(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        _refuse(path, "not valid Unicode (lone surrogate)")


def mark(value: Any) -> Any:
    """`value` with every dict, at any depth, a CallerDict."""
    if isinstance(value, dict):
        return CallerDict((k, mark(v)) for k, v in value.items())
    if isinstance(value, list):
        return [mark(v) for v in value]
    return value


# -- argument fields ------------------------------------------------------------------

class Id(fields.Str):
    """An identifier, code or key: 1-200 characters of `[A-Za-z0-9_.:@+=/-]`,
    starting with a letter or digit."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validate=validate.Regexp(ID_PATTERN, error="not a valid id"), **kwargs)


class Text(fields.Str):
    """Free text or a name: `min` (1 unless said) to `max` characters."""

    def __init__(self, max: int = 2000, min: int = 1, **kwargs: Any) -> None:
        super().__init__(validate=validate.Length(min=min, max=max), **kwargs)


class Choice(fields.Str):
    def __init__(self, choices, **kwargs: Any) -> None:
        super().__init__(validate=validate.OneOf(list(choices)), **kwargs)


class Int(fields.Int):
    """A strict integer (never "3" or 3.0) within [min, max] (int64 by default)."""

    def __init__(self, min: int = INT64_MIN, max: int = INT64_MAX, **kwargs: Any) -> None:
        super().__init__(strict=True, validate=validate.Range(min=min, max=max), **kwargs)


class Page(Int):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min=1, max=1_000_000, **kwargs)


class PageSize(Int):
    def __init__(self, max: int = 1000, **kwargs: Any) -> None:
        super().__init__(min=1, max=max, **kwargs)


class Bool(fields.Bool):
    """Only true or false (not 1, "yes")."""

    truthy = {True}
    falsy = {False}


class When(fields.Str):
    """An ISO 8601 timestamp string (the use case parses it)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validate=validate.Regexp(
            r"^$|^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:?\d{2})?$",
            error="not an ISO 8601 timestamp"), **kwargs)


class Payload(fields.Dict):
    """An object whose fields the use case's own schema validates (its shape, keys
    and scalars are already bounded by `inspect`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(keys=fields.Str(), **kwargs)


class Items(fields.List):
    """A list of `inner`, at most `max` long."""

    def __init__(self, inner: fields.Field, max: int = 1000, **kwargs: Any) -> None:
        super().__init__(inner, validate=validate.Length(max=max), **kwargs)


class Objects(Items):
    """A list of objects the use case validates."""

    def __init__(self, max: int = 1000, **kwargs: Any) -> None:
        super().__init__(Payload(), max=max, **kwargs)


class ArgumentSchema(Schema):
    class Meta:
        unknown = RAISE


def argument_schema(method, spec) -> Schema:
    """The schema of `method`'s arguments from `spec` (a dict of fields or a Schema
    class/instance). Raises TypeError if a parameter has no field: registering an
    entrypoint whose arguments are not all validated is a programming error."""
    import inspect as pyinspect

    params = [p for p in pyinspect.signature(method).parameters.values() if p.name != "self"]
    if isinstance(spec, dict):
        # None is never an operator: whether a value is required is the use case's
        # rule (its own schema names the field), so every argument field accepts it.
        for field in spec.values():
            field.allow_none = True
        schema = ArgumentSchema.from_dict(dict(spec), name=f"{method.__name__}_args")()
    elif isinstance(spec, type) and issubclass(spec, Schema):
        schema = spec(unknown=RAISE)
    elif isinstance(spec, Schema):
        schema = spec
    else:
        raise TypeError(f"{method.__qualname__}: schema must be a dict of fields or a Schema")
    missing = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               and p.name not in schema.fields]
    if missing:
        raise TypeError(f"{method.__qualname__}: no schema field for {', '.join(missing)}")
    return schema


REQUEST_ID = Id()


class Arguments:
    """The argument check of one entrypoint, built once at registration."""

    def __init__(self, method, spec):
        import inspect as pyinspect

        self.schema = argument_schema(method, spec)
        self.signature = pyinspect.signature(method)
        self.self_name = next(iter(self.signature.parameters))
        self.takes_request_id = "request_id" in self.signature.parameters

    def check(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Validate a call's arguments; return them with caller dicts marked.

        `request_id` (idempotent writes, stripped by the rpc chassis) is checked as a
        bounded id even when the method's schema does not name it."""
        extra, call_kwargs = {}, kwargs
        if "request_id" in kwargs and not self.takes_request_id:
            call_kwargs = {k: v for k, v in kwargs.items() if k != "request_id"}
            extra["request_id"] = kwargs["request_id"]
        try:
            bound = self.signature.bind(None, *args, **call_kwargs)
        except TypeError as exc:
            raise ValidationFailed.field("_schema", str(exc)) from None
        values = dict(bound.arguments)
        values.pop(self.self_name, None)
        for name, value in {**values, **extra}.items():
            inspect(value, name)
        if "request_id" in extra:
            try:
                REQUEST_ID.deserialize(extra["request_id"])
            except ValidationError as exc:
                raise ValidationFailed.fields({"request_id": exc.messages}) from None
        errors = self.schema.validate(values)
        if errors:
            raise ValidationFailed.fields(errors)
        return tuple(mark(a) for a in args), {k: mark(v) for k, v in kwargs.items()}


def validating(method, spec):
    """`method` with its arguments checked (and caller dicts marked) first."""
    import functools

    arguments = Arguments(method, spec)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        args, kwargs = arguments.check(args, kwargs)
        return method(self, *args, **kwargs)

    wrapper.__shop_arguments__ = arguments
    return wrapper


# -- the store side -------------------------------------------------------------------

def check_filter(filter_: Any, path: str = "filter") -> None:
    """Refuse a filter holding a caller's dict or server-side JavaScript."""
    if isinstance(filter_, CallerDict):
        _refuse(_field_of(path), "an object is not accepted here")
    if isinstance(filter_, dict):
        for key, value in filter_.items():
            if key in SERVER_JS:
                _refuse(_field_of(path), f"{key} is not accepted")
            check_filter(value, f"{path}.{key}")
    elif isinstance(filter_, (list, tuple)):
        for value in filter_:
            check_filter(value, path)


def _field_of(path: str) -> str:
    """The field a filter path is about: `filter._id.$in` -> `_id`."""
    parts = [p for p in path.split(".")[1:] if not p.startswith("$")]
    return ".".join(parts) or "_schema"


_FILTER_FIRST = frozenset({
    "find", "find_one", "count_documents", "update_one", "update_many", "replace_one",
    "delete_one", "delete_many", "find_one_and_update", "find_one_and_replace",
    "find_one_and_delete", "find_raw_batches"})


class GuardedCollection:
    """A pymongo Collection whose filters pass `check_filter` first."""

    __slots__ = ("_collection",)

    def __init__(self, collection):
        self._collection = collection

    def __getattr__(self, name: str):
        attr = getattr(self._collection, name)
        if name in _FILTER_FIRST:
            def guarded_call(*args, **kwargs):
                check_filter(args[0] if args else kwargs.get("filter"))
                return attr(*args, **kwargs)
            return guarded_call
        if name == "distinct":
            def guarded_distinct(key, filter=None, *args, **kwargs):
                check_filter(filter)
                return attr(key, filter, *args, **kwargs)
            return guarded_distinct
        if name == "aggregate":
            def guarded_aggregate(pipeline, *args, **kwargs):
                check_filter(list(pipeline))
                return attr(pipeline, *args, **kwargs)
            return guarded_aggregate
        return attr

    def __getitem__(self, name: str):
        return GuardedCollection(self._collection[name])

    def __eq__(self, other):
        return self._collection == getattr(other, "_collection", other)

    def __hash__(self):
        return hash(self._collection)

    def __repr__(self):
        return f"Guarded({self._collection!r})"


class GuardedDatabase:
    """A pymongo Database handing out GuardedCollections (everything else as is)."""

    __slots__ = ("_db",)

    def __init__(self, db):
        self._db = db

    def __getattr__(self, name: str):
        from pymongo.collection import Collection

        attr = getattr(self._db, name)
        return GuardedCollection(attr) if isinstance(attr, Collection) else attr

    def __getitem__(self, name: str):
        return GuardedCollection(self._db[name])

    def get_collection(self, name: str, *args, **kwargs):
        return GuardedCollection(self._db.get_collection(name, *args, **kwargs))

    @property
    def unguarded(self):
        return self._db

    def __eq__(self, other):
        return self._db == getattr(other, "_db", other)

    def __hash__(self):
        return hash(self._db)

    def __repr__(self):
        return f"Guarded({self._db!r})"


def guarded(db) -> GuardedDatabase:
    return db if isinstance(db, GuardedDatabase) else GuardedDatabase(db)

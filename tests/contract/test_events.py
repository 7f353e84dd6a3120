"""Contract tests of the event schemas against DESIGN.md's event catalog (pure: no broker).

The catalog table in DESIGN.md is the contract; shared/events/ must declare every
event in it, under its source, with its required fields and exactly its consumers,
with an example that validates; docs/ must be regenerated whenever a schema changes.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from marshmallow import Schema, ValidationError
from marshmallow import fields as mfields

from shared.events import (
    REGISTRY,
    TRACKING_SOURCE,
    Envelope,
    EventSpec,
    asyncapi,
    consumers_table,
    events_markdown,
    example_envelope,
    load_all,
    producer_consumer_markdown,
)

REPO = Path(__file__).resolve().parents[2]
DESIGN = Path(__file__).resolve().parents[3] / "shared" / "DESIGN.md"
TRACKING_EVENTS = ("session_started", "page_viewed", "product_viewed", "cart_updated",
                   "checkout_started")

load_all()


# --- reading DESIGN.md's event catalog -------------------------------------------------

@dataclass(frozen=True)
class CatalogRow:
    source: str
    event_type: str
    required: tuple[str, ...]           # top-level field names
    nested: tuple[tuple[str, tuple[str, ...]], ...]  # field → its listed sub-fields
    consumers: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.source}.{self.event_type}"


def split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside [...], {...} or (...)."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def field_name(item: str) -> str:
    """`lines[product_id, quantity]`, `return_id or null`, `reason (a, b)` → the bare name."""
    item = re.sub(r"\([^)]*\)", "", item)
    item = re.sub(r"\[.*\]|\{.*\}", "", item)
    item = re.sub(r"\bor null\b", "", item)
    return item.strip()


def nested_names(item: str) -> tuple[str, ...]:
    """The sub-fields a `name[a, b]` or `name{a, b}` item lists, bare."""
    match = re.search(r"[\[{](.*)[\]}]", item)
    if not match:
        return ()
    return tuple(field_name(part) for part in split_top_level(match.group(1)))


def parse_catalog(text: str) -> list[CatalogRow]:
    section = text.split("## Event catalog", 1)[1].split("\n## ", 1)[0]
    rows: list[CatalogRow] = []
    source = None
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 3, f"unexpected catalog row: {line}"
        events_cell, data_cell, consumers_cell = cells
        found = re.search(r"\((\w+)\)", events_cell)
        if found:
            source = found.group(1)
        assert source, f"no source before row: {line}"
        items = split_top_level(data_cell)
        required = tuple(field_name(item) for item in items)
        nested = tuple((field_name(item), nested_names(item)) for item in items
                       if nested_names(item))
        consumers = tuple(c.strip() for c in consumers_cell.split(","))
        for event_type in re.findall(r"`(\w+)`", events_cell):
            rows.append(CatalogRow(source, event_type, required, nested, consumers))
    return rows


def catalog_rows() -> list[CatalogRow]:
    if not DESIGN.exists():
        return []
    return parse_catalog(DESIGN.read_text(encoding="utf-8"))


ROWS = catalog_rows()
needs_design = pytest.mark.skipif(not DESIGN.exists(),
                                  reason=f"{DESIGN} (the contract) is not on this machine")
SPECS = sorted(REGISTRY.values(), key=lambda s: (s.source, s.event_type))


def spec_id(spec: EventSpec) -> str:
    return f"{spec.source}.{spec.event_type}"


def schema_of(field: mfields.Field) -> Schema | None:
    """The nested schema behind a Nested or List(Nested) field."""
    if isinstance(field, mfields.List):
        field = field.inner
    return field.schema if isinstance(field, mfields.Nested) else None


# --- the parser itself -------------------------------------------------------------------

def test_parser_reads_the_row_shapes_design_uses():
    text = """## Event catalog
| Event (source) | Required data | Consumers |
|---|---|---|
| `a_done` (alpha) | x_id, lines[product_id, quantity (1, 2)], ref or null, kind (p, q) | beta |
| `b_done`, `c_done` | x_id, attribution{s, t} | beta, gamma |
## Next
| `ignored` (zeta) | y | z |
"""
    rows = parse_catalog(text)
    assert [str(r) for r in rows] == ["alpha.a_done", "alpha.b_done", "alpha.c_done"]
    assert rows[0].required == ("x_id", "lines", "ref", "kind")
    assert rows[0].nested == (("lines", ("product_id", "quantity")),)
    assert rows[1].nested == (("attribution", ("s", "t")),)
    assert rows[2].consumers == ("beta", "gamma")


# --- DESIGN.md's catalog against the registry -------------------------------------------

@needs_design
def test_design_catalog_was_read():
    assert len(ROWS) >= 50, "the event catalog table in DESIGN.md was not parsed"
    assert len({(r.source, r.event_type) for r in ROWS}) == len(ROWS), "duplicate rows"


@needs_design
@pytest.mark.parametrize("row", ROWS, ids=str)
def test_every_catalog_event_is_declared_under_its_source(row: CatalogRow):
    assert (row.source, row.event_type) in REGISTRY, (
        f"{row} is in DESIGN.md's catalog but not declared in shared/events/{row.source}.py")


@needs_design
@pytest.mark.parametrize("row", ROWS, ids=str)
def test_required_fields_of_the_catalog_are_required(row: CatalogRow):
    schema = REGISTRY[(row.source, row.event_type)].schema()
    for name in row.required:
        assert name in schema.fields, f"{row}: no field {name!r}"
        assert schema.fields[name].required, f"{row}: {name!r} must be required"
    for name, sub_names in row.nested:
        nested = schema_of(schema.fields[name])
        assert nested is not None, f"{row}: {name!r} should be nested objects"
        for sub in sub_names:
            assert sub in nested.fields and nested.fields[sub].required, (
                f"{row}: {name}.{sub} must be a required field")


@needs_design
@pytest.mark.parametrize("row", ROWS, ids=str)
def test_every_consumer_in_the_catalog_is_declared(row: CatalogRow):
    # More consumers than DESIGN.md lists are welcome (a service may need an
    # event for more than the table says); none may be missing.
    spec = REGISTRY[(row.source, row.event_type)]
    assert len(set(spec.consumers)) == len(spec.consumers), f"{row}: duplicate consumers"
    assert set(row.consumers) <= set(spec.consumers)


def test_every_handler_is_declared_as_a_consumer():
    """A service handling an event must be listed as its consumer, so the
    producer declares that service's queue binding before it publishes (an
    event published while the consumer never ran is otherwise lost)."""
    import importlib
    from pathlib import Path

    from shared.messaging.subscriptions import EventHandlerEntrypoint

    services = Path(__file__).resolve().parents[2] / "services"
    missing = []
    for path in sorted(services.glob("*/service.py")):
        module = importlib.import_module(f"services.{path.parent.name}.service")
        for cls in vars(module).values():
            if not (isinstance(cls, type) and getattr(cls, "name", None) == path.parent.name):
                continue
            for attr in vars(cls).values():
                for entrypoint in getattr(attr, "nameko_entrypoints", ()):
                    if isinstance(entrypoint, EventHandlerEntrypoint):
                        spec = REGISTRY.get((entrypoint.source, entrypoint.event_type))
                        if spec is None or cls.name not in spec.consumers:
                            missing.append((cls.name, entrypoint.source, entrypoint.event_type))
    assert not missing, f"handlers whose event does not list the service as a consumer: {missing}"


# --- every declared event: examples ------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_example_validates(spec: EventSpec):
    assert spec.example, f"{spec_id(spec)} has no example"
    spec.validate(copy.deepcopy(spec.example))


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_example_validates_inside_an_envelope(spec: EventSpec):
    envelope = Envelope().load(json.loads(json.dumps(example_envelope(spec))))
    assert (envelope["source"], envelope["event_type"]) == (spec.source, spec.event_type)
    spec.validate(envelope["data"])


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_example_round_trips_through_json(spec: EventSpec):
    text = json.dumps(spec.example)
    assert json.loads(text) == spec.example
    schema = spec.schema()
    loaded = schema.load(json.loads(text))
    assert schema.load(json.loads(json.dumps(schema.dump(loaded)))) == schema.dump(loaded)
    assert loaded == spec.example  # no field is reshaped on the way in


def required_paths(spec: EventSpec) -> list[tuple[str, ...]]:
    """Every required field as a path into the example: top level, then inside the first
    element of each nested list / inside each nested object the example carries."""
    schema, paths = spec.schema(), []
    for name, field in schema.fields.items():
        if not field.required:
            continue
        paths.append((name,))
        nested, value = schema_of(field), spec.example.get(name)
        if nested is None or not value:
            continue
        prefix = (name, 0) if isinstance(value, list) else (name,)
        paths += [(*prefix, sub) for sub, f in nested.fields.items() if f.required]
    return paths


MISSING = [pytest.param(spec, path, id=f"{spec_id(spec)}-{'.'.join(map(str, path))}")
           for spec in SPECS for path in required_paths(spec)]


@pytest.mark.parametrize(("spec", "path"), MISSING)
def test_example_without_a_required_field_fails_naming_it(spec: EventSpec, path: tuple):
    data = copy.deepcopy(spec.example)
    target = data
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    with pytest.raises(ValidationError) as raised:
        spec.validate(data)
    messages = raised.value.messages
    for key in path:
        assert isinstance(messages, dict) and key in messages, (
            f"error does not name {'.'.join(map(str, path))}: {raised.value.messages}")
        messages = messages[key]
    assert messages == ["Missing data for required field."]


@pytest.mark.parametrize("spec", SPECS, ids=spec_id)
def test_payloads_are_read_tolerantly(spec: EventSpec):
    data = copy.deepcopy(spec.example)
    data["added_in_a_later_version"] = {"any": "thing"}
    assert spec.validate(data)["added_in_a_later_version"] == {"any": "thing"}


# --- tracking events ---------------------------------------------------------------------

@pytest.mark.parametrize("event_type", TRACKING_EVENTS)
def test_tracking_events_exist(event_type: str):
    spec = REGISTRY[(TRACKING_SOURCE, event_type)]
    assert spec.consumers == ("analytics",)
    fields = spec.schema().fields
    assert fields["session_id"].required and fields["occurred_at"].required
    assert not fields["member_id"].required and fields["member_id"].allow_none
    anonymous = {**spec.example, "member_id": None}
    spec.validate(anonymous)
    spec.validate({k: v for k, v in spec.example.items() if k != "member_id"})


def test_tracking_events_are_not_subscribed_on_the_broker():
    document = asyncapi()
    assert not [c for c in document["channels"] if c.startswith(f"{TRACKING_SOURCE}.")]
    assert document["channels"]["track"]["publish"]["message"]["oneOf"]


# --- generated documents -------------------------------------------------------------------

def test_producer_consumer_table():
    table = producer_consumer_markdown()
    rows = consumers_table()
    print(table)
    assert rows and rows == sorted(rows)
    assert table.count("\n") == len(rows) + 2
    assert "| `order_placed` | order | analytics, catalog, marketing |" in table


def test_docs_events_md_is_up_to_date():
    path = REPO / "docs" / "events.md"
    assert path.exists() and path.read_text(encoding="utf-8") == events_markdown(), (
        "docs/events.md is stale: python -m shared.events markdown > docs/events.md")
    assert producer_consumer_markdown() in path.read_text(encoding="utf-8")


def test_docs_asyncapi_json_is_up_to_date():
    path = REPO / "docs" / "asyncapi.json"
    assert path.exists() and json.loads(path.read_text(encoding="utf-8")) == asyncapi(), (
        "docs/asyncapi.json is stale: python -m shared.events asyncapi > docs/asyncapi.json")


def test_asyncapi_document_is_consistent():
    document = asyncapi()
    assert document["asyncapi"] == "2.6.0"
    components = document["components"]
    key_pattern = re.compile(r"^[a-zA-Z0-9.\-_]+$")
    assert all(key_pattern.match(k) for k in [*components["schemas"], *components["messages"]])

    def resolve(ref: str) -> dict:
        _, kind, key = ref.rsplit("/", 2)
        return components[kind][key]

    operation_ids = []
    for name, channel in document["channels"].items():
        operation = channel.get("subscribe") or channel["publish"]
        operation_ids.append(operation["operationId"])
        refs = operation["message"].get("oneOf", [operation["message"]])
        for ref in refs:
            message = resolve(ref["$ref"])
            if "allOf" in message["payload"]:
                data_ref = message["payload"]["allOf"][1]["properties"]["data"]["$ref"]
                assert name == f"{message['x-source']}.events/{message['name']}"
            else:
                data_ref = message["payload"]["$ref"]
            assert resolve(data_ref)["type"] == "object"
    assert len(operation_ids) == len(set(operation_ids))
    broker = [key for key in REGISTRY if key[0] != TRACKING_SOURCE]
    assert len([c for c in document["channels"] if c != "track"]) == len(broker)


def test_json_schema_carries_required_enums_and_nullability():
    order_cancelled = asyncapi()["components"]["schemas"]["order.order_cancelled"]
    assert set(order_cancelled["required"]) == {"order_id", "member_id", "reason", "was_paid"}
    assert order_cancelled["properties"]["reason"]["enum"] == [
        "member", "payment_failed", "expired", "operator"]
    refunded = asyncapi()["components"]["schemas"]["order.order_refunded"]
    assert refunded["properties"]["return_id"]["type"] == ["string", "null"]
    assert refunded["properties"]["amount"] == {
        "description": "minor units", "type": "integer", "minimum": 0}
    lines = refunded["properties"]["lines"]
    assert lines["type"] == "array" and "product_id" in lines["items"]["required"]

"""Chassis rules that need neither a broker nor a mongod."""
import re
from datetime import datetime, timedelta, timezone

import pytest
from marshmallow import Schema, fields
from nameko.exceptions import deserialize, serialize
from pymongo.errors import AutoReconnect, DuplicateKeyError, OperationFailure

from shared.clock import parse_iso, to_iso
from shared.config import Settings
from shared.errors import Conflict, NotFound, ServiceTimeout, ValidationFailed
from shared.ids import new_id
from shared.messaging.outbox import build_envelope
from shared.messaging.topology import catalog_bindings, consumers_of_source, service_queue
from shared.retry import is_transient
from shared.validation import load


@pytest.mark.parametrize("error", [
    NotFound("no product p1", {"product_id": "p1"}),
    ValidationFailed.field("price", "must be a positive integer"),
    Conflict("sku taken", {"field": "sku"}),
    ServiceTimeout("catalog.get_product did not answer", {"service": "catalog"}),
])
def test_typed_errors_survive_nameko_serialisation(error):
    back = deserialize(serialize(error))
    assert type(back) is type(error)
    assert back.message == error.message and back.details == error.details


def test_validation_failed_names_each_field():
    class Payload(Schema):
        price = fields.Int(required=True, strict=True)
        title = fields.Str(required=True)

    with pytest.raises(ValidationFailed) as info:
        load(Payload(), {"price": "12"})
    assert set(info.value.field_errors) == {"price", "title"}
    with pytest.raises(ValidationFailed) as info:
        load(Payload(), ["not", "a", "dict"])
    assert "_schema" in info.value.field_errors


def test_build_envelope_validates_the_payload_and_names_the_field():
    with pytest.raises(ValidationFailed) as info:
        build_envelope("catalog", "stock_adjusted", {"product_id": "p1", "delta": 1})
    assert {"reason", "on_hand", "available"} <= set(info.value.field_errors)


def test_build_envelope_fills_the_envelope():
    envelope = build_envelope("catalog", "stock_adjusted", {
        "product_id": "p1", "delta": 2, "reason": "restock", "on_hand": 2, "available": 2,
        "version": 2})
    assert envelope["source"] == "catalog" and envelope["schema_version"] == 1
    assert envelope["event_id"].startswith("evt_") and envelope["correlation_id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", envelope["occurred_at"])
    assert envelope["causation_id"] is None


def test_unknown_event_is_refused():
    with pytest.raises(KeyError):
        build_envelope("catalog", "no_such_event", {})


def test_transient_errors_are_told_apart():
    assert is_transient(AutoReconnect("gone"))
    assert is_transient(OperationFailure("conflict", 112, {"errorLabels": ["TransientTransactionError"]}))
    assert not is_transient(DuplicateKeyError("dup"))
    assert not is_transient(ValueError("bug"))
    assert not is_transient(ValidationFailed("bad"))


def test_iso_time_round_trip_in_utc():
    moment = datetime(2026, 11, 26, 20, 0, 0, 123000, tzinfo=timezone(timedelta(hours=8)))
    text = to_iso(moment)
    assert text == "2026-11-26T12:00:00.123Z"
    assert parse_iso(text) == moment
    assert parse_iso("2026-11-26T12:00:00").tzinfo is not None


def test_ids_are_unique_and_time_ordered():
    ids = [new_id("ord") for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"ord_[0-9a-z]{25}", value) for value in ids)
    assert ids[0][:13] <= ids[-1][:13]


def test_settings_defaults(monkeypatch):
    for name in ("AMQP_URI", "MONGO_URI", "ORDER_DB", "SHOP_CURRENCY", "SHOP_TIMEZONE", "HTTP_HOST",
                 "ORDER_HTTP_PORT", "HTTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env("order")
    assert settings.database == "shop_order" and settings.http_port == 8002
    assert settings.currency == "CNY" and settings.timezone == "Asia/Shanghai"
    assert settings.http_host == "127.0.0.1"
    assert settings.mongo_uri.endswith("replicaSet=rs0")
    monkeypatch.setenv("RPC_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="RPC_TIMEOUT"):
        Settings.from_env("order")


def test_each_consumer_queue_binds_what_the_catalog_says():
    bindings = catalog_bindings("catalog")
    assert ("order", "order_placed") in bindings
    assert ("fulfillment", "shipment_dispatched") in bindings
    assert all(source != "catalog" for source, _ in bindings)
    assert all(source != "tracking" for source, _ in catalog_bindings("analytics"))
    assert consumers_of_source("order") >= {"catalog", "fulfillment", "member", "marketing", "analytics"}


def test_service_queue_is_a_quorum_queue_with_a_delivery_limit_and_dead_lettering():
    queue = service_queue("member", catalog_bindings("member"), 5)
    assert queue.name == "evt--member" and queue.durable
    assert queue.queue_arguments["x-queue-type"] == "quorum"
    assert queue.queue_arguments["x-delivery-limit"] == 5
    assert queue.queue_arguments["x-dead-letter-exchange"] == "evt--member.dlx"
    assert {(b.exchange.name, b.routing_key) for b in queue.bindings} >= {("order.events", "order_completed")}


def test_a_write_conflict_is_retried_soon_and_never_given_less_time_than_an_outage():
    from shared.retry import Backoff, is_write_conflict

    conflict = OperationFailure("conflict", 112, {"errorLabels": ["TransientTransactionError"]})
    outage = AutoReconnect("gone")
    schedule = Backoff(Settings.from_env("example"))
    assert is_write_conflict(conflict) and not is_write_conflict(outage)
    assert schedule.delay(conflict, 0, 0.5) == pytest.approx(0.01)  # not 0.2 s behind a commit
    assert schedule.delay(outage, 0, 0.5) == pytest.approx(0.2)
    assert schedule.delay(conflict, 20, 0.99) <= 5.0 * 1.5  # capped like an outage
    budget = {exc: sum(schedule.delay(exc, n, 0.0) for n in range(schedule.attempts(exc)))
              for exc in (conflict, outage)}
    assert schedule.attempts(conflict) > schedule.attempts(outage)
    assert budget[conflict] >= budget[outage]


def test_handlers_sharing_a_hot_key_run_one_at_a_time_and_others_run_beside_them():
    import eventlet

    from shared.messaging.keyed import KeyedLocks

    locks, trace = KeyedLocks(), []

    def handler(name, keys):
        with locks.holding(keys):
            trace.append(("in", name))
            eventlet.sleep(0)  # yield: another handler may run now
            eventlet.sleep(0)
            trace.append(("out", name))

    pool = eventlet.GreenPool()
    pool.spawn(handler, "a", ["stock:p1", "stock:p2"])
    pool.spawn(handler, "b", ["stock:p2", "stock:p1"])  # same keys, other order: no deadlock
    pool.spawn(handler, "c", ["stock:p9"])
    pool.waitall()
    a_in, a_out = trace.index(("in", "a")), trace.index(("out", "a"))
    b_in = trace.index(("in", "b"))
    assert b_in > a_out  # b waited for a
    assert a_in < trace.index(("in", "c")) < a_out  # c shares nothing: it ran meanwhile
    assert len(locks) == 0  # no key kept once nobody holds it


def test_a_catalog_order_event_is_keyed_by_the_stock_its_lines_write():
    from services.catalog.domain import stock_keys

    assert stock_keys({"lines": [{"product_id": "p1"}, {"product_id": "p2"}]}) == ["stock:p1", "stock:p2"]
    assert stock_keys({"order_id": "o1"}) == []

"""The chassis against a real mongod and a real RabbitMQ, through the example services."""
import json
import uuid

import pytest
import requests
from pymongo import MongoClient

from shared.errors import NotFound, ServiceTimeout, ServiceUnavailable, ValidationFailed
from shared.storage.store import Tx
from tests.chassis.example import ExampleAnalytics, ExampleInventory
from tools import devstack
from tools.admin import dead_letter_depth, list_dead_letters, replay_dead_letters
from tools.client import connect
from tools.testing import make_envelope, publish_event, settings_of_container, store_of, wait_for


def uid(prefix="p"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def order_placed(order_id, product_id, quantity=1):
    return make_envelope("order", "order_placed", {
        "order_id": order_id, "member_id": "mem_1",
        "lines": [{"product_id": product_id, "category": "books", "quantity": quantity,
                   "unit_price": 1000, "discount": 0, "line_total": 1000 * quantity}],
        "subtotal": 1000 * quantity, "discount": 0, "shipping_fee": 0, "total": 1000 * quantity,
        "currency": "CNY", "coupon_code": None, "promotion_ids": [],
        "attribution": {"session_id": None, "campaign_id": None, "referral_code": None}})


def test_outbox_survives_a_crash_between_commit_and_publish(start_service, settings_for):
    product = uid()
    analytics = start_service(ExampleAnalytics)
    settings = settings_for("catalog")
    # The "crash": state and event committed, the process died before publishing.
    client = MongoClient(settings.mongo_uri, w="majority", tz_aware=True)
    db = client[settings.database]
    with client.start_session() as session, session.start_transaction():
        db.stock.insert_one({"_id": product, "on_hand": 3, "reserved": 0}, session=session)
        Tx(db, session, "catalog").emit("stock_adjusted", {
            "product_id": product, "delta": 3, "reason": "crash test", "on_hand": 3, "available": 3,
            "version": 1})
    assert db.outbox.count_documents({"pending": True}) == 1
    # The restarted service's sweep publishes the leftover; the consumer gets it once.
    start_service(ExampleInventory, settings=settings)
    wait_for(lambda: store_of(analytics).seen.count_documents({"product_id": product}) == 1,
             what="swept event to be consumed")
    wait_for(lambda: db.outbox.count_documents({"pending": True}) == 0, what="outbox drained")


def test_a_duplicate_delivery_has_no_second_effect(start_service, amqp_uri):
    inventory = start_service(ExampleInventory)
    product, order = uid(), uid("ord")
    envelope = order_placed(order, product, quantity=2)
    publish_event(amqp_uri, envelope)
    publish_event(amqp_uri, envelope)
    db = store_of(inventory)
    wait_for(lambda: db.inbox.count_documents({"event_id": envelope["event_id"]}) == 1)
    wait_for(lambda: _metric(inventory, "shop_events_duplicate_total", 'event_type="order_placed"') >= 1,
             what="duplicate counted")
    assert db.applied.count_documents({"order_id": order}) == 1
    assert db.stock.find_one({"_id": product})["reserved"] == 2
    # Exactly one stock_reserved was emitted for the order.
    assert db.outbox.count_documents({"event_type": "stock_reserved",
                                      "envelope.data.order_id": order}) == 1


def test_a_poison_message_is_dead_lettered_after_the_limit_and_can_be_replayed(start_service, amqp_uri):
    inventory = start_service(ExampleInventory)
    db = store_of(inventory)
    db.flags.delete_many({})
    order = uid("poison")
    envelope = order_placed(order, uid())
    publish_event(amqp_uri, envelope)
    wait_for(lambda: dead_letter_depth(amqp_uri, "catalog") >= 1, timeout=30,
             what="poison message in the dead-letter queue")
    listed = list_dead_letters(amqp_uri, "catalog")
    assert envelope["event_id"] in [row["event_id"] for row in listed]
    assert db.applied.count_documents({"order_id": order}) == 0
    # The cause is fixed; the operator replays; the event takes effect once.
    db.flags.insert_one({"_id": "cure"})
    assert replay_dead_letters(amqp_uri, "catalog") >= 1
    wait_for(lambda: db.applied.count_documents({"order_id": order}) == 1, what="replayed event applied")
    assert dead_letter_depth(amqp_uri, "catalog") == 0


def test_a_malformed_envelope_goes_straight_to_the_dead_letter_queue(start_service, amqp_uri):
    inventory = start_service(ExampleInventory)
    bad = order_placed(uid("ord"), uid())
    del bad["occurred_at"]
    before = dead_letter_depth(amqp_uri, "catalog")
    publish_event(amqp_uri, bad)
    wait_for(lambda: dead_letter_depth(amqp_uri, "catalog") == before + 1, what="malformed dead-lettered")
    assert store_of(inventory).inbox.count_documents({"event_id": bad["event_id"]}) == 0
    replay_dead_letters(amqp_uri, "catalog")  # leave the queue clean (it is dead-lettered again)


def test_a_brief_mongod_outage_is_ridden_out_without_dead_lettering(start_service, amqp_uri, tmp_path):
    mongod = devstack.Mongod(tmp_path / "db", devstack.free_port())
    mongod.start()
    try:
        inventory = start_service(ExampleInventory, mongo_uri=mongod.uri)
        dlq_before = dead_letter_depth(amqp_uri, "catalog")
        mongod.stop()
        order = uid("ord")
        publish_event(amqp_uri, order_placed(order, uid()))
        wait_for(lambda: _metric(inventory, "shop_transient_retries_total", 'kind="event"') >= 1,
                 timeout=30, what="a transient retry")
        mongod.start()
        db = store_of(inventory)
        wait_for(lambda: db.applied.count_documents({"order_id": order}) == 1, timeout=60,
                 what="event applied after mongod came back")
        assert dead_letter_depth(amqp_uri, "catalog") == dlq_before
    finally:
        mongod.stop()


def test_an_event_published_before_its_consumer_ever_started_is_delivered(start_service, rpc, settings_for):
    start_service(ExampleInventory)  # declares its consumers' queues at start-up
    product = uid()
    rpc.catalog.adjust_stock(product, 4, "before the consumer")
    analytics = start_service(ExampleAnalytics)
    wait_for(lambda: store_of(analytics).seen.count_documents({"product_id": product}) == 1,
             what="event delivered to the late consumer")


def test_an_rpc_call_to_a_stopped_service_fails_with_a_timeout(start_service, rpc):
    start_service(ExampleInventory)
    analytics = start_service(ExampleAnalytics)
    assert rpc.catalog.ask_analytics()  # answers while running
    analytics.stop()
    with pytest.raises(ServiceTimeout) as info:
        rpc.catalog.ask_analytics()
    assert info.value.details["service"] == "analytics"


def test_an_rpc_call_to_a_service_that_never_ran_fails_typed_at_once(start_service, settings_for,
                                                                      base_amqp_uri):
    """No queue at all (the service was never deployed on this virtual host: a fresh one,
    since a stopped service's queue stays): the request's confirm says it was unroutable,
    and the caller gets a typed ServiceUnavailable naming the service, through another
    service as well as from the standalone client."""
    from tools import devstack
    from tools.client import connect

    vhost = f"shop-test-{uuid.uuid4().hex[:10]}"
    devstack.create_vhost(vhost)
    uri = devstack.with_vhost(base_amqp_uri, vhost)
    try:
        catalog = start_service(ExampleInventory, settings=settings_for("catalog", amqp_uri=uri))
        with connect(uri, timeout=15) as client:
            with pytest.raises(ServiceUnavailable) as direct:
                client.analytics.echo_correlation()
            assert direct.value.details == {"service": "analytics", "method": "echo_correlation"}
            with pytest.raises(ServiceUnavailable) as through:
                client.catalog.ask_analytics()
            assert through.value.details["service"] == "analytics"
        catalog.stop()
    finally:
        devstack.delete_vhost(vhost)


def test_the_correlation_id_follows_rpc_calls_and_events(start_service, amqp_uri, capsys):
    start_service(ExampleInventory)
    analytics = start_service(ExampleAnalytics)
    correlation = f"corr-{uuid.uuid4().hex}"
    product = uid()
    with connect(amqp_uri, correlation_id=correlation) as client:
        assert client.catalog.ask_analytics() == correlation
        client.catalog.adjust_stock(product, 1, "correlation")
    # The handler logs after its transaction commits: wait for the log lines themselves.
    seen: list[dict] = []

    def analytics_logged():
        seen.extend(json.loads(line) for line in capsys.readouterr().out.splitlines()
                    if line.startswith("{"))
        events = {line.get("event") for line in seen if line.get("service") == "analytics"
                  and line.get("correlation_id") == correlation}
        return events >= {"echo_called", "stock_adjusted_seen"}

    wait_for(analytics_logged, what="both log lines in the second service")
    assert store_of(analytics).seen.find_one({"product_id": product})["correlation_id"] == correlation


def test_metrics_and_health_endpoints(start_service, rpc):
    inventory = start_service(ExampleInventory)
    rpc.catalog.adjust_stock(uid(), 1, "metrics")
    with pytest.raises(NotFound):
        rpc.catalog.get_stock("no-such-product")
    port = settings_of_container(inventory).http_port
    # The reply goes out before the worker's metrics are recorded: wait for the last one.
    def scrape():
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return text if 'method="get_stock",outcome="rejected"' in text else None

    body = wait_for(scrape, what="RED metrics")
    assert 'shop_requests_total{kind="rpc",method="adjust_stock",outcome="ok",service="catalog"}' in body
    assert 'shop_requests_total{kind="rpc",method="get_stock",outcome="rejected",service="catalog"}' in body
    assert "shop_request_seconds_bucket" in body
    assert "shop_outbox_pending" in body
    assert requests.get(f"http://127.0.0.1:{port}/health/live", timeout=5).status_code == 200
    ready = wait_for(lambda: (r := requests.get(f"http://127.0.0.1:{port}/health/ready", timeout=5))
                     .status_code == 200 and r.json())
    assert ready["checks"] == {"started": True, "mongo": True, "broker": True, "consumer": True}


def test_typed_errors_arrive_typed_and_bad_input_writes_nothing(start_service, rpc):
    inventory = start_service(ExampleInventory)
    db = store_of(inventory)
    with pytest.raises(ValidationFailed) as info:
        rpc.catalog.adjust_stock("", "three", "")
    assert set(info.value.field_errors) == {"product_id", "delta", "reason"}
    product = uid()
    with pytest.raises(ValidationFailed) as info:
        rpc.catalog.adjust_stock(product, -1, "below zero")
    assert info.value.field_errors == {"delta": ["would make stock negative"]}
    assert db.stock.count_documents({"_id": product}) == 0
    assert db.outbox.count_documents({"envelope.data.product_id": product}) == 0
    with pytest.raises(NotFound) as info:
        rpc.catalog.get_stock(product)
    assert info.value.details == {"product_id": product}


def _metric(container, name, label_fragment):
    port = settings_of_container(container).http_port
    total = 0.0
    for line in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + "{") and label_fragment in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_http_entrypoints_answer_typed_errors_as_json(start_service, rpc):
    inventory = start_service(ExampleInventory)
    port = settings_of_container(inventory).http_port
    product = uid()
    rpc.catalog.adjust_stock(product, 2, "http")
    found = requests.get(f"http://127.0.0.1:{port}/stock/{product}", timeout=5)
    assert found.status_code == 200 and found.json()["on_hand"] == 2
    missing = requests.get(f"http://127.0.0.1:{port}/stock/nope", timeout=5)
    assert missing.status_code == 404
    assert missing.json() == {"error": "NotFound", "code": "not_found",
                              "message": "no stock for product nope", "details": {"product_id": "nope"}}

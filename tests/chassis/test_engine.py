"""The event engine against a real mongod and a real RabbitMQ: crash loops,
counted failures, dead letters with a reason, multi-step handlers, unknown
commit results, relays sharing an outbox, parked rows, a deleted consumer
queue, batches and idempotent RPC writes."""
import uuid
from contextlib import suppress
from datetime import timedelta

import eventlet
import pytest
from amqp.exceptions import ChannelError
from kombu import Connection, Exchange, Queue
from pymongo import MongoClient
from pymongo.client_session import ClientSession
from pymongo.errors import ConnectionFailure

from shared.clock import utcnow
from shared.errors import Conflict, ServiceUnavailable, ValidationFailed
from shared.events.base import spec_for
from shared.messaging import outbox
from shared.messaging.failures import failures_of
from shared.messaging.outbox import OutboxRelay
from shared.messaging.routing import ConsumerQueues
from shared.messaging.topology import (
    consumers_of_source,
    declare_service,
    declare_suite,
    event_exchange,
)
from shared.storage.store import Tx
from tests.chassis.example import ExampleAnalytics, ExampleInventory
from tests.chassis.forgetting_proxy import ForgettingProxy
from tests.chassis.test_chassis_integration import order_placed
from tools.admin import dead_letter_depth, list_dead_letters, replay_dead_letters
from tools.testing import make_envelope, publish_event, store_of, wait_for


def uid(prefix="p"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def consuming(container):
    from shared.messaging.subscriptions import EventRouter

    routers = [e for e in container.subextensions if isinstance(e, EventRouter)]
    return all(router.consuming for router in routers)


def test_a_crash_looping_consumer_dead_letters_nothing_and_applies_each_event_once(start_service,
                                                                                   amqp_uri, settings_for):
    settings = settings_for("catalog", max_workers=4)
    first = start_service(ExampleInventory, settings=settings)
    first.stop()
    orders = [uid("ord") for _ in range(60)]
    for order in orders:
        publish_event(amqp_uri, order_placed(order, uid()))
    for _ in range(10):  # killed right after it starts consuming, prefetch window in hand
        container = start_service(ExampleInventory, settings=settings)
        wait_for(lambda c=container: consuming(c), what="consumer started")
        container.kill()
    survivor = start_service(ExampleInventory, settings=settings)
    db = store_of(survivor)
    wait_for(lambda: db.applied.count_documents({"order_id": {"$in": orders}}) == len(orders),
             timeout=60, what="every event applied")
    assert dead_letter_depth(amqp_uri, "catalog") == 0
    counts = list(db.applied.aggregate([{"$match": {"order_id": {"$in": orders}}},
                                        {"$group": {"_id": "$order_id", "n": {"$sum": 1}}},
                                        {"$match": {"n": {"$gt": 1}}}]))
    assert counts == []


def _router_of(container):
    from shared.messaging.subscriptions import EventRouter

    return next(e for e in container.subextensions if isinstance(e, EventRouter))


def _restarts(service: str, queue: str) -> float:
    from shared.observability import metrics

    return metrics.CONSUMER_RESTARTS.labels(service, queue)._value.get()


def _drop_on_the_broker(queue_consumer, provider) -> None:
    """Cancel the provider's consumer on the broker without telling kombu."""
    consumer = queue_consumer._consumers[provider]
    for tag in consumer._active_tags.values():
        consumer.channel.basic_cancel(tag, nowait=True)


def _consumers_on(amqp_uri: str, queue: str) -> int:
    with Connection(amqp_uri) as connection:
        return connection.default_channel.queue_declare(queue, passive=True)[2]


def test_a_consumer_the_broker_silently_dropped_is_found_and_reconnected(start_service, amqp_uri,
                                                                         settings_for):
    """The broker forgets our consumer while kombu still believes in it (seen in the
    cluster soak after leaders moved): the queue fills and nothing arrives. The
    queue consumer's check notices (no consumer on the queue, twice) and reconnects;
    every event is then applied once."""
    container = start_service(ExampleInventory, settings=settings_for("catalog", consumer_check_interval=0.3))
    wait_for(lambda: consuming(container), what="consumer started")
    router = _router_of(container)
    restarts = _restarts("catalog", "evt--catalog")
    _drop_on_the_broker(router.queue_consumer, router)
    eventlet.sleep(0.5)
    orders = [uid("ord") for _ in range(20)]
    for order in orders:
        publish_event(amqp_uri, order_placed(order, uid()))
    db = store_of(container)
    wait_for(lambda: db.applied.count_documents({"order_id": {"$in": orders}}) == len(orders),
             timeout=30, what="every event applied after the reconnect")
    assert _restarts("catalog", "evt--catalog") >= restarts + 1
    assert consuming(container)
    assert db.applied.count_documents({"order_id": {"$in": orders}}) == len(orders)  # once each


def _rpc_queue_consumer(container):
    from shared.messaging.rpc import RpcQueueConsumer

    return next(e for e in container.subextensions if isinstance(e, RpcQueueConsumer))


@pytest.mark.parametrize("dropped", ["requests", "replies"])
def test_an_rpc_consumer_the_broker_silently_dropped_is_found_and_reconnected(start_service, rpc, amqp_uri,
                                                                              settings_for, dropped):
    """The same for the queue consumer of RPC: its requests' queue `rpc-<service>` (shared
    with the other replicas) and its own reply queue. A replica whose request consumer
    is gone serves nothing while it looks healthy; the soak saw one."""
    from nameko.rpc import ReplyListener, RpcConsumer

    container = start_service(ExampleInventory, settings=settings_for("catalog", consumer_check_interval=0.3))
    wait_for(lambda: consuming(container), what="consumer started")
    product = uid()
    rpc.catalog.adjust_stock(product, 3, "delivery", request_id=f"req-{product}")
    queue_consumer = _rpc_queue_consumer(container)
    kind = RpcConsumer if dropped == "requests" else ReplyListener
    provider = next(p for p in queue_consumer._providers if isinstance(p, kind))
    queue, label = provider.queue.name, ("rpc-catalog" if dropped == "requests" else "rpc.reply")
    restarts = _restarts("catalog", label)
    _drop_on_the_broker(queue_consumer, provider)
    assert _consumers_on(amqp_uri, queue) == 0
    wait_for(lambda: _restarts("catalog", label) >= restarts + 1, timeout=30, what="the consumer reconnected")
    wait_for(lambda: _consumers_on(amqp_uri, queue) == 1, timeout=30, what="a consumer on the queue again")
    assert rpc.catalog.get_stock(product)["on_hand"] == 3


@pytest.fixture
def forgetting_proxy(amqp_uri):
    """A ForgettingProxy in front of the test broker. Ask for it before start_service:
    the proxy then outlives the services whose connections it carries, and they stop
    on live connections."""
    proxy = ForgettingProxy(amqp_uri)
    yield proxy
    proxy.close()


def _pooled_connection_ports() -> set[int]:
    """Local ports of the connections in this process's kombu connection pools, where
    nameko's publishers, the RPC reply's among them, take theirs."""
    import kombu.pools

    ports = set()
    for pool in list(kombu.pools.connections.values()):
        for connection in [*pool._resource.queue, *pool._dirty]:
            transport = getattr(getattr(connection, "_connection", None), "transport", None)
            if getattr(transport, "sock", None) is not None:
                ports.add(transport.sock.getsockname()[1])
    return ports


def test_a_reply_on_a_connection_the_broker_forgot_still_reaches_its_caller(amqp_uri, settings_for,
                                                                           forgetting_proxy, start_service):
    """Replies leave on a pooled connection that nothing reads between two replies: one
    the broker has forgotten (a node paused by a partition and restarted) still looks
    open. An unconfirmed reply written into it was lost and its caller waited out its
    timeout; the cluster tests saw that after healed partitions. The reply's confirm reads
    the connection, finds it dead, and kombu sends the reply again on a new one."""
    import kombu.pools

    from tools.client import connect

    kombu.pools.reset()  # this process's pools: only the service's own connections from here
    start_service(ExampleInventory, settings=settings_for("catalog", amqp_uri=forgetting_proxy.uri))
    product = uid()
    with connect(amqp_uri, timeout=5) as client:  # the caller does not go through the proxy
        client.catalog.adjust_stock(product, 3, "delivery", request_id=f"req-{product}")
    assert forgetting_proxy.forget(_pooled_connection_ports())  # the service's reply connection among them
    with connect(amqp_uri, timeout=5) as client:
        assert client.catalog.get_stock(product)["on_hand"] == 3
        assert client.catalog.get_stock(product)["on_hand"] == 3


def test_the_consumer_check_restarts_only_a_lost_consumer(start_service):
    container = start_service(ExampleInventory)
    wait_for(lambda: consuming(container), what="consumer started")
    check = _router_of(container).queue_consumer.check
    assert not check("q", ready=0, consumers=1, received=0)  # nothing waits
    assert not check("q", ready=0, consumers=1, received=0)
    assert not check("q", ready=5, consumers=1, received=3)  # it is receiving
    assert not check("q", ready=5, consumers=1, received=0)  # once may be a pause
    assert not check("q", ready=5, consumers=1, received=2)  # it came back: count again
    assert not check("q", ready=5, consumers=1, received=0)
    assert check("q", ready=5, consumers=1, received=0)  # twice in a row: reconnected
    wait_for(lambda: consuming(container), what="consuming again")
    assert not check("q", ready=0, consumers=0, received=0)  # no consumer on the queue at all
    assert check("q", ready=0, consumers=0, received=0)
    wait_for(lambda: consuming(container), what="consuming again")


def test_two_concurrent_unregisters_of_one_consumer_both_return(start_service):
    """nameko's QueueConsumer kept one wake-up per provider: a second unregister
    replaced the first's, which then waited forever; a container's stop hung so in
    this suite's teardowns (about one run in eight of the integration module)."""
    container = start_service(ExampleAnalytics)
    wait_for(lambda: consuming(container), what="consumer started")
    router = _router_of(container)
    calls = [eventlet.spawn(router.queue_consumer.unregister_provider, router) for _ in range(2)]
    with eventlet.Timeout(10):
        for call in calls:
            call.wait()
    assert router not in router.queue_consumer._providers


def test_liveness_fails_when_the_event_consumer_thread_has_ended(start_service):
    import requests

    from tools.testing import settings_of_container

    container = start_service(ExampleInventory)
    wait_for(lambda: consuming(container), what="consumer started")
    live = f"http://127.0.0.1:{settings_of_container(container).http_port}/health/live"
    assert requests.get(live, timeout=5).json() == {
        "status": "live", "checks": {"event_consumer_thread": True, "rpc_consumer_thread": True}}
    # kombu's loop ends as when nameko finds no consumer left; nothing restarts it
    _router_of(container).queue_consumer.should_stop = True
    answer = wait_for(lambda: (r := requests.get(live, timeout=5)).status_code == 503 and r.json(),
                      what="liveness failing")
    assert answer == {"status": "dead",
                      "checks": {"event_consumer_thread": False, "rpc_consumer_thread": True}}
    # and the container still stops (nameko waited forever for the dead thread to cancel
    # its consumers: the hang once seen in this suite's teardowns)
    container.stop()


def test_a_poison_message_is_parked_after_exactly_n_failures_then_replayed(start_service, amqp_uri):
    inventory = start_service(ExampleInventory, event_max_failures=3)
    db = store_of(inventory)
    db.flags.delete_many({})
    order = uid("poison")
    envelope = order_placed(order, uid())
    before = dead_letter_depth(amqp_uri, "catalog")
    publish_event(amqp_uri, envelope)
    wait_for(lambda: dead_letter_depth(amqp_uri, "catalog") == before + 1, timeout=30,
             what="poison message dead-lettered")
    assert failures_of(db, "catalog", envelope["event_id"]) == 3
    listed = {row["event_id"]: row for row in list_dead_letters(amqp_uri, "catalog")}
    assert listed[envelope["event_id"]]["reason"] == "handler_failed"
    assert listed[envelope["event_id"]]["failures"] == 3
    assert "cannot handle this order yet" in listed[envelope["event_id"]]["error"]
    db.flags.insert_one({"_id": "cure"})
    assert replay_dead_letters(amqp_uri, "catalog") >= 1
    wait_for(lambda: db.applied.count_documents({"order_id": order}) == 1, what="replayed event applied")
    assert dead_letter_depth(amqp_uri, "catalog") == 0


def test_an_unhandled_type_and_an_undecodable_body_go_to_the_dead_letter_queue_with_a_reason(
        start_service, amqp_uri):
    start_service(ExampleInventory)
    before = dead_letter_depth(amqp_uri, "catalog")
    # catalog's queue is bound to order_paid (the event catalog says so), which the
    # example service does not handle.
    unhandled = make_envelope("order", "order_paid", dict(spec_for("order", "order_paid").example))
    publish_event(amqp_uri, unhandled)
    with Connection(amqp_uri) as conn:
        conn.Producer().publish(b"{not json", exchange=Exchange(""), routing_key="evt--catalog",
                                content_type="application/json", content_encoding="utf-8",
                                message_id="undecodable-1")
    wait_for(lambda: dead_letter_depth(amqp_uri, "catalog") == before + 2, what="both dead-lettered")
    reasons = {row["event_id"] or "?": row["reason"] for row in list_dead_letters(amqp_uri, "catalog")}
    assert reasons[unhandled["event_id"]] == "unhandled"
    assert reasons["?"] == "undecodable"
    # Clean up: the replayed copies are dead-lettered again, so purge instead.
    with Connection(amqp_uri) as conn:
        conn.default_channel.queue_purge("evt--catalog.dlq")


def test_a_two_step_handler_whose_second_step_fails_transiently_applies_both_steps_once(
        start_service, amqp_uri):
    inventory = start_service(ExampleInventory)
    db = store_of(inventory)
    db.flags.insert_one({"_id": "fail_second_step_once"})
    order = uid("ord")
    envelope = make_envelope("order", "order_cancelled", {
        "order_id": order, "member_id": "mem_1", "reason": "member", "was_paid": False})
    publish_event(amqp_uri, envelope)
    wait_for(lambda: (db.steps.find_one({"_id": order}) or {}).get("second") == 1, what="second step")
    publish_event(amqp_uri, envelope)  # and a redelivery of the whole event
    wait_for(lambda: db.inbox.count_documents({"event_id": envelope["event_id"]}) == 2,
             what="both steps recorded")
    wait_for(lambda: _duplicates(inventory, "order_cancelled") >= 1, what="redelivery skipped")
    assert db.steps.find_one({"_id": order}) == {"_id": order, "first": 1, "second": 1}


def _duplicates(container, event_type):
    from shared.observability import metrics

    return metrics.EVENTS_DUPLICATE.labels(container.service_name, event_type)._value.get()


@pytest.fixture
def unknown_commit_results(monkeypatch):
    """Every commit applies, then reports an unknown outcome (a network blip after
    the server committed), as many times as `left` says."""
    real = ClientSession.commit_transaction
    state = {"left": 0}

    def commit(session):
        real(session)
        if state["left"] > 0:
            state["left"] -= 1
            error = ConnectionFailure("connection reset after commit")
            error._add_error_label("UnknownTransactionCommitResult")
            raise error

    monkeypatch.setattr(ClientSession, "commit_transaction", commit)
    return state


def test_a_commit_with_an_unknown_result_is_applied_once(start_service, rpc, unknown_commit_results):
    inventory = start_service(ExampleInventory)
    db = store_of(inventory)
    product = uid()
    unknown_commit_results["left"] = 3  # every in-process commit retry
    with pytest.raises(ServiceUnavailable):
        rpc.catalog.adjust_stock(product, 5, "delivery", request_id=f"req-{product}")
    assert db.stock.find_one({"_id": product})["on_hand"] == 5  # it did apply, once
    # The caller repeats with its request id: not applied again.
    with pytest.raises(Conflict) as caught:
        rpc.catalog.adjust_stock(product, 5, "delivery", request_id=f"req-{product}")
    assert caught.value.details["code"] == "request_applied"
    assert db.stock.find_one({"_id": product})["on_hand"] == 5
    assert db.outbox.count_documents({"envelope.data.product_id": product}) == 1


def test_a_state_changing_rpc_with_a_request_id_applies_once(start_service, rpc):
    inventory = start_service(ExampleInventory)
    db = store_of(inventory)
    product = uid()
    first = rpc.catalog.adjust_stock(product, 2, "delivery", request_id="r-1")
    again = rpc.catalog.adjust_stock(product, 2, "delivery", request_id="r-1")
    assert again == first == {"id": product, "on_hand": 2, "reserved": 0}
    assert rpc.catalog.adjust_stock(product, 2, "delivery", request_id="r-2")["on_hand"] == 4
    assert db.stock.find_one({"_id": product})["on_hand"] == 4
    with pytest.raises(ValidationFailed) as caught:
        rpc.catalog.adjust_stock(product, 2, "delivery", request_id={"$gt": ""})
    assert "request_id" in caught.value.field_errors
    # A refused write stores nothing: the same id runs again once the input is right.
    with pytest.raises(ValidationFailed):
        rpc.catalog.adjust_stock(product, -100, "oops", request_id="r-3")
    assert rpc.catalog.adjust_stock(product, 1, "fixed", request_id="r-3")["on_hand"] == 5


def _commit_rows(db, count, event_type="stock_adjusted", lease_seconds=0.0):
    client = db.client
    ids = []
    for i in range(count):
        with client.start_session() as session, session.start_transaction():
            tx = Tx(db, session, "catalog", lease_seconds=lease_seconds)
            ids.append(tx.emit(event_type, {"product_id": f"p{i}", "delta": 1, "reason": "test",
                                            "on_hand": 1, "available": 1, "version": i + 1})["event_id"])
    return ids


@pytest.fixture
def catalog_events(amqp_uri):
    """A queue that receives every catalog stock_adjusted event: what was published. The
    queues of the event's consumers exist (a relay holds what they would miss), and go
    with the test, so no later test starts on a backlog."""
    name = f"probe-{uuid.uuid4().hex[:8]}"
    consumers = consumers_of_source("catalog")
    with Connection(amqp_uri) as conn:
        declare_suite(conn, consumers)
        queue = Queue(name, exchange=event_exchange("catalog"), routing_key="stock_adjusted",
                      durable=False, auto_delete=False)
        queue(conn.default_channel).declare()

    def received() -> list[str]:
        ids = []
        with Connection(amqp_uri) as conn:
            channel = conn.channel()
            while (message := channel.basic_get(name, no_ack=True)) is not None:
                ids.append(channel.message_to_python(message).payload["event_id"])
        return ids

    yield received
    with Connection(amqp_uri) as conn:
        for queue_name in [name, *(f"evt--{consumer}" for consumer in consumers)]:
            conn.default_channel.queue_delete(queue_name)


def test_two_relays_on_one_outbox_publish_each_row_once(mongo_uri, amqp_uri, catalog_events):
    db = MongoClient(mongo_uri, w="majority", tz_aware=True)[f"relays_{uuid.uuid4().hex[:6]}"]
    db.outbox.create_indexes(outbox.INDEXES)
    routing = ConsumerQueues("catalog")
    relays = [OutboxRelay(db, "catalog", amqp_uri, routing=routing, window=50) for _ in range(2)]
    ids = _commit_rows(db, 120)
    import eventlet

    pool = eventlet.GreenPool()
    for _ in range(3):
        for relay in relays:
            pool.spawn(relay.sweep)
        pool.waitall()
    assert db.outbox.count_documents({"pending": True}) == 0
    seen = wait_for(lambda: (got := catalog_events()) and got, what="published events")
    seen += catalog_events()
    assert sorted(seen) == sorted(ids)  # every row once, none twice
    for relay in relays:
        relay.stop()


def test_a_relay_publishing_while_its_own_sweep_runs_fails_no_window(mongo_uri, amqp_uri,
                                                                       catalog_events, capsys):
    """The relay's thread and the sweep share one publisher connection: concurrently
    they read one socket ("Second simultaneous read"), each window fails and its rows
    wait for the next round. Seen in the cluster soak under load."""
    import eventlet

    db = MongoClient(mongo_uri, w="majority", tz_aware=True)[f"shared_{uuid.uuid4().hex[:6]}"]
    db.outbox.create_indexes(outbox.INDEXES)
    relay = OutboxRelay(db, "catalog", amqp_uri, window=20,
                        routing=ConsumerQueues("catalog"))
    swept = _commit_rows(db, 200)  # pending rows, due now: the sweep's
    fresh = _commit_rows(db, 200, lease_seconds=60)  # the relay thread's, leased to it
    relay.submit(db.outbox.find_one({"_id": event_id})["envelope"] for event_id in fresh)
    thread = eventlet.spawn(relay.run)
    sweeps = [eventlet.spawn(relay.sweep) for _ in range(3)]
    for sweep in sweeps:
        sweep.wait()
    wait_for(lambda: db.outbox.count_documents({"pending": True}) == 0, timeout=30,
             what="every row published")
    relay.stop()
    thread.wait()
    assert "publisher_window_failed" not in capsys.readouterr().out
    assert db.outbox.count_documents({"attempts": {"$gt": 0}}) == 0  # no window failed
    seen = wait_for(catalog_events, what="published events")
    seen += catalog_events()
    assert sorted(seen) == sorted(swept + fresh)


def test_parked_and_failing_rows_do_not_starve_a_fresh_one(mongo_uri, amqp_uri, catalog_events):
    db = MongoClient(mongo_uri, w="majority", tz_aware=True)[f"starve_{uuid.uuid4().hex[:6]}"]
    db.outbox.create_indexes(outbox.INDEXES)
    now = utcnow()
    parked = _commit_rows(db, 500)
    db.outbox.update_many({"_id": {"$in": parked}}, {"$set": {"state": "parked", "attempts": 10},
                                                     "$unset": {"pending": ""}})
    failing = _commit_rows(db, 600)
    db.outbox.update_many({"_id": {"$in": failing}},
                          {"$set": {"attempts": 4, "next_attempt_at": now + timedelta(minutes=5)}})
    fresh = _commit_rows(db, 1)
    relay = OutboxRelay(db, "catalog", amqp_uri,
                        routing=ConsumerQueues("catalog"))
    assert relay.sweep() == 1
    assert wait_for(catalog_events, what="the fresh row published") == fresh
    assert outbox.list_rows(db, "parked", limit=1000).__len__() == 500
    assert outbox.retry_parked(db, parked[:10]) == 10
    assert relay.sweep() == 10
    relay.stop()


@pytest.mark.parametrize("declare", ["all", "own"])
def test_a_deleted_consumer_queue_is_repaired_and_loses_nothing(start_service, rpc, amqp_uri, declare):
    own = declare == "own"
    inventory = start_service(ExampleInventory, topology_declare_all=not own)
    analytics = start_service(ExampleAnalytics, topology_declare_all=not own, topology_check_interval=1.0)
    seen = store_of(analytics).seen
    product = uid()
    rpc.catalog.adjust_stock(product, 1, "before")
    wait_for(lambda: seen.count_documents({"product_id": product}) == 1, what="first event")
    with Connection(amqp_uri) as conn:
        conn.default_channel.queue_delete("evt--analytics")
    for _ in range(5):
        rpc.catalog.adjust_stock(product, 1, "while the queue is gone")
    wait_for(lambda: seen.count_documents({"product_id": product}) == 6, timeout=45,
             what="every event reached the consumer whose queue was deleted")
    assert store_of(inventory).outbox.count_documents({"pending": True}) == 0


def test_a_queue_recreated_at_once_under_its_live_consumer_is_consumed_again(start_service, amqp_uri):
    """A sibling replica's check (or anything) re-creates a deleted queue within moments:
    RabbitMQ may then send the live consumer no cancel and attach its old channel to the
    new queue, where it holds up to its prefetch and delivers nothing. The messages
    beyond the prefetch wait as ready while this process receives none, which the
    consumer check reads as a lost consumer: it reconnects and everything arrives."""
    analytics = start_service(ExampleAnalytics, consumer_check_interval=0.5, topology_check_interval=3600)
    seen = store_of(analytics).seen
    product = uid()

    def publish(count: int) -> None:
        data = dict(spec_for("catalog", "stock_adjusted").example, product_id=product)
        with Connection(amqp_uri) as conn:
            producer = conn.Producer()
            for _ in range(count):
                envelope = make_envelope("catalog", "stock_adjusted", data)
                producer.publish(envelope, exchange=event_exchange("catalog"), routing_key="stock_adjusted",
                                 serializer="json", mandatory=True)

    publish(1)
    wait_for(lambda: seen.count_documents({"product_id": product}) == 1, what="the first event")
    def sibling_declares() -> bool:
        with suppress(ChannelError):  # the delete not yet done: the bind finds no queue
            declare_service(sibling, "analytics")
            return True
        return False

    with Connection(amqp_uri) as conn, Connection(amqp_uri) as sibling:
        conn.default_channel.queue_delete("evt--analytics", nowait=True)
        wait_for(sibling_declares, what="the queue re-created with its bindings")
    prefetch = _router_of(analytics).prefetch
    publish(prefetch + 50)
    wait_for(lambda: seen.count_documents({"product_id": product}) == prefetch + 51, timeout=30,
             what="every event published after the re-creation")


def test_a_batch_handler_applies_each_event_once_and_isolates_a_poison_event(start_service, amqp_uri):
    analytics = start_service(ExampleAnalytics, event_max_failures=2)
    db = store_of(analytics)
    events = [make_envelope("order", "order_confirmed", {"order_id": uid("ord")}) for _ in range(120)]
    poison = make_envelope("order", "order_confirmed", {"order_id": uid("poison")})
    before = dead_letter_depth(amqp_uri, "analytics")
    duplicates_before = _duplicates(analytics, "order_confirmed")
    for envelope in events[:60] + [poison] + events[60:] + events[:20]:  # and 20 redelivered
        publish_event(amqp_uri, envelope)
    wait_for(lambda: db.batched.count_documents({}) == 120, timeout=30, what="every event folded")
    wait_for(lambda: dead_letter_depth(amqp_uri, "analytics") == before + 1, timeout=30,
             what="only the poison event dead-lettered")
    assert db.batched.count_documents({}) == 120
    assert len(db.batched.distinct("event_id")) == 120
    assert db.batched.find_one(sort=[("batch_size", -1)])["batch_size"] > 1  # batches formed
    # every redelivered copy was suppressed by the batch's inbox, and counted as such
    wait_for(lambda: _duplicates(analytics, "order_confirmed") - duplicates_before >= 20,
             what="the redelivered copies counted as duplicates")
    with Connection(amqp_uri) as conn:
        conn.default_channel.queue_purge("evt--analytics.dlq")

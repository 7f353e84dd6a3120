"""The base every service class derives from: observability and the health
and metrics endpoints. A service adds its own store, clients and entrypoints.

    class CatalogService(ShopService):
        name = "catalog"
        store = Store(indexes=INDEXES)
"""
from __future__ import annotations

from eventlet.semaphore import Semaphore
from kombu import Connection
from nameko.extensions import DependencyProvider
from werkzeug.wrappers import Response

from shared.config import settings_of
from shared.messaging.rpc import RpcQueueConsumer
from shared.messaging.subscriptions import EventRouter
from shared.observability import metrics
from shared.observability.instrumentation import Observability
from shared.storage.store import Store
from shared.web.http import http, json_response


class BrokerCheck:
    """One broker connection per container, reused by every readiness probe
    (a new connection every 10 s per pod is churn the broker has to absorb):
    a passive declare of `amq.direct` (present in every vhost, and a passive
    declare needs no permission) is the round trip; a failure drops the
    connection, and the next probe opens a new one."""

    def __init__(self, amqp_uri: str):
        self.amqp_uri = amqp_uri
        self.connection = None
        self.lock = Semaphore(1)

    def ok(self) -> bool:
        with self.lock:  # probes run in concurrent workers; one channel, one at a time
            try:
                if self.connection is None:
                    self.connection = Connection(self.amqp_uri, connect_timeout=2)
                    self.connection.ensure_connection(max_retries=1, timeout=2)
                self.connection.default_channel.exchange_declare("amq.direct", "direct", passive=True)
                return True
            except Exception:
                self.close()
                return False

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:  # already broken: nothing to release
                pass
            self.connection = None


def _broker_check(container) -> BrokerCheck:
    check = getattr(container, "shop_broker_check", None)
    if check is None:
        check = container.shop_broker_check = BrokerCheck(settings_of(container).amqp_uri)
    return check


def readiness(container) -> dict:
    """Checks behind /health/ready: mongod reachable, broker reachable, and
    the event consumer registered (for services that consume events)."""
    checks = {}
    # nameko starts every extension at once and the HTTP entrypoint answers while
    # the others (the Store's indexes, a service's own start-up data) are still
    # starting: `python -m shared.run` marks the container started once all are.
    checks["started"] = bool(getattr(container, "shop_started", True))
    stores = [d for d in container.dependencies if isinstance(d, Store)]
    if stores:
        checks["mongo"] = all(store.ping() for store in stores)
    checks["broker"] = _broker_check(container).ok()
    routers = [e for e in container.subextensions if isinstance(e, EventRouter)]
    if routers:
        checks["consumer"] = all(router.consuming for router in routers)
    return checks


def liveness(container) -> dict:
    """Checks behind /health/live: what only a restart can mend. A queue consumer
    (events, or RPC requests and replies) whose thread has ended consumes nothing
    again in this process."""
    routers = [e for e in container.subextensions if isinstance(e, EventRouter)]
    checks = {"event_consumer_thread": all(router.queue_consumer.thread_alive for router in routers)}
    rpc_consumers = [e for e in container.subextensions if isinstance(e, RpcQueueConsumer)]
    if rpc_consumers:
        checks["rpc_consumer_thread"] = all(consumer.thread_alive for consumer in rpc_consumers)
    return checks


READY = {"description": "readiness and each check", "content": {"application/json": {"schema": {
    "type": "object", "required": ["status", "checks"],
    "properties": {"status": {"type": "string", "enum": ["ready", "not_ready"]},
                   "checks": {"type": "object", "additionalProperties": {"type": "boolean"}}}}}}}


LIVE = {"description": "liveness and each check", "content": {"application/json": {"schema": {
    "type": "object", "required": ["status", "checks"],
    "properties": {"status": {"type": "string", "enum": ["live", "dead"]},
                   "checks": {"type": "object", "additionalProperties": {"type": "boolean"}}}}}}}


class HealthChecks:
    def __init__(self, container):
        self.container = container

    def ready(self) -> dict:
        return readiness(self.container)

    def live(self) -> dict:
        return liveness(self.container)


class Health(DependencyProvider):
    def get_dependency(self, worker_ctx):
        return HealthChecks(self.container)

    def stop(self):
        check = getattr(self.container, "shop_broker_check", None)
        if check is not None:
            check.close()

    def kill(self):
        self.stop()


class ShopService:
    # Health and metrics stay open on the pod network (the NetworkPolicy limits
    # who reaches them); every other endpoint needs a credential beyond loopback.
    observability = Observability()
    health = Health()

    @http("GET", "/health/live", access="open", openapi={
        "summary": "The process is alive (its event consumer thread runs).",
        "responses": {"200": LIVE, "503": LIVE}})
    def health_live(self, request):
        checks = self.health.live()
        live = all(checks.values())
        return json_response({"status": "live" if live else "dead", "checks": checks},
                             200 if live else 503)

    @http("GET", "/health/ready", access="open", openapi={
        "summary": "mongod, the broker and the event consumer are reachable.",
        "responses": {"200": READY, "503": READY}})
    def health_ready(self, request):
        checks = self.health.ready()
        ready = all(checks.values())
        return json_response({"status": "ready" if ready else "not_ready", "checks": checks},
                             200 if ready else 503)

    @http("GET", "/metrics", access="open", openapi={
        "summary": "Prometheus metrics of this process.",
        "responses": {"200": {"description": "text exposition format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}}})
    def prometheus_metrics(self, request):
        return Response(metrics.exposition(), mimetype="text/plain; version=0.0.4")

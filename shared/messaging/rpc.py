"""RPC in and out.

- `@rpc(schema=...)` exposes a method: its arguments are validated first
  (shared.security.guard; an entrypoint without a schema does not register); typed
  errors (ShopError) are expected (logged as warnings, returned typed);
  transient store/broker errors are retried.
- `RpcClient("catalog")` calls another service with a timeout: a stopped or
  stuck service raises ServiceTimeout instead of waiting forever, and the
  request expires in the queue so a restarted service does not run stale calls.
"""
from __future__ import annotations

import functools
import inspect

import eventlet
from nameko.amqp.publish import Publisher
from nameko.constants import (
    AMQP_SSL_CONFIG_KEY,
    AMQP_URI_CONFIG_KEY,
    DEFAULT_SERIALIZER,
    LOGIN_METHOD_CONFIG_KEY,
    NON_PERSISTENT,
    SERIALIZER_CONFIG_KEY,
)
from nameko.exceptions import UnknownService
from nameko.extensions import DependencyProvider
from nameko.rpc import MethodProxy, ReplyListener, Responder, RpcConsumer, get_rpc_exchange
from nameko.rpc import Rpc as NamekoRpc

from shared.config import settings_of
from shared.errors import EXPECTED_ERRORS, ServiceTimeout, ServiceUnavailable
from shared.messaging import idempotency
from shared.messaging.consumers import WatchedQueueConsumer
from shared.observability import metrics
from shared.observability.logs import get_logger
from shared.retry import BROKER_LINK_ERRORS, retrying
from shared.security import guard

log = get_logger(__name__)


# A call's messages are worth no disk write. A request lost with the broker, or a reply
# lost on the way back, makes the caller time out and repeat the call, with its request
# id when it writes (idempotency.py), which answers with the first result. Waiting for
# the broker to fsync a persistent request is what made a bare call cost ~38 ms here
# (bench/README.md, "Unit costs").
class RequestPublisher(Publisher):
    """Requests: confirmed, since the confirm is how `mandatory` tells a call to a
    service that has no queue (nameko's UnknownService); not persistent."""

    delivery_mode = NON_PERSISTENT


class ReplyPublisher(Publisher):
    """Replies go to the caller's own reply queue (it expires unused): not persistent,
    but confirmed. Replies leave on a pooled connection that nothing reads between two
    replies, so one the broker has dropped (its node paused by a partition, restarted,
    or the connection closed) goes unnoticed: an unconfirmed reply written into it is
    lost and its caller waits out its timeout (the cluster partition test saw it after
    every heal). Waiting for the confirm reads the connection, finds it dead, and kombu
    reconnects and sends the reply again; the wait is bounded, so a connection that
    is silently cut off (no reset, packets dropped) is given up the same way. A reply
    sent twice is harmless: the caller takes the first for its correlation id."""

    delivery_mode = NON_PERSISTENT


class RequestProxy(MethodProxy):
    publisher_cls = RequestPublisher


def no_such_service(target: str, method: str) -> ServiceUnavailable:
    """What a call to a service with no queue raises, typed (nameko's UnknownService, from
    the request's confirm: unroutable with `mandatory`), so it crosses RPC as itself."""
    return ServiceUnavailable(f"{target}.{method}: no {target} service is running",
                              {"service": target, "method": method})


class ShopResponder(Responder):
    def __init__(self, *args, confirm_timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        # nameko builds the publisher from (amqp_uri, ssl, login_method) alone; the
        # confirm's bound rides along as a publish argument
        self.publisher_cls = functools.partial(ReplyPublisher, confirm_timeout=confirm_timeout)


class RpcQueueConsumer(WatchedQueueConsumer):
    """The one queue consumer of a container's RPC requests and replies, watched."""


class ShopReplyListener(ReplyListener):
    queue_consumer = RpcQueueConsumer()


class ShopRpcConsumer(RpcConsumer):
    queue_consumer = RpcQueueConsumer()

    def handle_result(self, message, result, exc_info):
        # nameko's, with the reply publisher above.
        config = self.container.config
        responder = ShopResponder(config[AMQP_URI_CONFIG_KEY], get_rpc_exchange(config),
                                  config.get(SERIALIZER_CONFIG_KEY, DEFAULT_SERIALIZER), message,
                                  ssl=config.get(AMQP_SSL_CONFIG_KEY),
                                  login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
                                  confirm_timeout=settings_of(self.container).confirm_timeout)
        result, exc_info = responder.send_response(result, exc_info)
        self.queue_consumer.ack_message(message)
        return result, exc_info


class Rpc(NamekoRpc):
    rpc_consumer = ShopRpcConsumer()

    def handle_result(self, message, worker_ctx, result, exc_info):
        # nameko lets a failed reply publish (broker restarting) raise out of the
        # worker, which kills the whole container. The reply is lost instead: the
        # caller times out (ServiceTimeout) and may retry; the unacked request is
        # redelivered when the connection is back.
        try:
            return super().handle_result(message, worker_ctx, result, exc_info)
        except BROKER_LINK_ERRORS as exc:
            log.warning("rpc_reply_lost", method=self.method_name, error=type(exc).__name__)
            return result, exc_info

    def check_signature(self, args, kwargs):
        # Check against the undecorated method, not the retry wrapper.
        from nameko.exceptions import IncorrectSignature

        method = getattr(self.container.service_cls, self.method_name)
        target = getattr(method, "__wrapped_signature__", method)
        if "request_id" not in inspect.signature(target).parameters:
            kwargs = {k: v for k, v in kwargs.items() if k != "request_id"}  # the chassis's own
        try:
            inspect.signature(target).bind(None, *args, **kwargs)
        except TypeError as exc:
            raise IncorrectSignature(str(exc)) from None


def rpc(fn=None, *, schema=None, expected_exceptions: tuple = ()):
    """`@rpc(schema={"order_id": guard.Id()})` on a service method: every argument
    is validated (shared.security.guard) before the method runs; an entrypoint without a
    schema is refused when the class is defined. `schema={}` for no arguments.

    Every method also takes an optional `request_id` keyword: a repeated call
    with the same id returns the first call's result (idempotency.py)."""

    if fn is not None:
        raise TypeError(f"@rpc on {fn.__qualname__} needs schema=...: every RPC argument is "
                        "validated (shared/security/guard.py)")

    def decorate(method):
        if schema is None:
            raise TypeError(f"@rpc on {method.__qualname__} needs schema=...: every RPC argument "
                            "is validated (shared/security/guard.py)")
        wrapped = retrying(guard.validating(method, schema), kind="rpc")
        wrapped.__wrapped_signature__ = method
        wrapped = _once_per_request(wrapped)
        return Rpc.decorator(expected_exceptions=EXPECTED_ERRORS + tuple(expected_exceptions))(wrapped)

    return decorate


def _once_per_request(fn):
    target = getattr(fn, "__wrapped_signature__", fn)
    if "request_id" in inspect.signature(target).parameters:
        return fn  # the method keys its own writes by request_id (e.g. member.redeem_points)

    @functools.wraps(fn)
    def wrapper(self, *args, request_id=None, **kwargs):
        if request_id is None:
            return fn(self, *args, **kwargs)
        service = type(self).name
        db = _store_of(self)
        before = metrics.IDEMPOTENT_REPLAYS.labels(service, fn.__name__)
        marker = {}

        def call():
            marker["ran"] = True
            return fn(self, *args, **kwargs)

        result = idempotency.run_once(db, service, fn.__name__, request_id, call)
        if not marker:
            before.inc()
        return result

    wrapper.__wrapped_signature__ = getattr(fn, "__wrapped_signature__", fn)
    return wrapper


def _store_of(service):
    """The database of the worker's injected Store."""
    from shared.storage.store import StoreHandle

    for value in vars(service).values():
        if isinstance(value, StoreHandle):
            return value.db
    raise TypeError(f"{type(service).__name__} has no Store: request_id needs one")


class ServiceClient:
    def __init__(self, worker_ctx, target: str, listener, timeout: float, caller: str):
        self._worker_ctx = worker_ctx
        self._target = target
        self._listener = listener
        self._timeout = timeout
        self._caller = caller

    def __getattr__(self, method: str):
        def call(*args, **kwargs):
            proxy = RequestProxy(self._worker_ctx, self._target, method, self._listener,
                                 expiration=self._timeout)
            try:
                reply = proxy.call_async(*args, **kwargs)
            except UnknownService:
                metrics.RPC_CLIENT_CALLS.labels(self._caller, self._target, method, "unavailable").inc()
                raise no_such_service(self._target, method) from None
            try:
                with eventlet.Timeout(self._timeout):
                    result = reply.result()
            except eventlet.Timeout:
                metrics.RPC_CLIENT_CALLS.labels(self._caller, self._target, method, "timeout").inc()
                raise ServiceTimeout(
                    f"{self._target}.{method} did not answer within {self._timeout}s",
                    {"service": self._target, "method": method, "timeout_s": self._timeout}) from None
            except Exception:
                metrics.RPC_CLIENT_CALLS.labels(self._caller, self._target, method, "error").inc()
                raise
            metrics.RPC_CLIENT_CALLS.labels(self._caller, self._target, method, "ok").inc()
            return result

        call.__name__ = method
        return call


class RpcClient(DependencyProvider):
    """`catalog = RpcClient("catalog")`; `self.catalog.get_product(pid)`."""

    rpc_reply_listener = ShopReplyListener()

    def __init__(self, target: str, timeout: float | None = None):
        self.target = target
        self.timeout = timeout

    def setup(self):
        self.effective_timeout = self.timeout or settings_of(self.container).rpc_timeout

    def get_dependency(self, worker_ctx) -> ServiceClient:
        return ServiceClient(worker_ctx, self.target, self.rpc_reply_listener,
                             self.effective_timeout, self.container.service_name)

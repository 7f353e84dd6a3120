"""A standalone RPC client for scripts, the CLI, tests and the traffic
generator: keeps one broker connection, has a timeout, carries a correlation id.

    with connect() as rpc:
        rpc.catalog.get_product("prd_...")
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from nameko.exceptions import RpcTimeout, UnknownService
from nameko.standalone.rpc import ClusterRpcProxy

from shared.config import Settings
from shared.errors import ServiceTimeout
from shared.messaging.rpc import RequestProxy, no_such_service
from shared.observability.context import new_correlation_id


class _Service:
    def __init__(self, cluster: ClusterRpcProxy, name: str, timeout: float):
        self._cluster = cluster
        self._name = name
        self._timeout = timeout

    def __getattr__(self, method: str):
        # The services' own request publisher (shared.rpc: not persistent), on the
        # standalone proxy's worker context and reply listener (nameko 2.14's).
        target = RequestProxy(self._cluster._worker_ctx, self._name, method,
                              self._cluster._reply_listener)

        def call(*args, **kwargs):
            try:
                return target(*args, **kwargs)
            except UnknownService:
                raise no_such_service(self._name, method) from None
            except RpcTimeout:
                raise ServiceTimeout(f"{self._name}.{method} did not answer within {self._timeout}s",
                                     {"service": self._name, "method": method,
                                      "timeout_s": self._timeout}) from None

        return call


class Client:
    def __init__(self, cluster: ClusterRpcProxy, timeout: float):
        self._cluster = cluster
        self._timeout = timeout

    def __getattr__(self, service: str) -> _Service:
        return _Service(self._cluster, service, self._timeout)


@contextmanager
def connect(amqp_uri: str | None = None, timeout: float | None = None,
            correlation_id: str | None = None) -> Iterator[Client]:
    settings = Settings.from_env("client")
    timeout = timeout or settings.rpc_timeout
    config = {"AMQP_URI": amqp_uri or settings.amqp_uri}
    context = {"correlation_id": correlation_id or new_correlation_id()}
    cluster = ClusterRpcProxy(config, context_data=context, timeout=timeout)
    with cluster:
        yield Client(cluster, timeout)

"""RED metrics and structured logs for every entrypoint, and the worker's
correlation id: taken from the caller (nameko context headers or the event
envelope) or minted here, then carried by every RPC call and event it makes."""
from __future__ import annotations

import time

import structlog
from nameko.extensions import DependencyProvider
from nameko.rpc import Rpc as NamekoRpc
from nameko.timer import Timer
from nameko.web.handlers import HttpRequestHandler

from shared.config import settings_of
from shared.errors import ShopError
from shared.messaging.subscriptions import DUPLICATE, RoutedEntrypoint
from shared.observability import context, logs, metrics

log = logs.get_logger("shop.entrypoint")


def entrypoint_kind(entrypoint) -> str:
    if isinstance(entrypoint, RoutedEntrypoint):
        return "event"
    if isinstance(entrypoint, NamekoRpc):
        return "rpc"
    if isinstance(entrypoint, HttpRequestHandler):
        return "http"
    if isinstance(entrypoint, Timer):
        return "timer"
    return "other"


class Observability(DependencyProvider):
    """Declared once on the service base class; needs nothing from workers."""

    def setup(self):
        self.settings = settings_of(self.container)
        logs.configure(self.container.service_name, self.settings.log_level)
        self._started: dict = {}

    def worker_setup(self, worker_ctx):
        service = self.container.service_name
        entrypoint = worker_ctx.entrypoint
        kind = entrypoint_kind(entrypoint)
        correlation = worker_ctx.data.get(context.CORRELATION_KEY) or context.new_correlation_id()
        worker_ctx.data[context.CORRELATION_KEY] = correlation
        context.correlation_id.set(correlation)
        fields = {"service": service, "entrypoint": entrypoint.method_name, "kind": kind,
                  "correlation_id": correlation}
        if kind == "event":
            handling = {"consumer": service, "steps": 0, "skipped": 0,
                        "entrypoint": f"{service}.{entrypoint.method_name}",
                        "multi_step": getattr(entrypoint, "multi_step", False)}
            subject = worker_ctx.args[0]
            if isinstance(subject, list):  # a batch
                handling.update(batch=subject, envelope=None, cause_id=None)
                fields.update(batch_size=len(subject))
            else:
                handling.update(batch=None, envelope=subject, cause_id=subject.get("event_id"))
                fields.update(event_id=subject.get("event_id"), event_type=subject.get("event_type"))
            context.current_event.set(handling)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(**fields)
        worker_ctx.service._shop_settings = self.settings
        metrics.IN_FLIGHT.labels(service, kind).inc()
        self._started[worker_ctx] = (kind, time.perf_counter())

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        service = self.container.service_name
        kind, started = self._started.pop(worker_ctx, ("other", time.perf_counter()))
        elapsed = time.perf_counter() - started
        method = worker_ctx.entrypoint.method_name
        if exc_info is None:
            outcome = "duplicate" if result == DUPLICATE else "ok"
        elif isinstance(exc_info[1], ShopError):
            outcome = "rejected"
        else:
            outcome = "error"
        metrics.REQUESTS.labels(service, kind, method, outcome).inc()
        metrics.REQUEST_SECONDS.labels(service, kind, method).observe(elapsed)
        metrics.IN_FLIGHT.labels(service, kind).dec()
        if kind == "http" and method in ("health_live", "health_ready", "prometheus_metrics"):
            return  # probes and scrapes would drown the log
        duration_ms = round(elapsed * 1000, 2)
        if outcome == "error":
            log.error("entrypoint_failed", outcome=outcome, duration_ms=duration_ms,
                      error=type(exc_info[1]).__name__, message=str(exc_info[1])[:300])
        elif outcome == "rejected":
            log.info("entrypoint_rejected", outcome=outcome, duration_ms=duration_ms,
                     error=type(exc_info[1]).__name__, code=exc_info[1].code)
        else:
            log.info("entrypoint_finished", outcome=outcome, duration_ms=duration_ms)

    def worker_teardown(self, worker_ctx):
        context.current_event.set(None)
        context.correlation_id.set(None)
        structlog.contextvars.clear_contextvars()

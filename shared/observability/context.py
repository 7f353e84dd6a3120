"""What the current worker is doing: its correlation id and, for an event
handler, the envelope being handled. Held in contextvars, which are per
green thread under eventlet, and set by `Observability.worker_setup`."""
from __future__ import annotations

import uuid
from contextvars import ContextVar

CORRELATION_KEY = "correlation_id"

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
current_event: ContextVar[dict | None] = ContextVar("current_event", default=None)
current_consumer: ContextVar[str | None] = ContextVar("current_consumer", default=None)


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def get_correlation_id() -> str:
    """The current correlation id, minting one for work that started here."""
    value = correlation_id.get()
    if value is None:
        value = new_correlation_id()
        correlation_id.set(value)
    return value

"""In-process retries of transient failures (mongod or broker briefly gone,
transaction write conflicts), so a restart does not fail healthy work."""
from __future__ import annotations

import functools
import random

import eventlet
from amqp.exceptions import ConnectionError as AMQPConnectionError
from kombu.exceptions import OperationalError
from pymongo.errors import ConnectionFailure, PyMongoError

from shared import metrics
from shared.context import current_event
from shared.logs import get_logger

log = get_logger(__name__)


# What acking, rejecting or replying on a broker connection that died under a
# worker raises (reset socket, refused reconnect, closed channel). The message
# was not settled: the broker redelivers it, and the inbox (or the caller's
# retry with its idempotency key) absorbs the second delivery.
BROKER_LINK_ERRORS = (OSError, AMQPConnectionError, OperationalError)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionFailure):  # AutoReconnect, NotPrimary, selection timeout
        return True
    if isinstance(exc, PyMongoError) and (exc.has_error_label("TransientTransactionError")
                                          or exc.has_error_label("RetryableWriteError")):
        return True
    return isinstance(exc, (OperationalError, ConnectionError))


def retrying(fn, kind: str):
    """Wrap a service method so transient errors re-run it with backoff.

    The whole method re-runs: an entrypoint is validate → one transaction →
    reply, so a re-run is safe (an aborted transaction wrote nothing, and
    an event's inbox row makes a committed one a duplicate)."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        settings = getattr(self, "_shop_settings", None)
        attempts = settings.transient_retries if settings else 6
        backoff = settings.transient_backoff if settings else 0.2
        for attempt in range(attempts + 1):
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:
                if attempt == attempts or not is_transient(exc):
                    raise
                delay = backoff * (2 ** attempt) * (0.5 + random.random())
                metrics.TRANSIENT_RETRIES.labels(type(self).name, kind, fn.__name__).inc()
                log.warning("transient_error_retrying", method=fn.__name__, attempt=attempt + 1,
                            delay_s=round(delay, 3), error=type(exc).__name__)
                handling = current_event.get()
                if handling is not None:
                    handling["recorded"] = False
                eventlet.sleep(delay)

    wrapper.__wrapped_signature__ = fn  # for nameko's signature check (see rpc.py)
    return wrapper

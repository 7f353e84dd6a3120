"""In-process retries of transient failures (mongod or broker briefly gone,
transaction write conflicts), so a restart does not fail healthy work."""
from __future__ import annotations

import functools
import random

import eventlet
from amqp.exceptions import ConnectionError as AMQPConnectionError
from kombu.exceptions import OperationalError
from pymongo.errors import ConnectionFailure, PyMongoError

from shared.observability import metrics
from shared.observability.context import current_event
from shared.observability.logs import get_logger

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


def call_with_retries(call, settings, service: str, kind: str, method: str):
    """Run `call()`; on a transient error run it again with jittered, doubling,
    capped backoff (settings.transient_*), up to settings.transient_retries times."""
    attempts = settings.transient_retries if settings else 10
    backoff = settings.transient_backoff if settings else 0.2
    ceiling = settings.transient_backoff_max if settings else 5.0
    for attempt in range(attempts + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            delay = min(backoff * (2 ** attempt), ceiling) * (0.5 + random.random())
            metrics.TRANSIENT_RETRIES.labels(service, kind, method).inc()
            log.warning("transient_error_retrying", method=method, attempt=attempt + 1,
                        delay_s=round(delay, 3), error=type(exc).__name__)
            handling = current_event.get()
            if handling is not None:  # the re-run keys its transactions from the first step again
                handling["steps"] = handling["skipped"] = 0
            eventlet.sleep(delay)


def retrying(fn, kind: str):
    """Wrap a service method so transient errors re-run it with backoff.

    The whole method re-runs: an entrypoint is validate → one transaction →
    reply, so a re-run is safe (an aborted transaction wrote nothing; an
    event's inbox rows make committed steps duplicates; an RPC's request id
    makes a committed write answer with its first result). An unknown commit
    result is not re-run (store.py turns it into ServiceUnavailable)."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        return call_with_retries(lambda: fn(self, *args, **kwargs), getattr(self, "_shop_settings", None),
                                 type(self).name, kind, fn.__name__)

    wrapper.__wrapped_signature__ = fn  # for nameko's signature check (see rpc.py)
    return wrapper

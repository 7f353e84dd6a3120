"""In-process retries of transient failures (mongod or broker briefly gone,
transaction write conflicts), so a restart does not fail healthy work."""
from __future__ import annotations

import functools
import math
import random

import eventlet
from amqp.exceptions import ConnectionError as AMQPConnectionError
from kombu.exceptions import OperationalError
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

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


WRITE_CONFLICT = 112


def is_write_conflict(exc: BaseException) -> bool:
    """Another transaction holds a document this one writes: the store is up, and
    the other transaction commits or aborts within milliseconds."""
    return isinstance(exc, OperationFailure) and exc.code == WRITE_CONFLICT


class Backoff:
    """The re-run schedule: jittered, doubling, capped.

    An outage (connection lost, no primary) waits `transient_backoff` (0.2 s)
    first, doubling to `transient_backoff_max`, for `transient_retries` re-runs:
    about 30 s, enough to outlast a failover. A write conflict starts at
    `transient_conflict_backoff` (10 ms): sleeping 0.2 s behind a transaction that
    commits in a few milliseconds holds a worker and a prefetched message for
    nothing, which on a hot document (a best seller's stock) turns contention
    into latency. A conflict gets the extra re-runs those short waits take to
    reach the outage schedule, so its total budget is never shorter."""

    def __init__(self, settings=None):
        self.retries = settings.transient_retries if settings else 10
        self.outage = settings.transient_backoff if settings else 0.2
        self.conflict = min(settings.transient_conflict_backoff if settings else 0.01, self.outage)
        self.ceiling = settings.transient_backoff_max if settings else 5.0
        self.extra = math.ceil(math.log2(self.outage / self.conflict)) if self.conflict > 0 else 0

    def attempts(self, exc: BaseException) -> int:
        return self.retries + (self.extra if is_write_conflict(exc) else 0)

    def delay(self, exc: BaseException, attempt: int, jitter: float) -> float:
        """`attempt`: re-runs so far (0 for the first); `jitter` in [0, 1)."""
        first = self.conflict if is_write_conflict(exc) else self.outage
        return min(first * (2 ** attempt), self.ceiling) * (0.5 + jitter)


def call_with_retries(call, settings, service: str, kind: str, method: str):
    """Run `call()`; on a transient error run it again on the `Backoff` schedule."""
    schedule = Backoff(settings)
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc) or attempt >= schedule.attempts(exc):
                raise
            delay = schedule.delay(exc, attempt, random.random())
            attempt += 1
            metrics.TRANSIENT_RETRIES.labels(service, kind, method).inc()
            log.warning("transient_error_retrying", method=method, attempt=attempt,
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

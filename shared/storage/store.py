"""The service's MongoDB: one client per container, its own database, indexes
ensured at start, and transactions that carry the outbox and the inbox.

    with self.store.transaction() as tx:
        tx.db.products.insert_one(doc, session=tx.session)
        tx.emit("product_created", {...})      # committed with the state

Inside an event handler the first transaction also records the inbox row, so
a redelivered event raises DuplicateEvent (the chassis acks and counts it)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kombu import Connection
from nameko.extensions import DependencyProvider
from pymongo import MongoClient, ReadPreference
from pymongo.errors import ConnectionFailure, OperationFailure
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from shared.config import settings_of
from shared.errors import ServiceUnavailable
from shared.messaging import failures, idempotency, inbox, outbox
from shared.messaging.inbox import DuplicateEvent
from shared.messaging.routing import ConsumerQueues
from shared.messaging.topology import consumers_of_source, declare_own_exchange, declare_suite
from shared.observability.context import current_event
from shared.observability.logs import get_logger
from shared.security import guard

log = get_logger(__name__)

MAJORITY = WriteConcern("majority")
COMMIT_RETRIES = 3


def connect(mongo_uri: str, **options) -> MongoClient:
    """A client with the suite's defaults: majority writes, UTC-aware datetimes,
    and a short server-selection timeout so outages surface to the retry loop."""
    options.setdefault("serverSelectionTimeoutMS", 5000)
    options.setdefault("connectTimeoutMS", 3000)
    return MongoClient(mongo_uri, w="majority", tz_aware=True, retryWrites=True, **options)


class Tx:
    """One open transaction: the database, the session, and the events to emit.
    In a batch handler, `fresh` lists the batch's envelopes not applied before."""

    def __init__(self, db, session, service: str, lease_seconds: float = outbox.DEFAULT_LEASE_SECONDS):
        self.db = db
        self.session = session
        self.service = service
        self.lease_seconds = lease_seconds
        self.envelopes: list[dict] = []
        self.fresh: list[dict] = []

    def emit(self, event_type: str, data: dict, occurred_at=None) -> dict:
        """Stage an event in the outbox, inside this transaction."""
        envelope = outbox.build_envelope(self.service, event_type, data, occurred_at)
        self.db[outbox.COLLECTION].insert_one(outbox.outbox_row(envelope, self.lease_seconds),
                                              session=self.session)
        self.envelopes.append(envelope)
        return envelope


def _begin(session) -> None:
    session.start_transaction(read_concern=ReadConcern("snapshot"), write_concern=MAJORITY,
                              read_preference=ReadPreference.PRIMARY)


class StoreHandle:
    """What a worker gets: the database and a transaction factory."""

    def __init__(self, provider: "Store"):
        self._provider = provider
        # Filters holding a caller's dict or server-side JavaScript are refused (shared.security.guard).
        self.db = guard.guarded(provider.db)
        self.client = provider.client

    def __getitem__(self, collection: str):
        return self.db[collection]

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """State and events in one transaction; in an event handler also the
        inbox row of this step (see inbox.py), in an RPC with a request id the
        request row (see idempotency.py)."""
        provider = self._provider
        handling = current_event.get()
        request = idempotency.current_request.get()
        with provider.client.start_session() as session:
            _begin(session)
            tx = Tx(self.db, session, provider.service, provider.lease_seconds)
            replaying = False
            try:
                if handling is not None:
                    replaying = _record_handling(self.db, session, handling, tx)
                if request is not None and not request["recorded"]:
                    idempotency.record(self.db, session, request)
                yield tx
            except BaseException as exc:
                if session.in_transaction:
                    session.abort_transaction()
                if replaying and isinstance(exc, Exception) and not isinstance(exc, DuplicateEvent):
                    # A step already applied fails when re-run on today's state: it is done.
                    raise DuplicateEvent(handling["cause_id"]) from exc
                raise
            if replaying:
                session.abort_transaction()  # this step was applied before: discard the re-run
                handling["skipped"] += 1
                return
            _commit(session)
            if request is not None:
                request["recorded"] = True
        if tx.envelopes:
            provider.relay.submit(tx.envelopes)


def _record_handling(db, session, handling: dict, tx: Tx) -> bool:
    """Record the inbox row(s) of this transaction; True when this step was
    applied before and the transaction only replays it (to be aborted)."""
    consumer = handling["consumer"]
    if handling.get("batch") is not None:
        if handling["steps"]:
            return False  # later transactions of a batch handler carry no inbox rows
        handling["steps"] = 1
        tx.fresh = inbox.record_batch(db, session, consumer, handling["batch"])
        handling["fresh_ids"] = {e["event_id"] for e in tx.fresh}
        return False
    step = handling["steps"]
    handling["steps"] += 1
    if step > 0 and not handling["multi_step"]:
        raise inbox.StepsUndeclared(
            f"{handling['entrypoint']} opened a second transaction: declare it "
            "@handles(source, event_type, steps=True) so each step is keyed")
    try:
        inbox.record(db, session, consumer, handling["envelope"], step)
        return False
    except DuplicateEvent:
        if not handling["multi_step"]:
            raise
        # The failed insert ended the transaction: replay this step on a fresh one.
        session.abort_transaction()
        _begin(session)
        return True


def _commit(session) -> None:
    for attempt in range(COMMIT_RETRIES):
        try:
            session.commit_transaction()
            return
        except (ConnectionFailure, OperationFailure) as exc:
            # Only an unknown commit result is safe to retry here (committing is
            # idempotent on the server). Retried out, it is not a transient error
            # for the caller to re-run: the write may have applied.
            if not exc.has_error_label("UnknownTransactionCommitResult"):
                raise
            if attempt + 1 == COMMIT_RETRIES:
                raise ServiceUnavailable("the commit's outcome is unknown; repeat the call with "
                                    "the same request_id to learn whether it applied",
                                    {"code": "commit_unknown"}) from exc


class Store(DependencyProvider):
    """`store = Store(indexes={"products": [IndexModel(...)]})` on a service."""

    def __init__(self, indexes: dict | None = None):
        self.indexes = indexes or {}
        self.client = None
        self.db = None
        self.relay = None
        self._threads = []

    def setup(self):
        settings = settings_of(self.container)
        self.service = self.container.service_name
        self.lease_seconds = settings.outbox_sweep_grace
        self.client = connect(settings.mongo_uri)
        self.db = self.client[settings.database]
        routing = ConsumerQueues(self.service)
        self.relay = outbox.OutboxRelay(
            self.db, self.service, settings.amqp_uri, routing=routing,
            window=settings.outbox_window, max_attempts=settings.outbox_max_attempts,
            lease_seconds=settings.outbox_sweep_grace, confirm_timeout=settings.confirm_timeout,
            heartbeat=settings.amqp_heartbeat)

    def start(self):
        self.ensure_indexes()
        settings = settings_of(self.container)
        with Connection(settings.amqp_uri) as connection:
            if settings.topology_declare_all:
                # Local and test stacks: the queues of every consumer of our events exist
                # before we publish one, so nothing waits while a consumer has never run.
                declare_suite(connection, consumers_of_source(self.service), settings.delivery_limit)
            else:
                # Least privilege (Kubernetes): only what we own; each consumer declares its
                # queue, and the relay holds events for a consumer queue that is missing.
                declare_own_exchange(connection, self.service)
        self._threads = [
            self.container.spawn_managed_thread(self.relay.run, identifier="outbox_relay"),
            self.container.spawn_managed_thread(
                lambda: self._sweep_forever(settings.outbox_sweep_interval), identifier="outbox_sweep"),
        ]

    def ensure_indexes(self) -> None:
        wanted = {outbox.COLLECTION: outbox.INDEXES, inbox.COLLECTION: inbox.INDEXES,
                  idempotency.COLLECTION: idempotency.INDEXES, failures.COLLECTION: failures.INDEXES,
                  **self.indexes}
        for collection, models in wanted.items():
            if models:
                self.db[collection].create_indexes(models)

    def _sweep_forever(self, interval: float) -> None:
        import eventlet

        while True:
            eventlet.sleep(interval)
            try:
                self.relay.sweep()
            except Exception as exc:  # store or broker away: try again next round
                log.warning("outbox_sweep_failed", service=self.service, error=type(exc).__name__)

    def ping(self) -> bool:
        try:
            self.client.admin.command("ping")
            return True
        except Exception:
            return False

    def stop(self):
        # Workers have finished (nameko stops entrypoints first): publish what the
        # relay still holds, then stop the threads before the client closes.
        if self.relay is not None:
            self.relay.stop()
        for thread in self._threads:
            thread.kill()
        self._threads = []
        if self.client is not None:
            self.client.close()

    def kill(self):
        for thread in self._threads:
            thread.kill()
        self._threads = []
        if self.client is not None:
            self.client.close()

    def get_dependency(self, worker_ctx) -> StoreHandle:
        return StoreHandle(self)

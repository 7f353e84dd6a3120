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

from shared import guard, inbox, outbox
from shared.config import settings_of
from shared.context import current_event
from shared.logs import get_logger
from shared.topology import consumers_of_source, declare_suite

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
    """One open transaction: the database, the session, and the events to emit."""

    def __init__(self, db, session, service: str):
        self.db = db
        self.session = session
        self.service = service
        self.envelopes: list[dict] = []

    def emit(self, event_type: str, data: dict, occurred_at=None) -> dict:
        """Stage an event in the outbox, inside this transaction."""
        envelope = outbox.build_envelope(self.service, event_type, data, occurred_at)
        self.db[outbox.COLLECTION].insert_one(outbox.outbox_row(envelope), session=self.session)
        self.envelopes.append(envelope)
        return envelope


class StoreHandle:
    """What a worker gets: the database and a transaction factory."""

    def __init__(self, provider: "Store"):
        self._provider = provider
        # Filters holding a caller's dict or server-side JavaScript are refused (shared.guard).
        self.db = guard.guarded(provider.db)
        self.client = provider.client

    def __getitem__(self, collection: str):
        return self.db[collection]

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        provider = self._provider
        with provider.client.start_session() as session:
            session.start_transaction(read_concern=ReadConcern("snapshot"), write_concern=MAJORITY,
                                      read_preference=ReadPreference.PRIMARY)
            tx = Tx(self.db, session, provider.service)
            try:
                handling = current_event.get()
                if handling is not None and not handling["recorded"]:
                    inbox.record(self.db, session, handling["consumer"], handling["envelope"])
                yield tx
            except BaseException:
                if session.in_transaction:
                    session.abort_transaction()
                raise
            _commit(session)
            if handling is not None:
                handling["recorded"] = True
        if tx.envelopes:
            provider.relay.publish_all(tx.envelopes)


def _commit(session) -> None:
    for attempt in range(COMMIT_RETRIES):
        try:
            session.commit_transaction()
            return
        except (ConnectionFailure, OperationFailure) as exc:
            # Only an unknown commit result is safe to retry here; anything
            # else propagates to the worker's transient-error retry.
            if attempt + 1 < COMMIT_RETRIES and exc.has_error_label("UnknownTransactionCommitResult"):
                continue
            raise


class Store(DependencyProvider):
    """`store = Store(indexes={"products": [IndexModel(...)]})` on a service."""

    def __init__(self, indexes: dict | None = None):
        self.indexes = indexes or {}
        self.client = None
        self.db = None
        self.relay = None
        self._sweeper = None

    def setup(self):
        settings = settings_of(self.container)
        self.service = self.container.service_name
        self.client = connect(settings.mongo_uri)
        self.db = self.client[settings.database]
        self.relay = outbox.OutboxRelay(self.db, self.service, settings.amqp_uri)

    def start(self):
        self.ensure_indexes()
        settings = settings_of(self.container)
        # The queues of every consumer of our events exist before we publish
        # one, so nothing is published into the void while a consumer is down.
        with Connection(settings.amqp_uri) as connection:
            declare_suite(connection, consumers_of_source(self.service), settings.delivery_limit)
        self._sweeper = self.container.spawn_managed_thread(
            lambda: self._sweep_forever(settings.outbox_sweep_interval, settings.outbox_sweep_grace),
            identifier="outbox_sweep")

    def ensure_indexes(self) -> None:
        wanted = {outbox.COLLECTION: outbox.INDEXES, inbox.COLLECTION: inbox.INDEXES, **self.indexes}
        for collection, models in wanted.items():
            if models:
                self.db[collection].create_indexes(models)

    def _sweep_forever(self, interval: float, grace: float) -> None:
        import eventlet

        while True:
            eventlet.sleep(interval)
            try:
                self.relay.sweep(grace)
            except Exception as exc:  # store or broker away: try again next round
                log.warning("outbox_sweep_failed", service=self.service, error=type(exc).__name__)

    def ping(self) -> bool:
        try:
            self.client.admin.command("ping")
            return True
        except Exception:
            return False

    def stop(self):
        # The sweep stops before the client closes (a sweep mid-flight just
        # ends: its rows stay pending for the next process).
        sweeper = getattr(self, "_sweeper", None)
        if sweeper is not None:
            sweeper.kill()
        if self.client is not None:
            self.client.close()

    def kill(self):
        self.stop()

    def get_dependency(self, worker_ctx) -> StoreHandle:
        return StoreHandle(self)

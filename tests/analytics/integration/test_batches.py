"""Batch ingestion against the real mongod: the scripted history folded in batches
(one transaction each) gives exactly what event-by-event ingestion gives, and a
batch is all or nothing."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from pymongo import MongoClient

from services.analytics import domain, schemas, store, views
from services.analytics.views import BUCKET_KEY_FIELDS
from shared.ids import new_id
from tests.analytics.conftest import envelope
from tests.analytics.integration import history

TZ = ZoneInfo("Asia/Shanghai")
FULL = domain.TimeRange(datetime(2026, 11, 20, tzinfo=timezone.utc),
                        datetime(2026, 11, 25, tzinfo=timezone.utc))
DAY1 = domain.TimeRange(history.T0, history.at(24))
ENTITIES = ["sessions", "members", "orders", "products", "tickets", "touches", "campaigns",
            "experiments", "exposures", "erased", "counters"]


def stream() -> list[dict]:
    """The history's events as the consumer sees them: shuffled, every 3rd broker event
    and every 4th tracking event twice, an invalid and an unknown event, and an
    erasure with a later event of the erased member."""
    broker, track = history.build()
    broker, track = history.delivery_order(broker, track)
    envelopes = broker + schemas.events_of(track, len(track), "CNY")
    envelopes.append(envelope("order", "order_confirmed", {"not_an_order": True}, history.at(3)))
    envelopes.append(envelope("order", "order_archived", {"order_id": "o1"}, history.at(3)))
    envelopes.append(envelope("member", "member_erased", {"member_id": "m4"}, history.at(8)))
    envelopes += schemas.events_of([{"event_type": "session_started", "session_id": "s9",
                                      "member_id": "m4", "occurred_at": "2026-11-21T12:00:00Z",
                                      "referrer": "https://a.example/?u=m4"}], 1, "CNY")
    return envelopes


@pytest.fixture
def databases(mongo_uri):
    client = MongoClient(mongo_uri, tz_aware=True)
    names = []

    def database():
        names.append(f"analytics_batches_{new_id('db')}"[:60])
        db = client[names[-1]]
        for name, indexes in store.INDEXES.items():
            db[name].create_indexes(indexes)
        return db

    yield client, database
    for name in names:
        client.drop_database(name)
    client.close()


def in_transaction(client, work):
    with client.start_session() as session, session.start_transaction():
        return work(session)


def reports(db) -> dict:
    return {"full": views.get_kpis(db, TZ, FULL), "day1": views.get_kpis(db, TZ, DAY1),
            "top": views.top_products(db, TZ, FULL, 10), "slow": views.slow_products(db, TZ, FULL, 10),
            "roi": views.campaign_roi(db, TZ, FULL, 7),
            "exp": views.experiment_results(db, "exp1", 0.05, 1),
            "cohorts": views.retention_cohorts(db, TZ, "month", None, None),
            "unfolded": views.unfolded_counts(db)}


def documents(db, as_sets: bool = False) -> dict:
    """Every derived document, with counter shards summed out (the two paths use
    different shards), and the raw store without its ingestion metadata. `as_sets`:
    arrays compared as sets ($addToSet keeps arrival order, which rebuild, folding in
    occurred_at order, does not reproduce)."""
    def entity(name, doc):
        doc = {k: v for k, v in doc.items() if k != "shard" and not (name == "counters" and k == "_id")}
        return {k: sorted(v, key=repr) if as_sets and isinstance(v, list) else v for k, v in doc.items()}

    out = {name: sorted((entity(name, d) for d in db[name].find({})), key=repr) for name in ENTITIES}
    buckets: dict[tuple, dict] = defaultdict(lambda: defaultdict(int))
    for doc in db.agg.find({}):
        views.add_counters(buckets[(doc["grain"], doc["bucket"], doc["dim"], doc["key"])],
                             {k: v for k, v in doc.items() if k not in BUCKET_KEY_FIELDS})
    out["agg"] = {k: dict(v) for k, v in sorted(buckets.items())}
    out["raw"] = sorted(({k: v for k, v in d.items() if k not in ("shard", "received_at")}
                         for d in db.raw.find({})), key=lambda d: d["_id"])
    return out


def test_batches_give_exactly_what_one_by_one_ingestion_gives(databases):
    client, database = databases
    sent = stream()
    one_db, batch_db = database(), database()
    singles = [in_transaction(client, lambda s, e=e: store.ingest(one_db, s, e, TZ, shards=4))
               for e in sent]
    batched = []
    for i in range(0, len(sent), 7):  # batches cut across orders, sessions and the erasure
        part = sent[i:i + 7]
        batched += in_transaction(client, lambda s, part=part, i=i: store.ingest_batch(
            batch_db, s, part, TZ, shard=(i // 7) % 3))
    assert batched == singles
    assert singles.count("duplicate") > 0 and {"invalid", "unknown"} <= set(singles)
    assert reports(batch_db) == reports(one_db)
    assert documents(batch_db) == documents(one_db)
    # the erased member's later event was stripped on arrival on both paths
    late = batch_db.raw.find_one({"data.session_id": "s9"})
    assert "referrer" not in late["data"] and late["data"]["member_id"] == "m4"

    # a whole history in one batch, and rebuild in batches of 5: the same again
    whole_db = database()
    in_transaction(client, lambda s: store.ingest_batch(whole_db, s, sent, TZ, shard=0))
    assert documents(whole_db) == documents(one_db)
    live = documents(batch_db, as_sets=True)
    store.rebuild(batch_db, TZ, batch=5, shards=4)
    assert documents(batch_db, as_sets=True) == live and reports(batch_db) == reports(one_db)


def test_a_batch_is_all_or_nothing_and_redelivered_batches_change_nothing(databases):
    client, database = databases
    db = database()
    sent = stream()[:20]
    in_transaction(client, lambda s: store.ingest_batch(db, s, sent[:10], TZ, shard=1))
    before = documents(db)
    broken = dict(sent[12], occurred_at="not a time")
    with pytest.raises(ValueError):
        in_transaction(client, lambda s: store.ingest_batch(db, s, sent[10:12] + [broken], TZ, shard=2))
    assert documents(db) == before  # the aborted batch left nothing, not even its first events
    again = in_transaction(client, lambda s: store.ingest_batch(db, s, sent[:10], TZ, shard=3))
    assert again == ["duplicate"] * 10 and documents(db) == before
    first = sent[10]
    statuses = in_transaction(client, lambda s: store.ingest_batch(db, s, [first, first], TZ, shard=2))
    assert statuses[1] == "duplicate" and db.raw.count_documents({"_id": first["event_id"]}) == 1

"""Transactions that fight over one document (a best seller's stock) on a real mongod:
every re-run after a write conflict applies once, and none gives up."""
import uuid

import eventlet
from pymongo import MongoClient

from shared.config import Settings
from shared.observability import metrics
from shared.retry import call_with_retries
from shared.storage.store import _begin


def test_concurrent_transactions_on_one_document_all_apply_once(mongo_uri):
    client = MongoClient(mongo_uri, w="majority")
    counters = client[f"contention_{uuid.uuid4().hex[:8]}"].counters
    counters.insert_one({"_id": "hot", "n": 0, "writers": []})
    settings = Settings.from_env("contention")
    retries = metrics.TRANSIENT_RETRIES.labels("contention", "event", "bump")
    before = retries._value.get()

    def bump(writer: int) -> None:
        def once():
            with client.start_session() as session:
                _begin(session)
                counters.update_one({"_id": "hot"}, {"$inc": {"n": 1}, "$push": {"writers": writer}},
                                    session=session)
                eventlet.sleep(0.002)  # hold the document: the others conflict
                session.commit_transaction()
        call_with_retries(once, settings, "contention", "event", "bump")

    pool = eventlet.GreenPool(8)
    for writer in range(40):
        pool.spawn(bump, writer)
    pool.waitall()
    doc = counters.find_one({"_id": "hot"})
    assert doc["n"] == 40
    assert sorted(doc["writers"]) == list(range(40))  # each once
    assert retries._value.get() > before  # they did conflict, and were re-run
    client.close()

"""shared/storage/readmodel.py against a real mongod: only a higher version changes a section, inside
and outside a transaction, also when writers race on a document that does not exist yet."""
from __future__ import annotations

import random

import eventlet
import pytest
from pymongo import MongoClient

from shared.ids import new_id
from shared.storage.readmodel import LEGACY, apply_if_newer, version_of


@pytest.fixture(scope="module")
def client(mongo_uri):
    with MongoClient(mongo_uri) as client:
        yield client


@pytest.fixture
def coll(client):
    return client["readmodel_test"][new_id("rm")]


def apply(client, coll, doc_id, version, fields, in_transaction, **kwargs):
    """One apply, in a transaction the way a handler runs it (retried on a write conflict,
    as the chassis does), or alone as an RPC fallback does."""
    if not in_transaction:
        return apply_if_newer(coll, doc_id, version, fields, **kwargs)
    with client.start_session() as session:
        return session.with_transaction(
            lambda s: apply_if_newer(coll, doc_id, version, fields, session=s, **kwargs))


both = pytest.mark.parametrize("in_transaction", [True, False], ids=["transaction", "alone"])


@both
def test_out_of_order_versions_the_higher_wins(client, coll, in_transaction):
    assert apply(client, coll, "p", 3, {"price": 300}, in_transaction)
    assert not apply(client, coll, "p", 1, {"price": 100}, in_transaction)
    assert not apply(client, coll, "p", 2, {"price": 200}, in_transaction)
    assert coll.find_one({"_id": "p"}) == {"_id": "p", "price": 300, "version": 3}
    assert apply(client, coll, "p", 4, {"price": 400}, in_transaction)
    assert coll.find_one({"_id": "p"})["price"] == 400


@both
def test_a_tie_or_a_lower_version_is_ignored(client, coll, in_transaction):
    apply(client, coll, "p", 5, {"price": 500}, in_transaction)
    assert not apply(client, coll, "p", 5, {"price": 999}, in_transaction)
    assert not apply(client, coll, "p", 4, {"price": 400}, in_transaction)
    assert coll.find_one({"_id": "p"}) == {"_id": "p", "price": 500, "version": 5}


@both
def test_sections_keep_their_own_versions(client, coll, in_transaction):
    # units counted by another writer first: the document exists without any version
    coll.insert_one({"_id": "p", "units": 7})
    assert apply(client, coll, "p", 6, {"low_stock": True}, in_transaction, version_field="stock_version")
    assert apply(client, coll, "p", 4, {"status": "published"}, in_transaction,
                 version_field="listing_version")
    assert not apply(client, coll, "p", 5, {"low_stock": False}, in_transaction,
                     version_field="stock_version")
    assert coll.find_one({"_id": "p"}) == {"_id": "p", "units": 7, "low_stock": True, "stock_version": 6,
                                           "status": "published", "listing_version": 4}


@both
def test_dotted_fields_guard_and_on_insert(client, coll, in_transaction):
    guard = {"erased": {"$ne": True}}
    assert apply(client, coll, "m", 2, {"consents.email": {"granted": True}}, in_transaction,
                 version_field="consents_email_version", on_insert={"erased": False}, guard=guard)
    assert coll.find_one({"_id": "m"}) == {"_id": "m", "erased": False,
                                           "consents": {"email": {"granted": True}},
                                           "consents_email_version": 2}
    coll.update_one({"_id": "m"}, {"$set": {"erased": True, "consents": {}}})
    assert not apply(client, coll, "m", 3, {"consents.email": {"granted": True}}, in_transaction,
                     version_field="consents_email_version", on_insert={"erased": False}, guard=guard)
    assert coll.find_one({"_id": "m"})["consents"] == {}


@both
def test_events_from_before_versions(client, coll, in_transaction):
    # a legacy event fills an empty section; another legacy one replaces it (last applied)
    assert apply(client, coll, "p", LEGACY, {"price": 100}, in_transaction)
    assert apply(client, coll, "p", LEGACY, {"price": 90}, in_transaction)
    assert coll.find_one({"_id": "p"})["price"] == 90
    # a versioned one replaces it, and no legacy event overwrites a versioned value
    assert apply(client, coll, "p", 1, {"price": 80}, in_transaction)
    assert not apply(client, coll, "p", LEGACY, {"price": 70}, in_transaction)
    assert coll.find_one({"_id": "p"}) == {"_id": "p", "price": 80, "version": 1}


def test_version_of_reads_only_a_whole_number():
    assert version_of({"version": 7}) == 7
    for data in ({}, {"version": None}, {"version": "7"}, {"version": True}, {"version": -1},
                 {"version": 2.0}):
        assert version_of(data) == LEGACY


@both
def test_racing_first_writers_keep_the_highest(client, coll, in_transaction):
    """Writers race on documents that do not exist yet (the upsert race): whatever the
    interleaving, each document ends with its highest version and that version's value."""
    versions = list(range(1, 13))
    for round_ in range(5):
        doc_id = f"race{round_}"
        random.shuffle(versions)
        pool = eventlet.GreenPool(len(versions))
        results = list(pool.imap(lambda v, d=doc_id: apply(client, coll, d, v, {"price": v * 10},
                                                           in_transaction), versions))
        assert coll.find_one({"_id": doc_id}) == {"_id": doc_id, "price": 120, "version": 12}
        assert True in results  # the highest always applies; the rest depend on timing

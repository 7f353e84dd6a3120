"""Inventory functions straight against a real mongod (no broker): the
all-or-nothing reservation under concurrent transactions."""
from __future__ import annotations

import uuid

import eventlet
import pytest
from pymongo import ReadPreference
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from services.catalog import domain
from services.catalog.store import INDEXES, ensure_house_merchant
from services.catalog.usecases import commands, inventory
from shared.clock import utcnow
from shared.messaging import inbox, outbox
from shared.retry import is_transient
from shared.storage.store import Tx, connect


@pytest.fixture(scope="module")
def db(mongo_uri):
    client = connect(mongo_uri)
    database = client[f"test_catalog_store_{uuid.uuid4().hex[:8]}"]
    wanted = {**INDEXES, outbox.COLLECTION: outbox.INDEXES, inbox.COLLECTION: inbox.INDEXES}
    for name, models in wanted.items():
        database[name].create_indexes(models)
    ensure_house_merchant(database)
    yield database
    client.drop_database(database.name)
    client.close()


def in_tx(db, work, attempts=50):
    """Run `work(tx)` in one transaction, re-running it on write conflicts."""
    for attempt in range(attempts):
        with db.client.start_session() as session:
            session.start_transaction(read_concern=ReadConcern("snapshot"),
                                      write_concern=WriteConcern("majority"),
                                      read_preference=ReadPreference.PRIMARY)
            tx = Tx(db, session, "catalog")
            try:
                result = work(tx)
                session.commit_transaction()
                return result
            except Exception as exc:
                if session.in_transaction:
                    session.abort_transaction()
                if not is_transient(exc) or attempt == attempts - 1:
                    raise
        eventlet.sleep(0.005 * (attempt + 1))


def product(db, stock, threshold=0):
    payload = {"sku": uuid.uuid4().hex, "title": "Tea", "description": "", "category": "tea",
               "price": 100, "stock": stock, "merchant_id": None, "low_stock_threshold": threshold,
               "attributes": {}, "images": []}
    doc = in_tx(db, lambda tx: commands.create_product(tx, payload, "CNY", 5, utcnow()))
    db.products.update_one({"_id": doc["_id"]}, {"$set": {"status": domain.PUBLISHED}})
    return doc["_id"]


def test_concurrent_multi_line_orders_are_all_or_nothing(db):
    a, b = product(db, 5), product(db, 3)
    orders = [f"ord_{uuid.uuid4().hex[:10]}" for _ in range(12)]

    def place(order_id):
        return in_tx(db, lambda tx: inventory.reserve_order(
            tx, order_id, [{"product_id": a, "quantity": 1}, {"product_id": b, "quantity": 1}],
            utcnow(), 3600))[0]

    pool = eventlet.GreenPool(12)
    outcomes = list(pool.imap(place, orders))
    assert outcomes.count("reserved") == 3  # b has 3: the tighter line decides
    assert outcomes.count("failed") == 9
    docs = {d["_id"]: d["stock"] for d in db.products.find({"_id": {"$in": [a, b]}})}
    assert (docs[a]["reserved"], docs[a]["available"]) == (3, 2)
    assert (docs[b]["reserved"], docs[b]["available"]) == (3, 0)


def test_concurrent_cancel_and_expiry_release_once(db):
    pid = product(db, 10)
    order_id = f"ord_{uuid.uuid4().hex[:10]}"
    in_tx(db, lambda tx: inventory.reserve_order(tx, order_id, [{"product_id": pid, "quantity": 4}],
                                                 utcnow(), 0))
    later = utcnow()
    pool = eventlet.GreenPool(4)

    def cancel(tx):
        return inventory.cancel_order(tx, order_id, later)[0]

    def expire(tx):
        return inventory.expire(tx, order_id, later)

    results = list(pool.imap(lambda i: in_tx(db, cancel if i % 2 else expire), range(4)))
    assert results.count("released") + results.count(True) == 1
    stock = db.products.find_one({"_id": pid})["stock"]
    assert (stock["on_hand"], stock["reserved"], stock["available"]) == (10, 0, 10)
    released = {"event_type": "stock_released", "envelope.data.order_id": order_id}
    assert db.outbox.count_documents(released) == 1

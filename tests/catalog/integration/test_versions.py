"""Catalog, the owner of products and merchants, moves an aggregate's version by exactly one
with each change its events announce, in the change's own update, also under concurrency."""
from __future__ import annotations

import eventlet

from shared.errors import Conflict
from tests.catalog.conftest import emitted, order_placed, product_payload, uid
from tools.testing import wait_for

PRODUCT_EVENTS = ("product_created", "product_published", "product_unpublished", "price_changed",
                  "stock_adjusted", "stock_ran_low", "stock_replenished")


def versions(db, pid) -> list[tuple[int, str]]:
    found = [(d["version"], t) for t in PRODUCT_EVENTS for d in emitted(db, t, product_id=pid)]
    return sorted(found)


def test_each_change_moves_the_version_once(catalog, db, rpc):
    product = rpc.catalog.create_product(product_payload(stock=10, low_stock_threshold=5))
    pid = product["id"]
    assert product["version"] == 1
    rpc.catalog.publish_product(pid)
    rpc.catalog.set_price(pid, 9900)
    rpc.catalog.set_price(pid, 9900)  # unchanged: no change, no version
    rpc.catalog.adjust_stock(pid, -6, "shrinkage")  # 4: low → stock_adjusted, then the flip
    rpc.catalog.unpublish_product(pid)
    assert versions(db, pid) == [(1, "product_created"), (2, "product_published"), (3, "price_changed"),
                                 (4, "stock_adjusted"), (5, "stock_ran_low"), (6, "product_unpublished")]
    assert rpc.catalog.get_product(pid)["version"] == 6
    assert rpc.catalog.get_stock(pid)["version"] == 6
    # each event carries its whole section as of its version
    (unpublished,) = emitted(db, "product_unpublished", product_id=pid)
    assert {k: unpublished[k] for k in ("price", "status", "category", "currency", "version")} == {
        "price": 9900, "status": "unpublished", "category": "apparel", "currency": "CNY", "version": 6}
    (low,) = emitted(db, "stock_ran_low", product_id=pid)
    assert (low["on_hand"], low["available"], low["low"], low["threshold"]) == (4, 4, True, 5)


def test_concurrent_changes_move_the_version_once_each(catalog, db, rpc, events, amqp_uri):
    from tools.client import connect

    product = rpc.catalog.create_product(product_payload(stock=100, low_stock_threshold=0))
    pid = product["id"]
    rpc.catalog.publish_product(pid)

    def reprice(price):
        with connect(amqp_uri, timeout=30) as client:
            try:
                client.catalog.set_price(pid, price)
                return True
            except Conflict:  # a concurrent change won: nothing changed for this call
                return False

    # price changes racing each other, and reservations racing them
    order_ids = [uid("ord") for _ in range(8)]
    for order_id in order_ids:
        events.publish("order", "order_placed", order_placed(order_id, [(pid, 1)]))
    pool = eventlet.GreenPool(8)
    changed = sum(pool.imap(reprice, range(10000, 10008)))
    wait_for(lambda: db.reservations.count_documents({"_id": {"$in": order_ids}}) == len(order_ids),
             timeout=60, what="every order reserved")
    assert changed >= 1
    announced = [d["version"] for d in emitted(db, "price_changed", product_id=pid)]
    assert len(announced) == changed and len(set(announced)) == changed
    # created 1, published 2, then one per price change and one per reservation
    assert rpc.catalog.get_product(pid)["version"] == 2 + changed + len(order_ids)
    assert max(announced) <= 2 + changed + len(order_ids)


def test_merchant_versions(catalog, db, rpc):
    merchant = rpc.catalog.apply_merchant({"name": "Versioned shop", "contact_email": "v@example.com"})
    assert merchant["version"] == 1
    rpc.catalog.approve_merchant(merchant["id"])
    rpc.catalog.approve_merchant(merchant["id"])  # already approved: no change
    rpc.catalog.suspend_merchant(merchant["id"], "late shipping")
    assert [(d["status"], d["version"]) for d in emitted(db, "merchant_approved", merchant_id=merchant["id"])
            + emitted(db, "merchant_suspended", merchant_id=merchant["id"])] == [
        ("approved", 2), ("suspended", 3)]

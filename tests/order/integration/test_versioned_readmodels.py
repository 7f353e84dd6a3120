"""Order's product and tier read models keep the owner's highest version, whatever the order of
delivery or the producers' clocks (real broker, real mongod, stand-in catalog and member)."""
from __future__ import annotations

from datetime import timedelta

from shared.clock import utcnow
from shared.ids import new_id
from shared.messaging.outbox import build_envelope
from tests.order.conftest import publish
from tools.testing import store_of, wait_for

WAIT = 30
LISTING = {"sku": "SKU-1", "title": "Tee", "category": "apparel", "currency": "CNY"}


def listing_event(amqp_uri, event_type, pid, version, price, status="published", at=None, **extra):
    data = {"product_id": pid, **LISTING, "price": price, "status": status, "version": version, **extra}
    if event_type == "price_changed":
        data.update(old_price=extra.get("old_price", price), new_price=price)
    envelope = build_envelope("catalog", event_type, data, at)
    return publish(amqp_uri, "", "", {}, envelope=envelope)


def seen(db, *envelopes):
    return lambda: all(db.inbox.find_one({"event_id": e["event_id"]}) for e in envelopes)


def product_doc(db, pid):
    return db.products.find_one({"_id": pid}) or {}


def test_out_of_order_versions_the_higher_wins(stack, rpc, amqp_uri):
    db = store_of(stack()["order"])
    pid = new_id("prd")
    # published at 3, then the earlier price change (2) and creation (1) arrive late
    third = listing_event(amqp_uri, "product_published", pid, 3, 4500)
    wait_for(seen(db, third), WAIT)
    late = [listing_event(amqp_uri, "price_changed", pid, 2, 4500, status="draft", old_price=5000),
            listing_event(amqp_uri, "product_created", pid, 1, 5000, status="draft", merchant_id=None)]
    wait_for(seen(db, *late), WAIT, what="late events handled")
    doc = product_doc(db, pid)
    assert (doc["price"], doc["status"], doc["version"]) == (4500, "published", 3)
    # a tie is ignored too, a higher version applies
    tie = listing_event(amqp_uri, "price_changed", pid, 3, 1, old_price=4500)
    wait_for(seen(db, tie), WAIT)
    assert product_doc(db, pid)["price"] == 4500
    listing_event(amqp_uri, "price_changed", pid, 4, 3900, old_price=4500)
    wait_for(lambda: product_doc(db, pid).get("version") == 4, WAIT)
    assert product_doc(db, pid)["price"] == 3900


def test_equal_occurred_at_the_higher_version_wins(stack, rpc, amqp_uri):
    db = store_of(stack()["order"])
    pid = new_id("prd")
    at = utcnow()
    events = [listing_event(amqp_uri, "price_changed", pid, 6, 7000, at=at, old_price=6000),
              listing_event(amqp_uri, "price_changed", pid, 5, 6000, at=at, old_price=5000)]
    wait_for(seen(db, *events), WAIT)
    doc = product_doc(db, pid)
    assert (doc["price"], doc["version"]) == (7000, 6)


def test_skewed_clock_the_higher_version_wins(stack, rpc, amqp_uri):
    """A replica with a slow clock stamps the newer change with an older occurred_at."""
    db = store_of(stack()["order"])
    pid = new_id("prd")
    now = utcnow()
    newer = listing_event(amqp_uri, "price_changed", pid, 8, 2500, at=now - timedelta(minutes=10),
                          old_price=3000)
    older = listing_event(amqp_uri, "price_changed", pid, 7, 3000, at=now, old_price=3500)
    wait_for(seen(db, newer, older), WAIT)
    doc = product_doc(db, pid)
    assert (doc["price"], doc["version"]) == (2500, 8)
    quote = rpc.order.quote("mem_1", [{"product_id": pid, "quantity": 1}])
    assert quote["subtotal"] == 2500


def test_fallback_stores_the_owners_version(stack, rpc, amqp_uri):
    db = store_of(stack()["order"])
    pid = new_id("prd")
    rpc.catalog.add_product({"id": pid, "price": 5000, "stock": 5, "category": "apparel"},
                            announce=False)
    # the price changed at catalog (version 3); its event is still on the way
    assert rpc.catalog.set_product(pid, {"price": 4200}) == 3
    assert rpc.order.quote("mem_1", [{"product_id": pid, "quantity": 1}])["subtotal"] == 4200
    assert product_doc(db, pid)["version"] == 3
    # the events before it arrive late and change nothing; the delayed one is a tie
    late = [listing_event(amqp_uri, "product_published", pid, 2, 5000),
            listing_event(amqp_uri, "price_changed", pid, 3, 4200, old_price=5000)]
    wait_for(seen(db, *late), WAIT)
    doc = product_doc(db, pid)
    assert (doc["price"], doc["version"]) == (4200, 3)


def test_tier_out_of_order_and_skewed(stack, rpc, amqp_uri):
    db = store_of(stack()["order"])
    now = utcnow()
    changed = publish(amqp_uri, "", "", {}, envelope=build_envelope("member", "tier_changed", {
        "member_id": "mem_v", "old_tier": "bronze", "new_tier": "gold", "version": 2},
        now - timedelta(minutes=5)))
    registered = publish(amqp_uri, "", "", {}, envelope=build_envelope("member", "member_registered", {
        "member_id": "mem_v", "region": None, "gender": None, "birth_year": None, "interests": [],
        "tier": "bronze", "version": 1}, now))
    wait_for(seen(db, changed, registered), WAIT)
    assert db.members.find_one({"_id": "mem_v"})["tier"] == "gold"

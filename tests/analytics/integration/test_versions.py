"""Analytics' per-product latest state keeps the owner's highest version per section (listing,
stock), whatever the delivery order or the producers' clocks; events from before versions
are still folded (real broker, real mongod)."""
from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from services.analytics import store
from services.analytics.service import AnalyticsService
from shared.clock import utcnow
from shared.ids import new_id
from tests.analytics.conftest import envelope
from tools.testing import store_of, wait_for

LISTING = {"sku": "SKU-V", "title": "Tee", "category": "apparel", "currency": "CNY"}


def listing(event_type, pid, version, price, status, at):
    data = {"product_id": pid, **LISTING, "price": price, "status": status, "version": version}
    if event_type == "price_changed":
        data.update(old_price=price + 100, new_price=price)
    if event_type == "product_created":
        data["merchant_id"] = None
    return envelope("catalog", event_type, data, at)


def folded(db, *envelopes):
    return lambda: all((db.raw.find_one({"_id": e["event_id"]}) or {}).get("status") == "folded"
                       for e in envelopes)


def test_out_of_order_tie_equal_time_and_skew(start_service, publish):
    db = store_of(start_service(AnalyticsService))
    pid = new_id("prd")
    now = utcnow()
    # the newest change (4) carries the oldest occurred_at (a slow clock) and arrives first
    first = [listing("price_changed", pid, 4, 3900, "published", now - timedelta(hours=2)),
             envelope("catalog", "stock_ran_low", {"product_id": pid, "available": 2, "threshold": 5,
                                                   "on_hand": 3, "low": True, "version": 6}, now)]
    for e in first:
        publish(e)
    wait_for(folded(db, *first), 30)
    late = [listing("product_created", pid, 1, 5000, "draft", now),
            listing("product_published", pid, 2, 5000, "published", now),
            listing("price_changed", pid, 3, 4500, "published", now),        # same occurred_at as 2
            listing("price_changed", pid, 4, 1, "published", now),           # a tie: ignored
            envelope("catalog", "stock_adjusted", {"product_id": pid, "delta": 5, "reason": "po",
                                                   "on_hand": 20, "available": 20, "threshold": 5,
                                                   "low": False, "version": 5}, now + timedelta(hours=1))]
    for e in late:
        publish(e)
    wait_for(folded(db, *late), 30)
    doc = db.products.find_one({"_id": pid})
    assert (doc["price"], doc["status"], doc["sku"]) == (3900, "published", "SKU-V")
    assert doc["listing_version"] == 4
    assert (doc["low"], doc["available"], doc["on_hand"], doc["stock_version"]) == (True, 2, 3, 6)


def test_events_from_before_versions_are_folded_but_never_overwrite(start_service):
    db = store_of(start_service(AnalyticsService))
    tz = ZoneInfo("Asia/Shanghai")
    pid = new_id("prd")
    now = utcnow()
    old = envelope("catalog", "price_changed", {"product_id": pid, "old_price": 5000, "new_price": 4000}, now)
    assert store.ingest(db, None, old, tz) == "folded"
    assert db.products.find_one({"_id": pid})["price"] == 4000
    assert store.ingest(db, None, listing("price_changed", pid, 7, 3000, "published", now), tz) == "folded"
    older = envelope("catalog", "price_changed", {"product_id": pid, "old_price": 3000, "new_price": 2000},
                     now + timedelta(minutes=1))
    assert store.ingest(db, None, older, tz) == "folded"
    assert db.products.find_one({"_id": pid})["price"] == 3000

"""Read-model merging: newer wins per field, late events are ignored."""
from services.order.readmodels import merge, product_changes


def test_newer_event_wins_per_field():
    doc = merge(None, {"price": 100, "status": "draft"}, "2026-01-01T00:00:00.000Z")
    doc = merge(doc, {"status": "published"}, "2026-01-02T00:00:00.000Z")
    doc = merge(doc, {"price": 90, "status": "draft"}, "2026-01-01T12:00:00.000Z")  # late created
    assert doc["price"] == 90 and doc["status"] == "published"


def test_late_price_change_ignored():
    doc = merge(None, product_changes("price_changed", {"product_id": "p", "old_price": 1,
                                                        "new_price": 80}), "2026-01-03T00:00:00.000Z")
    doc = merge(doc, product_changes("product_created", {"category": "c", "price": 100, "status": "draft",
                                                         "currency": "CNY"}), "2026-01-01T00:00:00.000Z")
    assert doc["price"] == 80 and doc["category"] == "c" and doc["currency"] == "CNY"


def test_unpublished():
    assert product_changes("product_unpublished", {"category": "c"})["status"] == "unpublished"

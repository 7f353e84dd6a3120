"""Which listing fields a product event sets (the version rule itself is tested against a
real mongod in tests/chassis/test_readmodel.py and tests/order/integration)."""
import pytest

from services.order.readmodels import product_changes

LISTING = {"product_id": "p", "sku": "S", "title": "T", "category": "c", "price": 90,
           "currency": "CNY", "status": "published", "version": 3}


def test_a_versioned_event_sets_the_whole_listing():
    changes = product_changes("price_changed", {**LISTING, "old_price": 100, "new_price": 90})
    assert changes == {"category": "c", "price": 90, "status": "published", "currency": "CNY"}


def test_an_event_from_before_versions_sets_what_its_type_implies():
    assert product_changes("price_changed", {"product_id": "p", "old_price": 1, "new_price": 80}) == {
        "price": 80}
    assert product_changes("product_unpublished", {"category": "c"}) == {
        "status": "unpublished", "category": "c"}
    assert product_changes("product_published", {"category": "c"})["status"] == "published"


def test_not_a_product_event():
    with pytest.raises(ValueError):
        product_changes("stock_adjusted", {})

"""Pure catalog rules: state machines, stock, reservations, ratings, search tokens."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.catalog import domain, schemas, search
from shared.errors import Conflict, ValidationFailed
from shared.validation import load

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("status,merchant,expected", [
    ("draft", "approved", "published"), ("unpublished", "approved", "published"),
    ("published", "approved", None), ("published", "suspended", None),
])
def test_publish(status, merchant, expected):
    assert domain.publish(status, merchant) == expected


@pytest.mark.parametrize("status,merchant", [
    ("draft", "pending"), ("draft", "suspended"), ("draft", "rejected"), ("draft", None),
    ("deleted", "approved"),
])
def test_publish_refused(status, merchant):
    with pytest.raises(Conflict):
        domain.publish(status, merchant)


def test_unpublish():
    assert domain.unpublish("published") == "unpublished"
    assert domain.unpublish("unpublished") is None
    with pytest.raises(Conflict):
        domain.unpublish("draft")


@pytest.mark.parametrize("status,action,expected", [
    ("pending", "approve", "approved"), ("pending", "reject", "rejected"),
    ("approved", "suspend", "suspended"), ("suspended", "approve", "approved"),
    ("approved", "approve", None), ("rejected", "reject", None), ("suspended", "suspend", None),
])
def test_merchant_transitions(status, action, expected):
    assert domain.merchant_transition(status, action) == expected


@pytest.mark.parametrize("status,action", [
    ("rejected", "approve"), ("approved", "reject"), ("pending", "suspend"), ("suspended", "reject"),
])
def test_merchant_transitions_refused(status, action):
    with pytest.raises(Conflict):
        domain.merchant_transition(status, action)


def test_price_change_and_currency():
    assert domain.price_change(100, 100, "ops", NOW) is None
    assert domain.price_change(100, 90, "ops", NOW) == {"at": NOW, "old_price": 100, "new_price": 90,
                                                        "by": "ops"}
    assert domain.check_currency(None, "CNY") == "CNY"
    assert domain.check_currency("cny", "CNY") == "CNY"
    with pytest.raises(ValidationFailed) as err:
        domain.check_currency("USD", "CNY")
    assert "currency" in err.value.field_errors


def test_adjust_never_negative_nor_below_reserved():
    level = domain.StockLevel(on_hand=10, reserved=4)
    assert domain.adjust(level, -6) == domain.StockLevel(4, 4)
    for delta in (-7, 0):
        with pytest.raises(ValidationFailed) as err:
            domain.adjust(level, delta)
        assert "delta" in err.value.field_errors


@pytest.mark.parametrize("available,threshold,low,expected", [
    (6, 5, False, None), (5, 5, False, "stock_ran_low"), (0, 5, False, "stock_ran_low"),
    (3, 5, True, None), (5, 5, True, None), (6, 5, True, "stock_replenished"),
    (0, 0, False, "stock_ran_low"), (1, 0, True, "stock_replenished"),
])
def test_low_stock_transition(available, threshold, low, expected):
    assert domain.low_stock_transition(available, threshold, low) == expected


def test_merge_and_short_lines():
    lines = [{"product_id": "b", "quantity": 1}, {"product_id": "a", "quantity": 2},
             {"product_id": "b", "quantity": 3}]
    assert domain.merge_lines(lines) == [("a", 2), ("b", 4)]
    assert domain.short_lines([("a", 2), ("b", 4), ("c", 1)], {"a": 2, "b": 3, "c": -1}) == [
        {"product_id": "b", "requested": 4, "available": 3},
        {"product_id": "c", "requested": 1, "available": 0}]


def test_reservation_decisions():
    assert domain.on_order_placed(None) == "reserve"
    assert domain.on_order_placed("cancelled") == "skip_cancelled"
    for state in ("reserved", "failed", "released", "expired", "committed"):
        assert domain.on_order_placed(state) == "skip"
    assert domain.on_order_cancelled(None) == "tombstone"
    assert domain.on_order_cancelled("reserved") == "release"
    assert domain.on_order_cancelled("failed") == "close"
    for state in ("released", "expired", "committed", "cancelled"):
        assert domain.on_order_cancelled(state) == "skip"
    assert domain.on_shipment_dispatched("reserved") == "commit"
    assert domain.on_shipment_dispatched("expired") == "deduct"
    for state in (None, "committed", "failed", "cancelled"):
        assert domain.on_shipment_dispatched(state) == "skip"


def test_reservation_expiry_rule():
    held = {"state": "reserved", "paid": False, "expires_at": NOW}
    assert domain.reservation_expires_at(NOW, 60) == NOW + timedelta(seconds=60)
    assert domain.reservation_expired(held, NOW)
    assert not domain.reservation_expired(held, NOW - timedelta(seconds=1))
    assert not domain.reservation_expired({**held, "paid": True}, NOW)
    assert not domain.reservation_expired({**held, "state": "released"}, NOW)


def test_moderation_and_rating():
    assert domain.moderation_effect("pending", "approved") == 1
    assert domain.moderation_effect("pending", "rejected") == 0
    assert domain.moderation_effect("approved", "rejected") == -1
    assert domain.moderation_effect("rejected", "approved") == 1
    assert domain.moderation_effect("approved", "approved") == 0
    with pytest.raises(ValidationFailed):
        domain.moderation_effect("pending", "pending")
    assert domain.rating_average(0, 0) == 0.0
    assert domain.rating_average(11, 3) == 3.67


def test_tokenize_chinese_and_english():
    tokens = search.tokenize("华为智能手机 Mate 60")
    assert {"华为", "智能", "手机", "智能手机", "mate", "60"} <= set(tokens)
    assert search.tokenize("Cotton crew T-shirt, WHITE") == ["cotton", "crew", "shirt", "white"]
    assert search.tokenize("的") == []
    assert search.tokenize(None) == []
    title, everything = search.document_tokens("纯棉T恤", "summer 夏季")
    assert "纯棉" in title and "夏季" in everything and "夏季" not in title


def test_search_pipeline_shapes():
    stages = search.pipeline("手机", "phones", "price_desc", 3, 10)
    assert stages[0]["$match"]["status"] == "published"
    assert stages[0]["$match"]["category"] == "phones"
    assert "手机" in stages[0]["$match"]["search_tokens"]["$in"]
    items = stages[-1]["$facet"]["items"]
    assert items[0]["$sort"] == {"price": -1, "_id": 1}
    assert items[1] == {"$skip": 20} and items[2] == {"$limit": 10}
    assert "search_tokens" not in search.pipeline(None, None, "sales", 1, 20)[0]["$match"]


@pytest.mark.parametrize("field,value", [
    ("title", ""), ("title", " "), ("price", -1), ("price", 1.5), ("price", True), ("sku", ""),
    ("stock", -1), ("low_stock_threshold", -2), ("category", ""), ("images", ["ftp://x/y"]),
])
def test_new_product_schema_names_the_field(field, value):
    payload = {"sku": "A", "title": "T", "category": "c", "price": 1, field: value}
    with pytest.raises(ValidationFailed) as err:
        load(schemas.NewProduct(), payload)
    assert field in err.value.field_errors


def test_schema_rejects_unknown_fields_and_missing_ones():
    with pytest.raises(ValidationFailed) as err:
        load(schemas.NewProduct(), {"sku": "A", "category": "c", "price": 1, "colour": "red"})
    assert {"title", "colour"} <= set(err.value.field_errors)
    with pytest.raises(ValidationFailed) as err:
        load(schemas.UpdateProduct(), {"product_id": "p", "changes": {}})
    assert "changes" in err.value.field_errors
    loaded = load(schemas.Search(), {})
    assert (loaded["sort"], loaded["page"], loaded["page_size"]) == ("relevance", 1, 20)
    with pytest.raises(ValidationFailed) as err:
        load(schemas.Search(), {"page_size": 1000})
    assert "page_size" in err.value.field_errors

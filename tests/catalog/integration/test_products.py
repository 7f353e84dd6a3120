"""Products, prices, search and merchants over RPC against the real broker and mongod."""
from __future__ import annotations

import pytest

from shared.errors import Conflict, NotFound, ValidationFailed
from tests.catalog.conftest import emitted, product_payload, uid


def test_create_get_publish_unpublish(catalog, db, rpc):
    product = rpc.catalog.create_product(product_payload(stock=7, attributes={"size": "M"},
                                                         images=["https://img.example/1.jpg"]))
    assert product["status"] == "draft"
    assert product["merchant_id"] == "mch_house"
    got = rpc.catalog.get_product(product["id"])
    for key in ("id", "price", "currency", "status", "category", "title"):
        assert got[key] == product[key]
    assert got["stock"] == {"on_hand": 7, "reserved": 0, "available": 7}
    assert rpc.catalog.publish_product(product["id"])["status"] == "published"
    assert rpc.catalog.publish_product(product["id"])["status"] == "published"  # no-op
    assert rpc.catalog.unpublish_product(product["id"])["status"] == "unpublished"
    assert rpc.catalog.publish_product(product["id"])["status"] == "published"
    assert len(emitted(db, "product_created", product_id=product["id"])) == 1
    assert len(emitted(db, "product_published", product_id=product["id"])) == 2
    assert len(emitted(db, "product_unpublished", product_id=product["id"])) == 1


def test_unpublish_a_draft_is_a_conflict(catalog, rpc):
    product = rpc.catalog.create_product(product_payload())
    with pytest.raises(Conflict):
        rpc.catalog.unpublish_product(product["id"])


@pytest.mark.parametrize("field,value", [
    ("title", ""), ("title", "   "), ("price", -1), ("price", 12.5), ("price", "100"),
    ("currency", "USD"), ("stock", -3), ("images", ["not a url"]),
])
def test_bad_product_input_names_the_field_and_writes_nothing(catalog, db, rpc, field, value):
    sku = uid("BAD")
    outbox_before = db.outbox.count_documents({})
    with pytest.raises(ValidationFailed) as err:
        rpc.catalog.create_product(product_payload(sku=sku, **{field: value}))
    assert field in err.value.field_errors
    assert db.products.count_documents({"sku": sku}) == 0
    assert db.outbox.count_documents({}) == outbox_before


def test_missing_title_and_duplicate_sku(catalog, db, rpc):
    payload = product_payload()
    del payload["title"]
    with pytest.raises(ValidationFailed) as err:
        rpc.catalog.create_product(payload)
    assert "title" in err.value.field_errors
    sku = uid("DUP")
    first = rpc.catalog.create_product(product_payload(sku=sku))
    with pytest.raises(ValidationFailed) as err:
        rpc.catalog.create_product(product_payload(sku=sku))
    assert "sku" in err.value.field_errors
    assert db.products.count_documents({"sku": sku}) == 1
    assert [d["product_id"] for d in emitted(db, "product_created", sku=sku)] == [first["id"]]


def test_unknown_ids_are_not_found(catalog, rpc):
    with pytest.raises(NotFound):
        rpc.catalog.get_product("prd_nope")
    with pytest.raises(NotFound) as err:
        rpc.catalog.create_product(product_payload(merchant_id="mch_nope"))
    assert err.value.details["field"] == "merchant_id"
    with pytest.raises(NotFound):
        rpc.catalog.set_price("prd_nope", 100)


def test_update_product_and_reject_unknown_fields(catalog, rpc):
    product = rpc.catalog.create_product(product_payload())
    updated = rpc.catalog.update_product(product["id"], {"title": "Linen shirt", "category": "tops"})
    assert (updated["title"], updated["category"]) == ("Linen shirt", "tops")
    with pytest.raises(ValidationFailed) as err:
        rpc.catalog.update_product(product["id"], {"price": 1})
    assert "changes" in err.value.field_errors
    with pytest.raises(ValidationFailed):
        rpc.catalog.update_product(product["id"], {"title": ""})
    assert rpc.catalog.get_product(product["id"])["title"] == "Linen shirt"


def test_set_price_keeps_history_and_emits(catalog, db, rpc):
    product = rpc.catalog.create_product(product_payload(price=12900))
    rpc.catalog.set_price(product["id"], 9900, changed_by="ops_li")
    rpc.catalog.set_price(product["id"], 9900)  # unchanged: no entry, no event
    assert rpc.catalog.get_product(product["id"])["price"] == 9900
    history = rpc.catalog.get_price_history(product["id"])
    assert [(h["old_price"], h["new_price"], h["by"]) for h in history] == [
        (12900, 9900, "ops_li"), (None, 12900, "create")]
    # the whole listing as of the change, at the product's version (created 1, priced 2)
    assert emitted(db, "price_changed", product_id=product["id"]) == [
        {"product_id": product["id"], "old_price": 12900, "new_price": 9900, "currency": "CNY",
         "category": "apparel", "sku": product["sku"], "title": product["title"], "price": 9900,
         "status": "draft", "version": 2}]
    with pytest.raises(ValidationFailed) as err:
        rpc.catalog.set_price(product["id"], -5)
    assert "price" in err.value.field_errors


def test_search_chinese_english_category_sort_and_pages(catalog, rpc):
    tag = uid("c")

    def make(title, price, category="apparel", description=""):
        p = rpc.catalog.create_product(product_payload(title=title, price=price, category=category + tag,
                                                       description=description))
        rpc.catalog.publish_product(p["id"])
        return p

    shirt = make("白色纯棉T恤 男款", 9900)
    phone = make("华为智能手机 Mate 60", 599900, category="phones")
    case = make("手机壳 透明", 2900, category="phones")
    tee = make("Cotton crew T-shirt, white", 12900, description="breathable summer shirt")
    # a draft is never found by shoppers
    draft = rpc.catalog.create_product(product_payload(title="手机支架", category="phones" + tag))

    apparel, phones = "apparel" + tag, "phones" + tag
    found = rpc.catalog.search_products(query="手机", category=phones)
    ids = [p["id"] for p in found["items"]]
    assert set(ids) == {phone["id"], case["id"]}
    assert draft["id"] not in ids
    assert [p["id"] for p in rpc.catalog.search_products(query="纯棉", category=apparel)["items"]] == [
        shirt["id"]]
    by_relevance = rpc.catalog.search_products(query="智能手机", category=phones)["items"]
    assert by_relevance[0]["id"] == phone["id"]
    assert [p["id"] for p in rpc.catalog.search_products(query="Cotton", category=apparel)["items"]] == [
        tee["id"]]
    assert [p["id"] for p in rpc.catalog.search_products(query="summer", category=apparel)["items"]] == [
        tee["id"]]
    anywhere = [p["id"] for p in rpc.catalog.search_products(query="纯棉T恤", page_size=100)["items"]]
    assert shirt["id"] in anywhere
    by_price = rpc.catalog.search_products(category=phones, sort="price")
    assert [p["id"] for p in by_price["items"]] == [case["id"], phone["id"]]
    desc = rpc.catalog.search_products(category=phones, sort="price_desc", page=1, page_size=1)
    assert desc["total"] == 2 and [p["id"] for p in desc["items"]] == [phone["id"]]
    page2 = rpc.catalog.search_products(category=phones, sort="price_desc", page=2, page_size=1)
    assert [p["id"] for p in page2["items"]] == [case["id"]]
    with pytest.raises(ValidationFailed) as err:
        rpc.catalog.search_products(sort="cheapest")
    assert "sort" in err.value.field_errors


def test_merchant_lifecycle_and_suspension_unpublishes(catalog, db, rpc):
    merchant = rpc.catalog.apply_merchant({"name": "Acme Tea"})
    assert merchant["status"] == "pending"
    product = rpc.catalog.create_product(product_payload(merchant_id=merchant["id"]))
    with pytest.raises(Conflict):
        rpc.catalog.publish_product(product["id"])  # merchant not approved
    assert rpc.catalog.approve_merchant(merchant["id"])["status"] == "approved"
    assert rpc.catalog.publish_product(product["id"])["status"] == "published"
    rpc.catalog.penalize_merchant(merchant["id"], "fine", "late shipping", amount=5000)
    suspended = rpc.catalog.suspend_merchant(merchant["id"], "counterfeit goods reported")
    assert suspended["status"] == "suspended"
    assert [p["kind"] for p in suspended["penalties"]] == ["fine", "suspension"]
    assert rpc.catalog.get_product(product["id"])["status"] == "unpublished"
    # applied 1, approved 2, suspended 3 (a penalty is not a change of status)
    assert emitted(db, "merchant_suspended") == [{"merchant_id": merchant["id"],
                                                  "reason": "counterfeit goods reported",
                                                  "status": "suspended", "version": 3}]
    assert len(emitted(db, "product_unpublished", product_id=product["id"])) == 1
    with pytest.raises(Conflict):
        rpc.catalog.publish_product(product["id"])
    assert len(emitted(db, "merchant_approved", merchant_id=merchant["id"])) == 1


def test_reject_merchant_needs_a_reason_and_is_terminal(catalog, rpc):
    merchant = rpc.catalog.apply_merchant({"name": "Shady Ltd"})
    with pytest.raises(ValidationFailed) as err:
        rpc.catalog.reject_merchant(merchant["id"], "")
    assert "reason" in err.value.field_errors
    assert rpc.catalog.reject_merchant(merchant["id"], "no licence")["status"] == "rejected"
    with pytest.raises(Conflict):
        rpc.catalog.approve_merchant(merchant["id"])
    with pytest.raises(NotFound):
        rpc.catalog.approve_merchant(uid("mch"))

"""Reviews: one per member per product, moderation, rating, anonymised on member_erased."""
from __future__ import annotations

import pytest

from shared.errors import Conflict, NotFound, ValidationFailed
from tests.catalog.conftest import emitted, inbox_count, product_payload, uid
from tools.testing import wait_for


def test_reviews_moderation_rating_and_erasure(catalog, db, rpc, events):
    pid = rpc.catalog.create_product(product_payload())["id"]
    alice, bob, carol = uid("mem"), uid("mem"), uid("mem")
    r1 = rpc.catalog.add_review(pid, alice, 5, "很好 great fit")
    r2 = rpc.catalog.add_review(pid, bob, 2, "too small")
    r3 = rpc.catalog.add_review(pid, carol, 4, "")
    assert r1["status"] == "pending"
    with pytest.raises(Conflict):
        rpc.catalog.add_review(pid, alice, 4, "again")
    for rating in (0, 6, 3.5, "5"):
        with pytest.raises(ValidationFailed) as err:
            rpc.catalog.add_review(pid, uid("mem"), rating, "x")
        assert "rating" in err.value.field_errors
    with pytest.raises(NotFound):
        rpc.catalog.add_review("prd_missing", alice, 5, "x")
    assert db.reviews.count_documents({"product_id": pid}) == 3
    assert {e["member_id"] for e in emitted(db, "review_added", product_id=pid)} == {alice, bob, carol}

    assert rpc.catalog.get_product(pid)["rating"] == {"average": 0.0, "count": 0}
    rpc.catalog.moderate_review(r1["id"], "approved")
    rpc.catalog.moderate_review(r2["id"], "approved")
    rpc.catalog.moderate_review(r3["id"], "rejected")
    rpc.catalog.moderate_review(r2["id"], "approved")  # no double count
    assert rpc.catalog.get_product(pid)["rating"] == {"average": 3.5, "count": 2}
    rpc.catalog.moderate_review(r2["id"], "rejected")  # taken down
    assert rpc.catalog.get_product(pid)["rating"] == {"average": 5.0, "count": 1}
    with pytest.raises(ValidationFailed) as err:
        rpc.catalog.moderate_review(r1["id"], "maybe")
    assert "status" in err.value.field_errors
    listed = rpc.catalog.list_reviews(pid)
    assert [r["id"] for r in listed["items"]] == [r1["id"]]
    rejected = rpc.catalog.list_reviews(pid, status="rejected")["items"]
    assert {r["id"] for r in rejected} == {r2["id"], r3["id"]}

    erased = events.publish("member", "member_erased", {"member_id": alice})
    wait_for(lambda: inbox_count(db, erased["event_id"]) == 1, timeout=30, what="erasure handled")
    review = rpc.catalog.list_reviews(pid)["items"][0]
    assert (review["member_id"], review["text"], review["anonymised"], review["rating"]) == (
        None, None, True, 5)
    assert db.reviews.count_documents({"member_id": alice}) == 0
    assert rpc.catalog.get_product(pid)["rating"] == {"average": 5.0, "count": 1}
    with pytest.raises(Conflict):
        rpc.catalog.add_review(pid, alice, 5, "back again")

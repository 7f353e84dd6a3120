"""Marketing's member and product read models keep the owner's highest version per section,
whatever the delivery order or the producers' clocks (real broker, real mongod)."""
from __future__ import annotations

from datetime import timedelta

from shared.clock import to_iso, utcnow
from shared.ids import new_id
from tools.testing import make_envelope, publish_event, store_of, wait_for

WAIT = 30
LISTING = {"sku": "SKU-1", "title": "Tee", "category": "apparel", "price": 5000, "currency": "CNY"}


def send(amqp_uri, source, event_type, data, at=None):
    envelope = make_envelope(source, event_type, data)
    if at is not None:
        envelope["occurred_at"] = to_iso(at)
    publish_event(amqp_uri, envelope)
    return envelope


def handled(db, *envelopes):
    wait_for(lambda: all(db.inbox.find_one({"event_id": e["event_id"]}) for e in envelopes), WAIT,
             what="events handled")


def registered(member_id, version, tier="bronze"):
    return {"member_id": member_id, "region": "Shanghai", "gender": None, "birth_year": None,
            "interests": ["running"], "tier": tier, "version": version}


def test_member_sections_out_of_order_tie_and_skew(marketing, amqp_uri):
    db = store_of(marketing())
    mid = new_id("mem")
    now = utcnow()
    # the tier change (3) and a consent withdrawal (4) overtake the registration (1) and the
    # grant (2); the later changes were stamped by a slow clock, the earlier by a fast one
    late = now + timedelta(minutes=5)
    early = now - timedelta(minutes=5)
    first = [send(amqp_uri, "member", "tier_changed", {"member_id": mid, "old_tier": "bronze",
                                                      "new_tier": "gold", "version": 3}, early),
             send(amqp_uri, "member", "member_consent_changed",
                  {"member_id": mid, "channel": "email", "granted": False, "version": 4}, early)]
    handled(db, *first)
    then = [send(amqp_uri, "member", "member_registered", registered(mid, 1), late),
            send(amqp_uri, "member", "member_consent_changed",
                 {"member_id": mid, "channel": "email", "granted": True, "version": 2}, late),
            # a tie on the consent is ignored; the profile section had nothing yet: applied
            send(amqp_uri, "member", "member_consent_changed",
                 {"member_id": mid, "channel": "email", "granted": True, "version": 4}, late)]
    handled(db, *then)
    doc = db.members.find_one({"_id": mid})
    assert doc["tier"] == "gold" and doc["tier_version"] == 3
    assert doc["consents"]["email"]["granted"] is False and doc["consents_email_version"] == 4
    assert doc["interests"] == ["running"] and doc["profile_version"] == 1


def test_equal_occurred_at_the_higher_version_wins(marketing, amqp_uri):
    db = store_of(marketing())
    mid = new_id("mem")
    at = utcnow()
    events = [send(amqp_uri, "member", "tier_changed", {"member_id": mid, "old_tier": "silver",
                                                       "new_tier": "gold", "version": 6}, at),
              send(amqp_uri, "member", "tier_changed", {"member_id": mid, "old_tier": "bronze",
                                                       "new_tier": "silver", "version": 5}, at)]
    handled(db, *events)
    assert db.members.find_one({"_id": mid})["tier"] == "gold"


def test_product_listing_and_stock_sections(marketing, amqp_uri):
    db = store_of(marketing())
    pid = new_id("prd")
    now = utcnow()
    first = [send(amqp_uri, "catalog", "product_unpublished",
                  {"product_id": pid, **LISTING, "status": "unpublished", "version": 5},
                  now - timedelta(hours=1)),
             send(amqp_uri, "catalog", "stock_replenished",
                  {"product_id": pid, "available": 50, "threshold": 5, "on_hand": 50, "low": False,
                   "version": 4}, now - timedelta(hours=1))]
    handled(db, *first)
    late = [send(amqp_uri, "catalog", "product_published",
                 {"product_id": pid, **LISTING, "status": "published", "version": 2}, now),
            send(amqp_uri, "catalog", "stock_ran_low",
                 {"product_id": pid, "available": 2, "threshold": 5, "on_hand": 2, "low": True,
                  "version": 3}, now)]
    handled(db, *late)
    doc = db.products.find_one({"_id": pid})
    assert (doc["status"], doc["listing_version"]) == ("unpublished", 5)
    assert (doc["low_stock"], doc["stock_version"]) == (False, 4)

"""Registration, profile, consent and erasure over RPC against the real broker and mongod."""
import json

import pytest

from shared.errors import Conflict, NotFound, ValidationFailed
from tests.member.conftest import member_payload, outbox_events, uid


def test_register_and_get_member(member_service, rpc):
    _, db = member_service
    member = rpc.member.register_member(member_payload(email="  Li.Wei.1@Example.COM "))
    assert member["id"].startswith("mem_")
    assert member["email"] == "Li.Wei.1@Example.COM"
    assert member["tier"] == "bronze" and member["tier_discount_percent"] == 0
    assert member["consent"]["email"]["granted"] is True
    assert member["consent"]["sms"]["granted"] is False
    assert member["segment"] == "new"
    fetched = rpc.member.get_member(member["id"])
    assert fetched["tier_progress"]["next_tier"] == "silver"
    assert fetched["tier_progress"]["remaining_to_next"] == 100000
    assert db.members.find_one({"_id": member["id"]})["email_norm"] == "li.wei.1@example.com"

    registered = outbox_events(db, "member_registered", member["id"])
    assert len(registered) == 1
    data = registered[0]["data"]
    assert data["tier"] == "bronze" and data["region"] == "Shanghai"
    text = json.dumps(data)
    assert "Li Wei" not in text and "@" not in text and "138" not in text
    consent = outbox_events(db, "member_consent_changed", member["id"])
    assert [e["data"] for e in consent] == [{"member_id": member["id"], "channel": "email", "granted": True,
                                             "version": 1}]  # the registration's version


@pytest.mark.parametrize("payload,field", [
    ({"email": "not-an-email"}, "email"),
    ({"email": ""}, "email"),
    ({"name": ""}, "name"),
    ({"birth_year": 1800}, "birth_year"),
    ({"birth_year": "1990"}, "birth_year"),
    ({"gender": "robot"}, "gender"),
    ({"phone": "call me"}, "phone"),
    ({"consent": {"fax": True}}, "consent"),
    ({"favourite_colour": "red"}, "favourite_colour"),
])
def test_bad_registration_names_the_field_and_writes_nothing(member_service, rpc, payload, field):
    _, db = member_service
    with pytest.raises(ValidationFailed) as err:
        rpc.member.register_member(member_payload(**payload))
    assert field in err.value.field_errors
    assert db.members.count_documents({}) == 0
    assert db.outbox.count_documents({}) == 0


def test_missing_email_and_non_dict(member_service, rpc):
    payload = member_payload()
    del payload["email"]
    with pytest.raises(ValidationFailed) as err:
        rpc.member.register_member(payload)
    assert "email" in err.value.field_errors
    with pytest.raises(ValidationFailed):
        rpc.member.register_member("li@example.com")


def test_duplicate_email_is_a_conflict_even_with_other_case(member_service, rpc):
    _, db = member_service
    rpc.member.register_member(member_payload(email="dup@example.com"))
    with pytest.raises(Conflict) as err:
        rpc.member.register_member(member_payload(email="  DUP@Example.com"))
    assert "email" in err.value.details["fields"]
    assert "dup@" not in err.value.message
    assert db.members.count_documents({}) == 1
    assert len(outbox_events(db, "member_registered")) == 1


def test_concurrent_registrations_of_one_email_make_one_member(member_service, amqp_uri):
    import eventlet

    from tools.client import connect

    _, db = member_service
    email = f"{uid('race')}@example.com"

    def attempt(i):
        with connect(amqp_uri, timeout=20) as client:
            try:
                client.member.register_member(member_payload(email=email.upper() if i % 2 else email))
                return "ok"
            except Conflict:
                return "conflict"

    pool = eventlet.GreenPool(6)
    outcomes = list(pool.imap(attempt, range(6)))
    assert outcomes.count("ok") == 1 and outcomes.count("conflict") == 5
    assert db.members.count_documents({}) == 1


def test_unknown_member(member_service, rpc):
    for call in (lambda: rpc.member.get_member("mem_nope"),
                 lambda: rpc.member.update_consent("mem_nope", "email", True),
                 lambda: rpc.member.get_points("mem_nope"),
                 lambda: rpc.member.redeem_points("mem_nope", 1, "checkout"),
                 lambda: rpc.member.erase_member("mem_nope"),
                 lambda: rpc.member.get_segment("mem_nope"),
                 lambda: rpc.member.update_profile("mem_nope", {"region": "Beijing"})):
        with pytest.raises(NotFound):
            call()


def test_update_profile(member_service, rpc):
    _, db = member_service
    member = rpc.member.register_member(member_payload())
    other = rpc.member.register_member(member_payload(email="taken@example.com"))
    updated = rpc.member.update_profile(member["id"], {"region": "Beijing", "interests": ["Tea", "tea"]})
    assert updated["region"] == "Beijing" and updated["interests"] == ["tea"]
    with pytest.raises(Conflict) as err:
        rpc.member.update_profile(member["id"], {"email": "TAKEN@example.com"})
    assert "email" in err.value.details["fields"]
    with pytest.raises(ValidationFailed) as err:
        rpc.member.update_profile(member["id"], {"email": "nope"})
    assert "email" in err.value.field_errors["changes"]
    with pytest.raises(ValidationFailed) as err:
        rpc.member.update_profile(member["id"], {})
    assert "changes" in err.value.field_errors
    with pytest.raises(ValidationFailed):
        rpc.member.update_profile(member["id"], {"tier": "platinum"})
    assert db.members.find_one({"_id": member["id"]})["tier"] == "bronze"
    moved = rpc.member.update_profile(member["id"], {"email": "New.Address@example.com"})
    assert moved["email"] == "New.Address@example.com"
    assert rpc.member.get_member(other["id"])["email"] == "taken@example.com"


def test_consent_per_channel_with_history_and_contactable_list(member_service, rpc):
    _, db = member_service
    a = rpc.member.register_member(member_payload(consent={"email": True, "sms": False}))
    b = rpc.member.register_member(member_payload(consent={}))
    result = rpc.member.update_consent(b["id"], "sms", True)
    assert result["changed"] is True and result["granted"] is True
    again = rpc.member.update_consent(b["id"], "sms", True)
    assert again["changed"] is False
    rpc.member.update_consent(a["id"], "email", False)

    history = rpc.member.get_consent(b["id"])["history"]
    assert [(h["channel"], h["granted"], h["source"]) for h in history] == [("sms", True, "member")]
    history_a = rpc.member.get_consent(a["id"])["history"]
    assert [(h["channel"], h["granted"]) for h in history_a] == [("email", True), ("sms", False),
                                                                  ("email", False)]
    assert all(h["at"].endswith("Z") for h in history_a)

    assert [i["member_id"] for i in rpc.member.list_contactable("sms")["items"]] == [b["id"]]
    assert rpc.member.list_contactable("email")["total"] == 0
    page = rpc.member.list_contactable("sms", member_ids=[a["id"], b["id"]], page=1, page_size=1)
    assert page["total"] == 1 and page["items"][0]["member_id"] == b["id"]
    assert rpc.member.get_contact(b["id"], "sms")["address"] == "+8613800138000"
    with pytest.raises(Conflict):
        rpc.member.get_contact(a["id"], "email")

    changes = [e["data"] for e in outbox_events(db, "member_consent_changed", b["id"])]
    assert changes == [{"member_id": b["id"], "channel": "sms", "granted": True, "version": 2}]


def test_unknown_channel_names_the_field(member_service, rpc):
    _, db = member_service
    member = rpc.member.register_member(member_payload())
    before = db.consent_history.count_documents({})
    with pytest.raises(ValidationFailed) as err:
        rpc.member.update_consent(member["id"], "pigeon", True)
    assert "channel" in err.value.field_errors
    with pytest.raises(ValidationFailed) as err:
        rpc.member.update_consent(member["id"], "email", "yes")
    assert "granted" in err.value.field_errors
    with pytest.raises(ValidationFailed) as err:
        rpc.member.list_contactable("pigeon")
    assert "channel" in err.value.field_errors
    assert db.consent_history.count_documents({}) == before


def test_erasure_leaves_no_personal_data(member_service, rpc, events):
    from tests.member.conftest import order_completed
    from tools.testing import wait_for

    _, db = member_service
    email, name, phone = f"{uid('erase')}@Example.com", "Zhang Xiaoming", "+8613912345678"
    member = rpc.member.register_member(member_payload(email=email, name=name, phone=phone,
                                                       consent={"email": True, "sms": True}))
    mid = member["id"]
    events.send("order_completed", order_completed(uid("ord"), mid, 50000))
    wait_for(lambda: rpc.member.get_points(mid)["balance"] == 500, timeout=30, what="points earned")

    erased = rpc.member.erase_member(mid)
    assert erased["erased"] is True and erased["already_erased"] is False

    needles = [email, email.lower(), name, phone, "Zhang", "13912345678", "Shanghai", "skincare"]
    for collection in db.list_collection_names():
        for doc in db[collection].find():
            text = json.dumps(doc, default=str)
            for needle in needles:
                assert needle not in text, f"{needle!r} left in {collection}"

    view = rpc.member.get_member(mid)
    assert view["erased"] is True and "email" not in view and "name" not in view
    assert rpc.member.get_points(mid)["balance"] == 500           # the anonymous ledger stays
    assert db.ledger.count_documents({"member_id": mid}) == 1
    assert outbox_events(db, "member_erased", mid)[0]["data"] == {
        "member_id": mid, "version": db.members.find_one({"_id": mid})["version"]}
    assert rpc.member.list_contactable("email")["total"] == 0

    again = rpc.member.erase_member(mid)
    assert again["already_erased"] is True
    assert len(outbox_events(db, "member_erased", mid)) == 1
    with pytest.raises(Conflict):
        rpc.member.update_consent(mid, "email", True)
    with pytest.raises(Conflict):
        rpc.member.redeem_points(mid, 10, "checkout")
    # the address is free again: a new registration is a new member
    fresh = rpc.member.register_member(member_payload(email=email))
    assert fresh["id"] != mid

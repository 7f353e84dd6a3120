"""Member, the owner of members, moves a member's version by exactly one with each change its
events announce (in the change's own update), also when changes race."""
from __future__ import annotations

import eventlet

from shared.errors import ValidationFailed
from tests.member.conftest import member_payload, order_completed, outbox_events, uid
from tools.testing import wait_for

MEMBER_EVENTS = ("member_registered", "member_consent_changed", "points_earned", "points_redeemed",
                 "tier_changed", "member_erased")


def announced(db, mid) -> list[int]:
    return sorted(e["data"]["version"] for t in MEMBER_EVENTS for e in outbox_events(db, t, mid)
                  if t != "member_consent_changed" or e["data"]["version"] > 1)


def test_each_change_moves_the_version_once(member_service, rpc):
    _, db = member_service
    member = rpc.member.register_member(member_payload(consent={"email": True, "sms": True}))
    mid = member["id"]
    assert member["version"] == 1
    # the consents given at registration are part of it: same version
    assert {e["data"]["version"] for e in outbox_events(db, "member_consent_changed", mid)} == {1}
    assert rpc.member.update_consent(mid, "sms", False)["version"] == 2
    unchanged = rpc.member.update_consent(mid, "sms", False)
    assert unchanged["changed"] is False and unchanged["version"] == 2
    rpc.member.update_profile(mid, {"region": "Beijing"})
    assert rpc.member.get_member(mid)["version"] == 3
    rpc.member.erase_member(mid)
    assert announced(db, mid) == [1, 2, 4]  # profile changes announce nothing, but count
    assert rpc.member.get_member(mid)["version"] == 4


def test_racing_changes_move_the_version_once_each(member_service, rpc, events, amqp_uri):
    from tools.client import connect

    _, db = member_service
    mid = rpc.member.register_member(member_payload(consent={}))["id"]
    events.send("order_completed", order_completed(uid("ord"), mid, 20000))  # 200 points, still bronze
    wait_for(lambda: rpc.member.get_points(mid)["balance"] > 0, timeout=30, what="points earned")

    def change(i):
        with connect(amqp_uri, timeout=30) as client:
            if i % 2:
                return client.member.update_consent(mid, "email", i % 4 == 1)["changed"]
            try:
                client.member.redeem_points(mid, 10, "checkout", request_id=f"r{i}")
                return True
            except ValidationFailed:
                return False

    changed = sum(eventlet.GreenPool(12).imap(change, range(12)))
    versions = announced(db, mid)
    # registered 1, earned 2, then one version per change that happened, none shared
    assert versions == list(range(1, 3 + changed))
    assert rpc.member.get_member(mid)["version"] == 2 + changed

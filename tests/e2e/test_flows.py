"""End-to-end flows (DESIGN.md "Core flows"): all six services on the real broker and mongod,
driven only through the public RPC contract; eventual consistency awaited with `wait_for`."""
from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

from shared.clock import to_iso, utcnow
from shared.errors import NotFound
from tools.testing import wait_for

pytestmark = pytest.mark.usefixtures("warehouse")

TIMEOUT = 30


# --- helpers -------------------------------------------------------------------------------

def tag() -> str:
    return uuid.uuid4().hex[:8]


def new_product(shop, price: int, stock: int, category: str = "tea") -> str:
    product = shop.catalog.create_product({
        "sku": f"E2E-{tag()}", "title": f"E2E product {tag()}", "description": "end-to-end",
        "category": category, "price": price, "currency": "CNY", "stock": stock})
    shop.catalog.publish_product(product["id"])
    return product["id"]


def new_member(shop, consent: dict | None = None, **fields) -> dict:
    member = {"email": f"e2e.{tag()}@example.com", "name": f"E2E Member {tag()}",
              "region": "Shanghai", "consent": consent or {}}
    member.update(fields)
    return shop.member.register_member(member)


def address(name: str = "Li Wei", **fields) -> dict:
    return {"name": name, "line1": "88 Century Avenue", "city": "Shanghai", "region": "Shanghai",
            "postal_code": "200120", "phone": "+8613800138000", "country": "CN", **fields}


def place(shop, member_id: str, lines: list[dict], token: str = "tok_visa", coupon_code=None,
          shipping_address=None) -> dict:
    order = shop.order.place_order(
        member_id, [{"product_id": p, "quantity": q} for p, q in lines],
        shipping_address or address(), {"token": token, "method": "card"},
        coupon_code=coupon_code, idempotency_key=f"e2e-{tag()}")
    assert order["status"] == "pending"
    return order


def wait_status(shop, order_id: str, *statuses: str) -> dict:
    def reached():
        order = shop.order.get_order(order_id)
        return order if order["status"] in statuses else None

    return wait_for(reached, timeout=TIMEOUT, interval=0.2, what=f"order {order_id} to be {statuses}")


def shipment_of(shop, order_id: str) -> dict:
    def found():
        try:
            return shop.fulfillment.get_shipment_for_order(order_id)
        except NotFound:
            return None

    return wait_for(found, timeout=TIMEOUT, interval=0.2, what=f"the shipment of {order_id}")


def complete(shop, order_id: str) -> dict:
    """paid → fulfilling → shipped → delivered → completed, through fulfillment."""
    wait_status(shop, order_id, "fulfilling")
    shipment = shipment_of(shop, order_id)
    shop.fulfillment.dispatch_shipment(shipment["id"], carrier="sf-express")
    wait_status(shop, order_id, "shipped")
    shop.fulfillment.confirm_delivery(shipment["id"])
    return wait_status(shop, order_id, "completed")


def window() -> dict:
    now = utcnow()
    return {"start": to_iso(now - timedelta(hours=2)), "end": to_iso(now + timedelta(hours=2))}


def kpis(shop, span: dict) -> dict:
    return shop.analytics.get_kpis(start=span["start"], end=span["end"])


def analytics_order(suite, order_id: str) -> dict:
    return suite.db("analytics").orders.find_one({"_id": order_id}) or {}


def points(shop, member_id: str) -> int:
    return shop.member.get_points(member_id)["balance"]


def stock(shop, product_id: str) -> tuple[int, int, int]:
    s = shop.catalog.get_stock(product_id)
    return s["on_hand"], s["reserved"], s["available"]


def notification_keys(shop, member_id: str) -> set[str]:
    return {m["dedupe_key"] for m in shop.marketing.list_messages(member_id=member_id,
                                                                  kind="transactional")}


def coupon(shop, per_member_limit=1, max_redemptions=1, amount=500) -> str:
    promotion = shop.marketing.create_promotion({
        "name": f"E2E coupon {tag()}", "kind": "amount_off", "amount": amount, "trigger": "coupon",
        "starts_at": to_iso(utcnow() - timedelta(minutes=5)), "ends_at": None})
    code = f"E2E{tag().upper()}"
    shop.marketing.create_coupons({"promotion_id": promotion["id"], "code": code,
                                   "max_redemptions": max_redemptions,
                                   "per_member_limit": per_member_limit,
                                   "starts_at": to_iso(utcnow() - timedelta(minutes=5)),
                                   "ends_at": None})
    return code


# --- flows ---------------------------------------------------------------------------------

def test_happy_path_completes_with_points_notifications_and_kpis(suite, shop):
    span = window()
    before = kpis(shop, span)
    product = new_product(shop, price=5000, stock=10)
    member = new_member(shop)
    code = coupon(shop, amount=500)

    order = place(shop, member["id"], [(product, 2)], coupon_code=code)
    # 2 × 5000 − 500 coupon = 9500, under the 9900 free-shipping threshold: + 1000 shipping
    assert (order["subtotal"], order["discount"], order["shipping_fee"], order["total"]) \
        == (10000, 500, 1000, 10500)

    done = complete(shop, order["id"])
    assert [h["status"] for h in done["history"]][:3] == ["pending", "confirmed", "paid"]
    assert {"fulfilling", "shipped", "delivered", "completed"} <= {h["status"] for h in done["history"]}

    # stock committed at dispatch: on_hand and reserved dropped, nothing left reserved
    wait_for(lambda: stock(shop, product) == (8, 0, 8), timeout=TIMEOUT, what="stock committed")
    # marketing: the coupon was redeemed by the payment
    wait_for(lambda: shop.marketing.get_coupon_reservation(order["id"])["status"] == "redeemed",
             timeout=TIMEOUT, what="coupon redeemed")
    assert shop.marketing.get_coupon(code)["used"] == 1
    # member: bronze earns 1 point per yuan of the merchandise (9500 after the coupon; the
    # 1000 shipping fee earns nothing)
    wait_for(lambda: points(shop, member["id"]) == 95, timeout=TIMEOUT, what="points earned")
    # marketing: transactional notifications for payment and delivery, once each
    wait_for(lambda: {f"order_confirmed:{order['id']}", f"order_shipped:{order['id']}",
                      f"order_delivered:{order['id']}"}
             <= notification_keys(shop, member["id"]), timeout=TIMEOUT, what="notifications")
    earned = shop.member.get_points(member["id"])["entries"]
    assert [(e["kind"], e["points"], e["order_id"]) for e in earned] == [("earn", 95, order["id"])]
    # analytics: the order's GMV in a window around now
    wait_for(lambda: kpis(shop, span)["gmv"] - before["gmv"] == 10500, timeout=TIMEOUT,
             what="GMV counted")
    after = kpis(shop, span)
    assert after["orders"] - before["orders"] == 1
    assert analytics_order(suite, order["id"]).get("paid_total") == 10500
    top = shop.analytics.top_products(limit=500, **span)
    row = next(r for r in (top["items"] if isinstance(top, dict) else top) if r["product_id"] == product)
    assert (row["units"], row["revenue"]) == (2, 9500)  # line totals: shipping is not a product's
    # the notifications were sent once however often the events were delivered
    keys = [m["dedupe_key"] for m in shop.marketing.list_messages(member_id=member["id"])]
    assert len(keys) == len(set(keys))


def test_out_of_stock_is_rejected(suite, shop):
    product = new_product(shop, price=2000, stock=1)
    member = new_member(shop)

    order = place(shop, member["id"], [(product, 2)])
    rejected = wait_status(shop, order["id"], "rejected")
    assert "paid" not in {h["status"] for h in rejected["history"]}
    assert stock(shop, product) == (1, 0, 1)
    with pytest.raises(NotFound):
        shop.fulfillment.get_shipment_for_order(order["id"])
    assert shop.catalog.get_reservation(order["id"])["state"] == "failed"


def test_declined_payment_releases_stock_and_coupon(suite, shop):
    product = new_product(shop, price=3000, stock=5)
    member = new_member(shop)
    other = new_member(shop)
    code = coupon(shop, max_redemptions=1, per_member_limit=1)
    assert shop.marketing.validate_coupon(code, member["id"], 6000)["valid"] is True

    order = place(shop, member["id"], [(product, 2)], token="tok_decline_insufficient_funds",
                  coupon_code=code)
    assert order["discount"] == 500
    # while the order holds it, the single-use coupon is taken
    assert shop.marketing.validate_coupon(code, other["id"], 6000)["valid"] is False

    cancelled = wait_status(shop, order["id"], "cancelled")
    statuses = [h["status"] for h in cancelled["history"]]
    assert "paid" not in statuses
    assert statuses.index("payment_failed") < statuses.index("cancelled")

    wait_for(lambda: stock(shop, product) == (5, 0, 5), timeout=TIMEOUT, what="stock released")
    wait_for(lambda: shop.marketing.validate_coupon(code, other["id"], 6000)["valid"],
             timeout=TIMEOUT, what="coupon released")
    assert shop.marketing.validate_coupon(code, member["id"], 6000)["valid"] is True
    assert shop.marketing.get_coupon(code)["used"] == 0
    assert shop.catalog.get_reservation(order["id"])["state"] == "released"


def test_cancellation_after_payment_refunds_and_nets_gmv_to_zero(suite, shop):
    span = window()
    initial = kpis(shop, span)
    product = new_product(shop, price=4500, stock=5)
    member = new_member(shop)
    code = coupon(shop, amount=500)

    order = place(shop, member["id"], [(product, 1)], coupon_code=code)
    assert order["total"] == 5000  # 4500 − 500 + 1000 shipping
    wait_status(shop, order["id"], "paid", "fulfilling")
    wait_for(lambda: analytics_order(suite, order["id"]).get("paid_total") == 5000,
             timeout=TIMEOUT, what="payment counted by analytics")
    before = kpis(shop, span)

    shop.order.cancel_order(order["id"], "member")
    wait_for(lambda: any(r["state"] == "succeeded" and r["amount"] == 5000
                         for r in shop.order.get_order(order["id"])["refunds"]),
             timeout=TIMEOUT, what="refund succeeded")
    assert shop.order.get_order(order["id"])["status"] == "cancelled"

    wait_for(lambda: analytics_order(suite, order["id"]).get("refunded") == 5000,
             timeout=TIMEOUT, what="refund counted by analytics")
    summary = analytics_order(suite, order["id"])
    assert summary["paid_total"] - summary["refunded"] == 0
    # in the window: the payment was already in `before`; its refund takes the 5000 back out
    after = wait_for(lambda: (lambda k: k if k["cancelled_after_payment"]
                              - before["cancelled_after_payment"] == 1 else None)(kpis(shop, span)),
                     timeout=TIMEOUT, what="cancellation counted by analytics")
    assert after["gmv"] - before["gmv"] == -5000
    assert after["refunded"] - before["refunded"] == 5000
    assert after["orders"] == before["orders"] == initial["orders"] + 1
    # over the whole story the order nets to zero GMV: paid 5000, refunded 5000
    assert after["gmv"] - initial["gmv"] == 0
    assert (after["gross_paid"] - initial["gross_paid"], after["refunded"] - initial["refunded"]) \
        == (5000, 5000)

    # the coupon went back (a cancellation after payment releases it too)
    wait_for(lambda: shop.marketing.get_coupon(code)["used"] == 0, timeout=TIMEOUT,
             what="coupon released")
    assert shop.marketing.validate_coupon(code, member["id"], 4500)["valid"] is True
    # the reservation went back, the shipment was cancelled before dispatch
    wait_for(lambda: stock(shop, product) == (5, 0, 5), timeout=TIMEOUT, what="stock released")
    wait_for(lambda: shipment_of(shop, order["id"])["status"] == "cancelled", timeout=TIMEOUT,
             what="shipment cancelled")


def test_partial_then_full_return_reverses_points_and_restocks(suite, shop):
    tea = new_product(shop, price=3000, stock=10)
    pot = new_product(shop, price=4000, stock=10, category="teaware")
    member = new_member(shop)

    order = place(shop, member["id"], [(tea, 2), (pot, 1)])
    assert order["total"] == 10000
    complete(shop, order["id"])
    wait_for(lambda: points(shop, member["id"]) == 100, timeout=TIMEOUT, what="points earned")
    wait_for(lambda: stock(shop, tea)[0] == 8 and stock(shop, pot)[0] == 9, timeout=TIMEOUT,
             what="dispatch committed")

    # partial: one tea back, resellable
    first = shop.order.request_return(order["id"], [{"product_id": tea, "quantity": 1}], "changed_mind")
    assert first["status"] == "requested"
    received = wait_for(lambda: _try_receive(shop, first["id"], None), timeout=TIMEOUT,
                        what="return expected by fulfillment")
    assert received["status"] == "received"
    partial = wait_status(shop, order["id"], "partially_refunded")
    assert sum(r["amount"] for r in partial["refunds"] if r["state"] == "succeeded") == 3000
    wait_for(lambda: points(shop, member["id"]) == 70, timeout=TIMEOUT, what="30 points reversed")
    wait_for(lambda: stock(shop, tea) == (9, 0, 9), timeout=TIMEOUT, what="tea restocked")

    # the rest: the other tea resellable, the pot damaged (not restocked)
    second = shop.order.request_return(order["id"], [{"product_id": tea, "quantity": 1},
                                                     {"product_id": pot, "quantity": 1}], "broken")
    wait_for(lambda: _try_receive(shop, second["id"], [
        {"product_id": tea, "quantity": 1, "condition": "resellable"},
        {"product_id": pot, "quantity": 1, "condition": "damaged"}]), timeout=TIMEOUT,
        what="second return expected by fulfillment")
    refunded = wait_status(shop, order["id"], "refunded")
    assert sum(r["amount"] for r in refunded["refunds"] if r["state"] == "succeeded") == 10000
    wait_for(lambda: points(shop, member["id"]) == 0, timeout=TIMEOUT, what="all points reversed")
    wait_for(lambda: stock(shop, tea) == (10, 0, 10), timeout=TIMEOUT, what="tea restocked again")
    assert stock(shop, pot) == (9, 0, 9)
    wait_for(lambda: analytics_order(suite, order["id"]).get("refunded") == 10000, timeout=TIMEOUT,
             what="both refunds counted by analytics")
    statuses = [h["status"] for h in refunded["history"]]
    assert statuses.index("partially_refunded") < statuses.index("refunded")


def _try_receive(shop, return_id: str, lines):
    try:
        return shop.fulfillment.receive_return(return_id, lines)
    except NotFound:
        return None


def test_campaign_to_segment_respects_consent(suite, shop):
    opted_in = new_member(shop, consent={"email": True})
    silent = new_member(shop, consent={})
    sms_only = new_member(shop, consent={"sms": True})
    withdrew = new_member(shop, consent={"email": True})
    shop.member.update_consent(withdrew["id"], "email", False)
    ours = {m["id"] for m in (opted_in, silent, sms_only, withdrew)}

    # every one of them is in the `new` segment at member
    def segment_members():
        ids, page = set(), 1
        while True:
            result = shop.member.list_segment("new", page=page, page_size=1000)
            ids |= {item["member_id"] for item in result["items"]}
            if page * result["page_size"] >= result["total"]:
                return ids
            page += 1
    assert ours <= segment_members()

    # marketing learns consent from member's events
    consents = suite.db("marketing").members

    def known():
        docs = {d["_id"]: d for d in consents.find({"_id": {"$in": list(ours)}})}
        granted = (docs.get(opted_in["id"], {}).get("consents") or {}).get("email") or {}
        revoked = (docs.get(withdrew["id"], {}).get("consents") or {}).get("email") or {}
        sms = (docs.get(sms_only["id"], {}).get("consents") or {}).get("sms") or {}
        return granted.get("granted") is True and revoked.get("granted") is False \
            and sms.get("granted") is True
    wait_for(known, timeout=TIMEOUT, what="consent known by marketing")

    campaign = shop.marketing.create_campaign({
        "name": f"E2E spring {tag()}", "segment": "new", "channel": "email",
        "template": {"subject": "Spring tea", "body": "Hello {member_id}"}})
    shop.marketing.launch_campaign(campaign["id"])

    def sent():
        messages = shop.marketing.list_messages(campaign_id=campaign["id"])
        return {m["member_id"] for m in messages} if messages else None
    recipients = wait_for(sent, timeout=TIMEOUT, what="campaign messages")
    got = recipients & ours
    assert got == {opted_in["id"]}
    wait_for(lambda: shop.marketing.get_campaign(campaign["id"])["status"] == "completed",
             timeout=TIMEOUT, what="campaign completed")
    # launching again sends nothing more
    shop.marketing.launch_campaign(campaign["id"])
    assert len(shop.marketing.list_messages(campaign_id=campaign["id"])) == len(recipients)
    assert all(m["channel"] == "email" and m["kind"] == "marketing"
               for m in shop.marketing.list_messages(campaign_id=campaign["id"]))


def test_experiment_results_after_exposures_and_conversions(suite, shop):
    key = f"e2e-checkout-{tag()}"
    shop.marketing.create_experiment({"key": key, "control": "control",
                                      "variants": [{"name": "control", "weight": 1},
                                                   {"name": "one_click", "weight": 1}]})
    product = new_product(shop, price=10000, stock=100)
    subjects = [new_member(shop)["id"] for _ in range(10)]
    assigned = {s: shop.marketing.assign_variant(key, s) for s in subjects}
    assert all(a["exposed"] for a in assigned.values())
    # a second assignment is stable and exposes no more
    again = shop.marketing.assign_variant(key, subjects[0])
    assert again["variant"] == assigned[subjects[0]]["variant"] and again["exposed"] is False

    by_variant: dict[str, list[str]] = {"control": [], "one_click": []}
    for subject, a in assigned.items():
        by_variant[a["variant"]].append(subject)
    # the first two subjects of each variant buy (the second of them with a declined card)
    buyers = {v: members[:1] for v, members in by_variant.items()}
    decliners = {v: members[1:2] for v, members in by_variant.items()}
    orders = [place(shop, m, [(product, 1)])["id"] for ms in buyers.values() for m in ms]
    declined = [place(shop, m, [(product, 1)], token="tok_decline_e2e")["id"]
                for ms in decliners.values() for m in ms]
    for order_id in orders:
        wait_status(shop, order_id, "paid", "fulfilling")
    for order_id in declined:
        wait_status(shop, order_id, "cancelled")

    expected = {v: (len(members), len(buyers[v])) for v, members in by_variant.items() if members}

    def results():
        try:
            result = shop.analytics.experiment_results(key)
        except NotFound:
            return None
        got = {r["variant"]: (r["exposures"], r["conversions"]) for r in result["variants"]
               if r["exposures"]}
        return result if got == expected else None
    result = wait_for(results, timeout=TIMEOUT, what=f"experiment results {expected}")
    assert result["control"] == "control"
    for row in result["variants"]:
        if row["variant"] in expected:
            exposures, conversions = expected[row["variant"]]
            assert row["rate"] == pytest.approx(conversions / exposures, abs=1e-6)
    # declined payments converted nobody
    assert sum(r["conversions"] for r in result["variants"]) == len(orders)


def test_member_erasure_leaves_no_personal_data_anywhere(suite, shop):
    t = tag()
    name = f"Erin Erasable {t}"
    email = f"erin.erasable.{t}@example.com"
    phone = f"+86 139 {t[:4].translate(str.maketrans('abcdef', '123456'))} 7788"
    line1 = f"{t} Forget-Me Road 42"
    city = f"Lethe{t}"
    postal = f"PC-{t}"
    product = new_product(shop, price=12000, stock=5)
    member = new_member(shop, consent={"email": True, "sms": True}, name=name, email=email,
                        phone=phone, birth_year=1990, gender="female", interests=["tea"])

    order = place(shop, member["id"], [(product, 1)], shipping_address={
        "name": name, "line1": line1, "city": city, "region": "Shanghai", "postal_code": postal,
        "phone": phone, "country": "CN"})
    complete(shop, order["id"])
    wait_for(lambda: points(shop, member["id"]) > 0, timeout=TIMEOUT, what="points earned")
    # free text that names the member, in a ticket and a review
    ticket = shop.fulfillment.open_ticket(member["id"], order["id"], "damaged_item",
                                          f"I am {name}, call me on {phone} at {line1}")
    shop.fulfillment.reply_ticket(ticket["id"], f"Dear {name}, we are on it")
    shop.catalog.add_review(product, member["id"], 4, f"Lovely tea - {name}, {city}")
    # a return and a cancellation whose free-text reasons name the member
    returned = shop.order.request_return(order["id"], [{"product_id": product, "quantity": 1}],
                                         f"{name} ordered twice, keep one at {line1}")
    wait_for(lambda: _try_receive(shop, returned["id"], None), timeout=TIMEOUT,
             what="return expected by fulfillment")
    wait_status(shop, order["id"], "refunded")
    second = place(shop, member["id"], [(product, 1)], shipping_address={
        "name": name, "line1": line1, "city": city, "region": "Shanghai", "postal_code": postal,
        "phone": phone, "country": "CN"})
    wait_status(shop, second["id"], "paid", "fulfilling")
    shop.order.cancel_order(second["id"], f"{name} moved, call {phone}")
    wait_status(shop, second["id"], "cancelled")
    # tracking: a session of the member whose landing path and referrer carry the e-mail
    session_id = f"ses_e2e{t}"
    shop.analytics.track([
        {"event_type": "session_started", "session_id": session_id, "member_id": member["id"],
         "occurred_at": to_iso(utcnow()), "landing_path": f"/welcome?email={email}",
         "referrer": f"https://mail.example.com/inbox/{email}", "device": "mobile"},
        {"event_type": "page_viewed", "session_id": session_id, "member_id": member["id"],
         "occurred_at": to_iso(utcnow()), "path": f"/account/{email}", "referrer": "/"}])
    # the transactional notifications reached the member too
    wait_for(lambda: f"order_delivered:{order['id']}" in notification_keys(shop, member["id"]),
             timeout=TIMEOUT, what="notifications")
    wait_for(lambda: analytics_order(suite, order["id"]).get("refunded") == 12000, timeout=TIMEOUT,
             what="analytics saw the payment and the refund")

    needles = [email, name, phone, line1, city, postal]
    before = _personal_data(suite, needles)
    holders = {key.split("_", 1)[1].split(".")[0] for key in before}
    # the scan sees the data where it lives before the erasure (marketing never holds any)
    assert {"member", "order", "fulfillment", "catalog", "analytics"} <= holders, before

    erased = shop.member.erase_member(member["id"])
    assert erased["erased"] is True
    leftover = {}

    def clean():
        leftover.clear()
        leftover.update(_personal_data(suite, needles))
        return not leftover
    try:
        wait_for(clean, timeout=TIMEOUT, interval=0.5, what="personal data erased")
    except pytest.fail.Exception:
        pytest.fail(f"personal data left after erasure: {json.dumps(leftover)[:4000]}")

    # the anonymous facts stay for accounting
    assert shop.member.get_member(member["id"])["erased"] is True
    assert shop.order.get_order(order["id"])["total"] == 12000
    assert analytics_order(suite, order["id"]).get("paid_total") == 12000
    assert analytics_order(suite, order["id"]).get("refunded") == 12000


def _personal_data(suite, needles: list[str]) -> dict:
    """Every (database.collection: [ids]) whose documents contain any of `needles`."""
    lowered = [n.lower() for n in needles]
    hits: dict[str, list] = {}
    for service in suite.containers:
        db = suite.db(service)
        for collection in db.list_collection_names():
            for doc in db[collection].find():
                text = json.dumps(doc, default=str, ensure_ascii=False).lower()
                found = [n for n in lowered if n in text]
                if found:
                    hits.setdefault(f"{db.name}.{collection}", []).append(
                        {"_id": str(doc.get("_id")), "found": found})
    return hits

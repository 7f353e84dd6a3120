"""A scripted event history (with duplicates, out-of-order delivery, refunds and a
cancellation after payment) and an oracle computing every KPI straight from it,
independently of the service's aggregates."""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

from tests.analytics.conftest import envelope

T0 = datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai


def at(hours: float):
    return T0 + timedelta(hours=hours)


def line(product, category, qty, unit):
    return {"product_id": product, "category": category, "quantity": qty, "unit_price": unit,
            "discount": 0, "line_total": qty * unit}


def build(seed: int = 7):
    """(broker envelopes, tracking events, ids) — every broker envelope unique."""
    broker, track = [], []

    def ev(source, event_type, data, hours):
        broker.append(envelope(source, event_type, data, at(hours)))

    def tr(event_type, session, hours, member=None, **extra):
        track.append({"event_type": event_type, "event_id": f"trk-{len(track)}-{seed}",
                      "session_id": session, "member_id": member,
                      "occurred_at": at(hours).strftime("%Y-%m-%dT%H:%M:%SZ"), **extra})

    addr = {"region": "Shanghai", "name": "Li Wei", "line1": "88 Century Ave", "phone": "+86138"}
    for i, m in enumerate(["m1", "m2", "m3", "m4"]):
        ev("member", "member_registered", {"member_id": m, "region": "Shanghai", "gender": "female",
                                           "birth_year": 1990, "interests": [], "tier": "bronze"}, i * 0.1)
    for p, cat, price in [("p1", "apparel", 10000), ("p2", "beauty", 15000), ("p3", "home", 8000),
                          ("p4", "home", 5000)]:
        ev("catalog", "product_created", {"product_id": p, "sku": p.upper(), "title": f"Product {p}",
                                          "category": cat, "price": price, "currency": "CNY",
                                          "merchant_id": None, "status": "published"}, 0)
    ev("catalog", "stock_ran_low", {"product_id": "p1", "available": 3, "threshold": 5}, 40)
    ev("catalog", "stock_adjusted", {"product_id": "p2", "delta": 10, "reason": "po", "on_hand": 50,
                                     "available": 48}, 1)
    ev("marketing", "campaign_launched", {"campaign_id": "c1", "channel": "email", "segment": "all",
                                          "audience_size": 100}, 0.5)
    ev("marketing", "campaign_launched", {"campaign_id": "c2", "channel": "sms", "segment": "at_risk",
                                          "audience_size": 50}, 0.5)
    ev("marketing", "ad_spend_recorded", {"channel": "douyin", "campaign_id": "c1", "amount": 20000,
                                          "currency": "CNY", "date": "2026-11-21"}, 1)
    ev("marketing", "message_sent", {"message_id": "msg1", "campaign_id": "c1", "member_id": "m1",
                                     "channel": "email", "kind": "marketing", "cost": 3}, 0.6)
    ev("marketing", "message_sent", {"message_id": "msg2", "campaign_id": "c2", "member_id": "m2",
                                     "channel": "sms", "kind": "marketing", "cost": 5}, 2)
    ev("marketing", "experiment_created", {"experiment_key": "exp1", "control": "control",
                                           "variants": [{"name": "control", "weight": 0.5},
                                                        {"name": "orange", "weight": 0.5}]}, 0)
    for subject, variant, hours in [("m1", "orange", 1), ("m2", "control", 1), ("m3", "orange", 1),
                                    ("m4", "control", 1), ("m1", "orange", 5)]:
        ev("marketing", "experiment_exposed", {"experiment_key": "exp1", "variant": variant,
                                               "subject_id": subject}, hours)
    # sessions
    tr("session_started", "s1", 1, "m1", campaign_id="c1", referrer="https://x.example/?mail=a@b")
    tr("page_viewed", "s1", 1.1, "m1", path="/home")
    tr("product_viewed", "s1", 1.2, "m1", product_id="p1")
    tr("cart_updated", "s1", 1.3, "m1", product_id="p1", quantity=2)
    tr("checkout_started", "s1", 1.4, "m1", cart_value=30000, currency="CNY", item_count=3)
    tr("session_started", "s2", 3)
    tr("page_viewed", "s2", 3.1, path="/")
    tr("cart_updated", "s2", 3.2, product_id="p3", quantity=0)
    tr("session_started", "s3", 4, "m2")
    tr("product_viewed", "s3", 4.2, "m2", product_id="p2")
    tr("session_started", "s4", 5, "m3")
    tr("product_viewed", "s4", 5.1, "m3", product_id="p3")
    tr("cart_updated", "s4", 5.2, "m3", product_id="p3", quantity=1)
    tr("session_started", "s5", 30, "m1")
    tr("page_viewed", "s5", 30.1, "m1", path="/p3")
    tr("session_started", "s6", 31)
    # o1: m1 via s1 and c1, paid, delivered, one unit of p1 returned
    o1 = [line("p1", "apparel", 2, 10000), line("p2", "beauty", 1, 10000)]
    ev("order", "order_placed", _placed("o1", "m1", o1, "s1", "c1"), 1.5)
    ev("order", "order_confirmed", {"order_id": "o1"}, 1.55)
    ev("order", "order_paid", _paid("o1", "m1", o1, addr), 1.6)
    ev("order", "order_shipped", {"order_id": "o1"}, 10)
    ev("fulfillment", "shipment_delivered", {"shipment_id": "sh1", "order_id": "o1"}, 25.6)
    ev("order", "order_delivered", {"order_id": "o1"}, 25.7)
    ev("order", "return_requested", {"return_id": "r1", "order_id": "o1", "member_id": "m1",
                                     "lines": [{"product_id": "p1", "quantity": 1}], "reason": "size"}, 40)
    ev("fulfillment", "return_received", {"return_id": "r1", "order_id": "o1", "lines": [
        {"product_id": "p1", "quantity": 1, "condition": "resellable"}]}, 44)
    ev("order", "order_refunded", {"refund_id": "rf1", "order_id": "o1", "member_id": "m1",
                                   "return_id": "r1", "amount": 10000, "currency": "CNY",
                                   "reason": "return", "lines": [{"product_id": "p1", "quantity": 1,
                                                                  "amount": 10000}]}, 45)
    # o2: m2, no session (falls back to s3), attributed to c2 by message; cancelled after payment
    o2 = [line("p2", "beauty", 1, 15000)]
    ev("order", "order_placed", _placed("o2", "m2", o2, None, None), 4.5)
    ev("order", "order_paid", _paid("o2", "m2", o2, addr), 4.6)
    ev("order", "order_cancelled", {"order_id": "o2", "member_id": "m2", "reason": "member",
                                    "was_paid": True}, 6)
    ev("order", "order_refunded", {"refund_id": "rf2", "order_id": "o2", "member_id": "m2",
                                   "return_id": None, "amount": 15000, "currency": "CNY",
                                   "reason": "cancelled", "lines": [{"product_id": "p2", "quantity": 1,
                                                                     "amount": 15000}]}, 6.5)
    # o3: m1 again (repurchase) via s5, delivered
    o3 = [line("p3", "home", 1, 8000)]
    ev("order", "order_placed", _placed("o3", "m1", o3, "s5", None), 30.5)
    ev("order", "order_paid", _paid("o3", "m1", o3, addr), 30.6)
    ev("fulfillment", "shipment_delivered", {"shipment_id": "sh3", "order_id": "o3"}, 50.6)
    # o4: m3 via s4, payment failed and cancelled: placed (converts), never paid
    o4 = [line("p3", "home", 1, 8000)]
    ev("order", "order_placed", _placed("o4", "m3", o4, "s4", None), 5.5)
    ev("order", "payment_failed", {"order_id": "o4", "reason": "card_declined"}, 5.6)
    ev("order", "order_cancelled", {"order_id": "o4", "member_id": "m3", "reason": "payment_failed",
                                    "was_paid": False}, 5.7)
    # a support ticket
    for t, hours in [("ticket_opened", 20), ("ticket_replied", 20.5), ("ticket_replied", 21),
                     ("ticket_resolved", 22)]:
        ev("fulfillment", t, {"ticket_id": "t1", "member_id": "m1", "order_id": "o1",
                              "category": "late"}, hours)
    return broker, track


def _placed(order_id, member, lines, session, campaign):
    total = sum(x["line_total"] for x in lines)
    return {"order_id": order_id, "member_id": member, "lines": lines, "subtotal": total,
            "discount": 0, "shipping_fee": 0, "total": total, "currency": "CNY", "coupon_code": None,
            "promotion_ids": [], "attribution": {"session_id": session, "campaign_id": campaign,
                                                 "referral_code": None}}


def _paid(order_id, member, lines, addr):
    return {"order_id": order_id, "member_id": member, "lines": lines,
            "total": sum(x["line_total"] for x in lines), "currency": "CNY",
            "shipping_address": addr, "payment_ref": f"pay_{order_id}"}


def delivery_order(broker, track, seed=7):
    """The order the test sends things in: shuffled, with every 3rd event twice."""
    rnd = random.Random(seed)
    broker = list(broker) + [e for i, e in enumerate(broker) if i % 3 == 0]
    track = list(track) + [t for i, t in enumerate(track) if i % 4 == 0]
    rnd.shuffle(broker)
    rnd.shuffle(track)
    return broker, track


# --- the oracle --------------------------------------------------------------------------

def _t(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def oracle(broker, track, start, end):
    """Every KPI by its DESIGN.md definition, straight from the (deduplicated) events."""
    def inr(moment):
        return start <= moment < end

    evs = [(e["event_type"], e["data"], _t(e["occurred_at"])) for e in broker]
    trk = [(t["event_type"], t, _t(t["occurred_at"])) for t in track]
    sessions_in = {d["session_id"] for _, d, m in trk if inr(m)}
    session_start, session_member = {}, {}
    for _, d, m in trk:
        session_start[d["session_id"]] = min(m, session_start.get(d["session_id"], m))
        if d.get("member_id"):
            session_member[d["session_id"]] = d["member_id"]
    converted = set()
    for et, d, m in evs:
        if et != "order_placed":
            continue
        sid = d["attribution"]["session_id"]
        if sid is None:
            mine = [s for s, mem in session_member.items() if mem == d["member_id"]
                    and session_start[s] <= m]
            sid = max(mine, key=lambda s: session_start[s]) if mine else None
        if sid:
            converted.add(sid)

    def reached(step):
        return {d["session_id"] for et, d, _ in trk if et == step
                and not (et == "cart_updated" and d.get("quantity") == 0)} & sessions_in

    paid = [(d, m) for et, d, m in evs if et == "order_paid"]
    paid_in = [(d, m) for d, m in paid if inr(m)]
    gross = sum(d["total"] for d, _ in paid_in)
    refunded = sum(d["amount"] for et, d, m in evs if et == "order_refunded" and inr(m))
    orders = len(paid_in)
    gmv = gross - refunded
    buyers = {d["member_id"] for d, _ in paid_in}
    paid_count = {}
    for d, _ in paid:
        paid_count[d["member_id"]] = paid_count.get(d["member_id"], 0) + 1
    repeat = {b for b in buyers if paid_count[b] >= 2}
    active = ({d["member_id"] for _, d, m in trk if inr(m) and d.get("member_id")}
              | {d["member_id"] for et, d, m in evs if et == "order_placed" and inr(m)})
    paid_at = {d["order_id"]: m for d, m in paid}
    delivered = {}
    for et, d, m in evs:
        if et in ("order_delivered", "shipment_delivered"):
            delivered[d["order_id"]] = min(m, delivered.get(d["order_id"], m))
    lead = sorted((delivered[o] - paid_at[o]).total_seconds() for o in delivered
                  if inr(delivered[o]) and o in paid_at)
    tickets = {}
    for et, d, m in evs:
        if et.startswith("ticket_"):
            tickets.setdefault(d["ticket_id"], {}).setdefault(et, m)
            tickets[d["ticket_id"]][et] = min(m, tickets[d["ticket_id"]][et])
    first = sorted((t["ticket_replied"] - t["ticket_opened"]).total_seconds()
                   for t in tickets.values() if inr(t["ticket_opened"]) and "ticket_replied" in t)
    resolved = sorted((t["ticket_resolved"] - t["ticket_opened"]).total_seconds()
                      for t in tickets.values() if inr(t["ticket_opened"]) and "ticket_resolved" in t)

    def pct(values, p):
        if not values:
            return None
        import math
        return values[max(1, math.ceil(p / 100 * len(values))) - 1]

    def ratio(a, b):
        return round(a / b, 6) if b else 0.0

    conv = converted & sessions_in
    return {
        "sessions": len(sessions_in),
        "page_views": sum(1 for et, _, m in trk if et in ("page_viewed", "product_viewed") and inr(m)),
        "orders": orders, "gross_paid": gross, "refunded": refunded, "gmv": gmv,
        "aov": int((Decimal(gmv) / Decimal(orders)).quantize(Decimal(1), ROUND_HALF_UP)) if orders else 0,
        "conversion_rate": ratio(len(conv), len(sessions_in)),
        "funnel_counts": [len(sessions_in), len(reached("product_viewed")), len(reached("cart_updated")),
                          len(reached("checkout_started")), len(conv)],
        "repurchase_rate": ratio(len(repeat), len(buyers)),
        "refund_rate": ratio(refunded, gross),
        "new_members": sum(1 for et, _, m in evs if et == "member_registered" and inr(m)),
        "active_members": len(active),
        "lead": {"count": len(lead), "p50": pct(lead, 50), "p90": pct(lead, 90)},
        "first": {"count": len(first), "p50": pct(first, 50), "p90": pct(first, 90)},
        "resolved": {"count": len(resolved), "p50": pct(resolved, 50), "p90": pct(resolved, 90)},
    }


def served(kpis):
    """The service's answer in the oracle's shape."""
    keys = ["sessions", "page_views", "orders", "gross_paid", "refunded", "gmv", "aov",
            "conversion_rate", "repurchase_rate", "refund_rate", "new_members", "active_members"]
    out = {k: kpis[k] for k in keys}
    out["funnel_counts"] = [s["sessions"] for s in kpis["funnel"]["steps"]]
    out["lead"] = kpis["fulfillment_lead_time_seconds"]
    out["first"] = kpis["ticket_first_response_seconds"]
    out["resolved"] = kpis["ticket_resolution_seconds"]
    return out

"""Reconciliation: every service's state against the client's ledger.

Each accepted order is classified from the ledger's point of view:
- completed: it ended as promised and every effect downstream is there once;
- lost: missing, stuck, ended otherwise than promised (a fault cancelled a paid
  order), or an effect is missing (no shipment, no points, not in analytics,
  refund short);
- duplicated: an effect was applied twice (two orders for one key, two shipments,
  points earned twice or reversed too far, counted twice by analytics, refunded
  more than the returned lines, a milestone event emitted twice).
Totals that are not per order (stock per product, coupon uses, KPI deltas, dead
letters, a service that died) are problems of their own. Any problem fails the
test, and the report names every one."""
from __future__ import annotations

import dataclasses
import re
from collections import Counter, defaultdict

from tests.chaos.ledger import PAID, PAID_STATUSES, Ledger
from tests.support.suite import SERVICES

TERMINAL = {"completed", "cancelled", "rejected", "partially_refunded", "refunded"}
REPORTS: list[Report] = []  # every report of the session, for the summary table


def log(message: str) -> None:
    import time

    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclasses.dataclass
class Report:
    name: str
    accepted: int
    completed: int
    lost: int
    duplicated: int
    cancelled: int = 0
    rejected: int = 0
    refused: int = 0
    suppressed: int = 0
    dead_lettered: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)

    COLUMNS = ("accepted", "completed", "cancelled", "rejected", "lost", "duplicated", "refused",
               "suppressed", "dead_lettered")

    @staticmethod
    def table(reports: list[Report]) -> str:
        width = max([len("test"), *(len(r.name) for r in reports)])
        head = f"{'test':<{width}} " + " ".join(f"{c:>10}" for c in Report.COLUMNS)
        rows = [f"{r.name:<{width}} " + " ".join(f"{getattr(r, c):>10}" for c in Report.COLUMNS)
                for r in reports]
        return "\n".join([head, "-" * len(head), *rows])

    @staticmethod
    def total(name: str, reports: list[Report]) -> Report:
        """One row adding up several reports (the rounds of a soak)."""
        return Report(name, **{c: sum(getattr(r, c) for r in reports)
                               for c in Report.COLUMNS},
                      problems=[p for r in reports for p in r.problems])


def write_summary(terminalreporter) -> None:
    """The session's table of reconciliations (once, whichever conftest asks first)."""
    if REPORTS and not getattr(write_summary, "done", False):
        write_summary.done = True
        terminalreporter.section("crash-test ledger: accepted, completed, lost, duplicated")
        terminalreporter.write_line(Report.table(REPORTS))


def kpis(shop) -> dict:
    rpc = shop.rpc(timeout=15)
    try:
        return rpc.call("analytics", "get_kpis", attempts=5)
    finally:
        rpc.close()


def orders_of(shop, world) -> list[dict]:
    return list(shop.db("order").orders.find({"member_id": {"$in": world.members}}))


def reconcile(shop, world, stream, kpis_before: dict | None = None, name: str = "") -> Report:
    """Check every invariant against the ledger; return the report or raise
    AssertionError naming every problem (the report table is printed either way)."""
    ledger: Ledger = stream.ledger
    problems: list[str] = list(ledger.conflicts)
    lost: set[str] = set()
    doubled: set[str] = set()
    orders = {o["_id"]: o for o in orders_of(shop, world)}
    ids = list(set(orders) | set(ledger.promises))

    def lose(order_id, why):
        lost.add(order_id)
        problems.append(f"lost {order_id}: {why}")

    def double(order_id, why):
        doubled.add(order_id)
        problems.append(f"duplicated {order_id}: {why}")

    # 1. outcomes: each accepted order ended as the ledger allows; nothing else appeared
    statuses = {oid: o["status"] for oid, o in orders.items()}
    resolved = ledger.resolve(statuses)
    for oid, promise in ledger.promises.items():
        if oid not in orders:
            lose(oid, "accepted, not in the order database")
        elif resolved[oid] is None:
            allowed = sorted(promise.final_status(o) for o in promise.outcomes)
            lose(oid, f"ended {statuses[oid]}, the ledger allows {allowed}")
    refused_keys = {plan["key"] for plan, _ in stream.failed}
    for oid, order in orders.items():
        if oid in ledger:
            continue
        if order.get("idempotency_key") in refused_keys:
            problems.append(f"order {oid} exists for key {order.get('idempotency_key')}, which the "
                            "client was told failed")
        else:
            problems.append(f"order {oid} ({order['status']}) is not in the ledger")
    per_key = Counter(o.get("idempotency_key") for o in orders.values())
    for key, n in per_key.items():
        if n > 1:
            double(ledger.by_key.get(key, key), f"idempotency key {key} made {n} orders")
    # the outcome the downstream checks expect: what the order reports when the ledger
    # allows it, else what the client was promised
    outcome = {oid: resolved[oid] or p.must for oid, p in ledger.promises.items()}
    paid = {oid: p for oid, p in ledger.promises.items() if outcome[oid] == PAID}

    # 2. shipments: one per paid order, delivered, with the promised lines; none otherwise
    shipments = defaultdict(list)
    for shipment in shop.db("fulfillment").shipments.find({"order_id": {"$in": ids}}):
        shipments[shipment["order_id"]].append(shipment)
    for oid, promise in ledger.promises.items():
        found = shipments.get(oid, [])
        live = [s for s in found if s["status"] in ("dispatched", "delivered", "created")]
        if oid in paid:
            if len(found) > 1:
                double(oid, f"{len(found)} shipments")
            if not any(s["status"] == "delivered" for s in found):
                lose(oid, f"paid, shipments {[s['status'] for s in found]} (none delivered)")
            else:
                shipped = Counter()
                for line in found[0]["lines"]:
                    shipped[line["product_id"]] += line["quantity"]
                wanted = Counter({line["product_id"]: line["quantity"] for line in promise.lines})
                if shipped != wanted:
                    lose(oid, f"shipped {dict(shipped)}, ordered {dict(wanted)}")
        elif live:
            double(oid, f"{outcome[oid]} order has shipments {[s['status'] for s in live]}")

    # 3. stock: initial − units of paid orders + resellable returns; nothing reserved at rest
    expected = dict(world.initial_stock())
    for promise in paid.values():
        for line in promise.lines:
            expected[line["product_id"]] -= line["quantity"]
        for product_id, units in promise.restocked().items():
            expected[product_id] += units
    for product_id, expect in expected.items():
        doc = shop.db("catalog").products.find_one({"_id": product_id}) or {}
        stock = doc.get("stock", {})
        levels = {k: stock.get(k) for k in ("on_hand", "reserved", "available")}
        if levels != {"on_hand": expect, "reserved": 0, "available": expect}:
            problems.append(f"stock of {product_id}: {levels}, the ledger expects "
                            f"on_hand=available={expect}, reserved=0")

    # 4. coupon: used = redeemed = paid orders that used it
    coupon = shop.db("marketing").coupons.find_one({"_id": world.coupon_code}) or {}
    with_coupon = sum(1 for p in paid.values() if p.coupon_code)
    if coupon.get("redeemed", 0) != with_coupon or coupon.get("used", 0) != with_coupon:
        problems.append(f"coupon {world.coupon_code}: used={coupon.get('used')} redeemed="
                        f"{coupon.get('redeemed')}, the ledger has {with_coupon} paid orders with it")

    # 5. refunds: the returned lines' paid amount, once; all paid back
    refunded: dict[str, int] = defaultdict(int)
    for refund in shop.db("order").refunds.find({"order_id": {"$in": ids}}):
        if refund.get("state") != "succeeded":
            problems.append(f"refund {refund['_id']} of {refund['order_id']} is {refund.get('state')}")
        refunded[refund["order_id"]] += refund["amount"]
    for oid, promise in ledger.promises.items():
        due = promise.refund() if oid in paid else 0
        got = refunded.get(oid, 0)
        if got > due:
            double(oid, f"refunded {got}, the returned lines paid {due}")
        elif got < due:
            lose(oid, f"refunded {got}, the returned lines paid {due}")

    # 6. points: one earn per paid order, reversed by member's rule on the ledger's refund
    member_db = shop.db("member")
    for member_id in world.members:
        member = member_db.members.find_one({"_id": member_id}) or {}
        entries = list(member_db.ledger.find({"member_id": member_id}))
        total = sum(e["points"] for e in entries)
        if member.get("points_balance") != total:
            problems.append(f"member {member_id}: balance {member.get('points_balance')} != "
                            f"points ledger {total}")
        earns = Counter(e.get("order_id") for e in entries if e["kind"] == "earn")
        earned = {e.get("order_id"): e["points"] for e in entries if e["kind"] == "earn"}
        reversed_ = Counter()
        for e in entries:
            if e["kind"] == "reverse":
                reversed_[e.get("order_id")] += -e["points"]
        for oid, promise in ledger.promises.items():
            if promise.member_id != member_id:
                continue
            if oid not in paid:
                if earns.get(oid):
                    double(oid, f"{outcome[oid]} order earned points")
                continue
            if earns.get(oid, 0) > 1:
                double(oid, f"earned points {earns[oid]} times")
            if not earns.get(oid) and promise.merchandise >= 100:
                lose(oid, "paid, earned no points")
            points, back, base = earned.get(oid, 0), promise.refund(), promise.merchandise
            want = points if back >= base else points * back // base
            got = reversed_.get(oid, 0)
            if got > want:
                double(oid, f"reversed {got} of {points} points, the rule gives {want}")
            elif got < want:
                lose(oid, f"reversed {got} of {points} points, the rule gives {want}")

    # 7. analytics: each paid order counted once with the promised total and refund
    summaries = {a["_id"]: a for a in shop.db("analytics").orders.find({"_id": {"$in": ids}})}
    for oid, promise in ledger.promises.items():
        summary = summaries.get(oid) or {}
        if oid in paid:
            if summary.get("paid_at") is None or summary.get("paid_total") != promise.total:
                lose(oid, f"analytics has paid_total={summary.get('paid_total')} paid_at="
                          f"{summary.get('paid_at')}, the ledger {promise.total}")
            if (summary.get("refunded") or 0) != promise.refund():
                problems.append(f"analytics: order {oid} refunded {summary.get('refunded')}, "
                                f"the ledger {promise.refund()}")
        elif summary.get("paid_at") is not None:
            double(oid, f"analytics counts the {outcome[oid]} order as paid")
    raw = shop.db("analytics").raw
    paid_events = Counter(r["data"]["order_id"] for r in raw.find(
        {"event_type": "order_paid", "data.order_id": {"$in": ids}}, {"data.order_id": 1}))
    for oid, n in paid_events.items():
        if n > 1:
            double(oid, f"analytics recorded {n} order_paid events")
    if kpis_before is not None:
        after = kpis(shop)
        gmv = sum(p.total - p.refund() for p in paid.values())
        if after["orders"] - kpis_before["orders"] != len(paid):
            problems.append(f"analytics orders grew by {after['orders'] - kpis_before['orders']}, "
                            f"the ledger has {len(paid)} paid orders")
        if after["gmv"] - kpis_before["gmv"] != gmv:
            problems.append(f"analytics GMV grew by {after['gmv'] - kpis_before['gmv']}, the ledger "
                            f"gives {gmv} (paid totals − refunds)")

    # 8. each milestone emitted once per order (an event emitted twice is a second effect
    #    for every consumer that does not deduplicate by aggregate)
    outbox = shop.db("order").outbox
    for event_type in ("order_placed", "order_paid", "order_completed"):
        counts = Counter(r["envelope"]["data"]["order_id"] for r in outbox.find(
            {"event_type": event_type, "envelope.data.order_id": {"$in": ids}}))
        for oid, n in counts.items():
            if n > 1:
                double(oid, f"order emitted {event_type} {n} times")

    # 9. no service process died on its own; no dead letters
    problems += [f"service {label} exited (code {code}): {tail}" for label, code, tail in shop.exited()]
    dlq = {k: v for k, v in shop.dlq_depths().items() if v}
    if dlq:
        from tools.admin import list_dead_letters

        for queue in dlq:
            service = queue.split("--", 1)[1].rsplit(".", 1)[0]
            for row in list_dead_letters(shop.infra.amqp_uri, service, limit=20):
                problems.append(f"dead-lettered in {service}: {row}")

    final = Counter(statuses.get(oid) for oid in ledger.promises)
    report = Report(
        name=name, accepted=len(ledger), completed=len([o for o in paid if o not in lost | doubled]),
        lost=len(lost), duplicated=len(doubled), cancelled=final.get("cancelled", 0),
        rejected=final.get("rejected", 0), refused=len(stream.failed),
        suppressed=sum(shop.duplicates().values()) - sum(stream.duplicates_at_start.values()),
        dead_lettered=sum(dlq.values()), problems=problems)
    REPORTS.append(report)
    print("\n" + Report.table([report]), flush=True)
    if stream.failed:
        log(f"{name}: {len(stream.failed)} orders refused: {[why for _, why in stream.failed][:5]}")
    if problems:
        suspects = sorted({oid for problem in problems for oid in re.findall(r"ord_[a-z0-9]+", problem)})
        for oid in suspects[:3]:
            log(f"{name}: trace of {oid}:\n{explain_order(shop, oid)}")
        for service in SERVICES:
            errors = [line for line in shop.logs(service).splitlines()
                      if '"error"' in line or "Traceback" in line or "failed" in line][-8:]
            if errors:
                log(f"{name}: last errors of {service}:\n  " + "\n  ".join(e[:400] for e in errors))
        raise AssertionError(f"{name}: reconciliation failed ({len(problems)} problems):\n  "
                             + "\n  ".join(problems[:60]))
    return report


def explain_order(shop, order_id: str) -> str:
    """Where each event of one order went: published?, seen by which consumer's inbox."""
    lines = []
    order = shop.db("order").orders.find_one({"_id": order_id}) or {}
    history = [h.get("status") for h in order.get("history", [])]
    lines.append(f"status={order.get('status')} history={history}")
    events = []
    for name in SERVICES:
        for row in shop.db(name).outbox.find({"envelope.data.order_id": order_id}).sort("created_at", 1):
            events.append((name, row))
    for source, row in events:
        event_id = row["_id"]
        seen = [c for c in SERVICES if shop.db(c).inbox.find_one({"event_id": event_id})]
        raw = bool(shop.db("analytics").raw.find_one({"_id": event_id}))
        lines.append(f"  {source}.{row['event_type']} {event_id} state={row.get('state')} "
                     f"pending={row.get('pending', False)} created={row.get('created_at')} "
                     f"published={row.get('published_at')} inboxes={seen} analytics_raw={raw}")
    return "\n".join(lines)


def snapshot(shop, world) -> dict:
    """The state the invariants look at, for 'nothing changed' comparisons."""
    orders = {o["_id"]: (o["status"], o["total"], o.get("version")) for o in orders_of(shop, world)}
    stock = {p["_id"]: p["stock"] for p in shop.db("catalog").products.find(
        {"_id": {"$in": world.product_ids}}, {"stock": 1})}
    coupon = shop.db("marketing").coupons.find_one({"_id": world.coupon_code}, {"used": 1, "redeemed": 1})
    points = {m["_id"]: m.get("points_balance") for m in shop.db("member").members.find(
        {"_id": {"$in": world.members}}, {"points_balance": 1})}
    ledger = shop.db("member").ledger.count_documents({"member_id": {"$in": world.members}})
    analytics = {a["_id"]: (a.get("paid_total"), a.get("refunded")) for a in shop.db("analytics").orders.find(
        {"_id": {"$in": list(orders)}})}
    shipments = {s["_id"]: s["status"] for s in shop.db("fulfillment").shipments.find(
        {"order_id": {"$in": list(orders)}})}
    messages = shop.db("marketing").messages.count_documents({"member_id": {"$in": world.members}})
    return {"orders": orders, "stock": stock, "coupon": coupon, "points": points, "ledger": ledger,
            "analytics": analytics, "shipments": shipments, "messages": messages}


__all__ = ["PAID_STATUSES", "REPORTS", "Report", "TERMINAL", "explain_order", "kpis", "orders_of",
           "reconcile", "snapshot", "write_summary"]

"""Read side: every KPI and report from the pre-aggregated data. A query reads
bucket documents of the range and per-entity summaries (sessions, members,
orders, tickets, exposures) of the range, never the raw events. Bucket documents
are sharded (store.py): every read sums all shards of a (bucket, dim, key), so its
cost grows with buckets x shards x keys, never with raw events."""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from html import escape
from pathlib import Path
from zoneinfo import ZoneInfo

from services.analytics import domain
from services.analytics.store import AGG
from shared.clock import to_iso
from shared.errors import NotFound


def _aware(moment):
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def bucket_filter(rng: domain.TimeRange, tz: ZoneInfo, dim: str) -> dict:
    cover = rng.covering(tz)
    parts = [{"grain": "hour", "start": {"$gte": a, "$lt": b}} for a, b in cover["hours"]]
    if cover["days"]:
        a, b = cover["days"]
        parts.append({"grain": "day", "start": {"$gte": a, "$lt": b}})
    return {"dim": dim, "$or": parts}


# Fields of a bucket document that are its key, not counters.
BUCKET_KEY_FIELDS = frozenset({"_id", "grain", "bucket", "start", "end", "dim", "key", "shard"})


def add_counters(target: dict, doc: dict) -> None:
    """Add the counters of bucket document `doc` (one shard) into `target`."""
    for name, value in doc.items():
        if name in BUCKET_KEY_FIELDS:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            target[name] += value
        elif isinstance(value, dict):
            for sub, v in value.items():
                target[f"{name}.{sub}"] += v


def sum_buckets(db, rng, tz, dim: str) -> dict[str, dict[str, int]]:
    """key -> summed counters over the range (every bucket, every shard)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for doc in db[AGG].find(bucket_filter(rng, tz, dim)):
        add_counters(out[doc["key"]], doc)
    return {k: dict(v) for k, v in out.items()}


def _in_range(field: str, rng: domain.TimeRange) -> dict:
    return {field: {"$elemMatch": {"$gte": rng.start, "$lt": rng.end}}}


def converted_sessions(db, rng) -> int:
    """Sessions seen in the range that led to a placed order: the order's
    attribution.session_id, else the member's latest session started before it."""
    seen = _in_range("hours", rng)
    return db.sessions.count_documents({**seen, "converted": True}) + len(fallback_conversions(db, rng))


def fallback_conversions(db, rng) -> set[str]:
    """Sessions seen in the range, not converted directly, that are their member's
    latest session started before an order placed without a session."""
    seen = _in_range("hours", rng)
    candidates = list(db.sessions.find({**seen, "converted": {"$ne": True},
                                        "member_id": {"$type": "string"}},
                                       {"member_id": 1, "first_seen": 1}))
    if not candidates:
        return set()
    by_member: dict[str, set[str]] = defaultdict(set)
    for s in candidates:
        by_member[s["member_id"]].add(s["_id"])
    earliest = min(_aware(s["first_seen"]) for s in candidates if s.get("first_seen"))
    fallback: set[str] = set()
    # One query for every candidate member's orders without a session, then the
    # latest session before each such order (few: most orders carry their session).
    orders = db.orders.find({"member_id": {"$in": sorted(by_member)}, "session_id": None,
                             "placed_at": {"$gte": earliest}}, {"member_id": 1, "placed_at": 1})
    for order in orders:
        member_id = order["member_id"]
        latest = db.sessions.find_one({"member_id": member_id,
                                       "first_seen": {"$lte": order["placed_at"]}},
                                      sort=[("first_seen", -1)])
        if latest and latest["_id"] in by_member[member_id]:
            fallback.add(latest["_id"])
    return fallback


def get_kpis(db, tz: ZoneInfo, rng: domain.TimeRange) -> dict:
    totals = sum_buckets(db, rng, tz, "total").get("all", {})
    seen = _in_range("hours", rng)
    paid = _in_range("paid_hours", rng)
    distinct = {
        "sessions": db.sessions.count_documents(seen),
        "funnel": {
            "product_viewed": db.sessions.count_documents({**seen, "steps.product_viewed": True}),
            "cart_updated": db.sessions.count_documents({**seen, "steps.cart_updated": True}),
            "checkout_started": db.sessions.count_documents({**seen, "steps.checkout_started": True}),
            "ordered": converted_sessions(db, rng),
        },
        "buyers": db.members.count_documents(paid),
        "repeat_buyers": db.members.count_documents({**paid, "paid_orders.1": {"$exists": True}}),
        "active_members": db.members.count_documents(_in_range("active_hours", rng)),
    }
    out = domain.kpis(totals, distinct)
    lead = [(_aware(o["delivered_at"]) - _aware(o["paid_at"])).total_seconds()
            for o in db.orders.find({"delivered_at": {"$gte": rng.start, "$lt": rng.end},
                                     "paid_at": {"$ne": None}}, {"delivered_at": 1, "paid_at": 1})]
    first, resolved = [], []
    for t in db.tickets.find({"opened_at": {"$gte": rng.start, "$lt": rng.end}}):
        if t.get("first_reply_at"):
            first.append((_aware(t["first_reply_at"]) - _aware(t["opened_at"])).total_seconds())
        if t.get("resolved_at"):
            resolved.append((_aware(t["resolved_at"]) - _aware(t["opened_at"])).total_seconds())
    out.update({
        "fulfillment_lead_time_seconds": domain.duration_summary(lead),
        "ticket_first_response_seconds": domain.duration_summary(first),
        "ticket_resolution_seconds": domain.duration_summary(resolved),
        "cancellations": totals.get("cancellations", 0),
        "cancelled_after_payment": totals.get("cancelled_after_payment", 0),
    })
    return {"id": f"kpis:{to_iso(rng.start)}:{to_iso(rng.end)}", "start": to_iso(rng.start),
            "end": to_iso(rng.end), "timezone": tz.key, **out}


def product_rows(db, rng, tz) -> list[dict]:
    sums = sum_buckets(db, rng, tz, "product")
    products = {p["_id"]: p for p in db.products.find({})}
    rows = []
    for product_id in set(sums) | {p for p, doc in products.items() if doc.get("status") != "unpublished"}:
        s = sums.get(product_id, {})
        info = products.get(product_id, {})
        units = s.get("units_paid", 0) - s.get("units_refunded", 0)
        revenue = s.get("revenue_paid", 0) - s.get("revenue_refunded", 0)
        rows.append({"id": product_id, "product_id": product_id, "title": info.get("title"),
                     "category": info.get("category"), "units": units, "revenue": revenue,
                     "units_paid": s.get("units_paid", 0), "units_returned": s.get("units_refunded", 0),
                     "views": s.get("views", 0), "stock": info.get("available"),
                     "on_hand": info.get("on_hand"),
                     "low_stock": bool(info.get("low"))})
    return rows


def top_products(db, tz, rng, limit: int) -> list[dict]:
    rows = product_rows(db, rng, tz)
    rows.sort(key=lambda r: (-r["units"], -r["revenue"], r["product_id"]))
    return rows[:limit]


def slow_products(db, tz, rng, limit: int) -> list[dict]:
    rows = product_rows(db, rng, tz)
    rows.sort(key=lambda r: (r["units"], r["revenue"], r["product_id"]))
    return rows[:limit]


def retention_cohorts(db, tz, period: str, first: str | None, last: str | None) -> dict:
    field = "paid_months" if period == "month" else "paid_weeks"
    # A buyer's cohort is the period of their first paid order, so the cohorts asked
    # for are the buyers whose first_paid_at falls in them (an index range, not every member).
    query: dict = {field: {"$exists": True}}
    first_bounds = domain.period_bounds(first, period, tz) if first else None
    last_bounds = domain.period_bounds(last, period, tz) if last else None
    if first_bounds or last_bounds:
        query["first_paid_at"] = {**({"$gte": first_bounds[0]} if first_bounds else {}),
                                  **({"$lt": last_bounds[1]} if last_bounds else {})}
    buyers = [sorted(m.get(field) or []) for m in db.members.find(query, {field: 1})]
    all_periods = sorted({p for periods in buyers for p in periods})
    rows = domain.cohort_table(buyers, all_periods)
    rows = [r for r in rows
            if (first is None or r["cohort"] >= first) and (last is None or r["cohort"] <= last)]
    return {"id": f"cohorts:{period}", "period": period, "cohorts": rows}


def attributed_orders(db, rng, window_days: int, launches: dict):
    """(order, campaign or None, channel or None, net revenue) of every order paid in
    the range: the order's campaign (its launch channel), else its referral code, else
    the member's latest marketing message within the window before placement."""
    window = timedelta(days=window_days)
    orders = list(db.orders.find({"paid_at": {"$gte": rng.start, "$lt": rng.end}}))
    touches = _touches_before(db, [o for o in orders if not o.get("campaign_id")
                                   and not o.get("referral_code")], window)
    for order in orders:
        net = order.get("paid_total", 0) - order.get("refunded", 0)
        campaign, channel = order.get("campaign_id"), None
        if campaign:
            channel = launches.get(campaign, {}).get("channel") or "direct"
        elif order.get("referral_code"):
            campaign, channel = f"referral:{order['referral_code']}", "referral"
        else:
            moment = _aware(order.get("placed_at") or order["paid_at"])
            touch = next((t for t in touches.get(order.get("member_id"), ())
                          if moment - window <= _aware(t["at"]) <= moment), None)
            if touch:
                campaign, channel = touch["campaign_id"], touch["channel"]
        yield order, campaign, channel, net


def _touches_before(db, orders: list[dict], window: timedelta) -> dict[str, list[dict]]:
    """The marketing messages that may attribute `orders`, per member, latest first:
    one query over the members and the window before their placements."""
    moments = [_aware(o.get("placed_at") or o["paid_at"]) for o in orders]
    members = sorted({o["member_id"] for o in orders if o.get("member_id")})
    if not members:
        return {}
    out: dict[str, list[dict]] = defaultdict(list)
    for touch in db.touches.find({"member_id": {"$in": members},
                                  "at": {"$gte": min(moments) - window, "$lte": max(moments)}},
                                 {"member_id": 1, "campaign_id": 1, "channel": 1, "at": 1},
                                 sort=[("at", -1)]):
        out[touch["member_id"]].append(touch)
    return out


def channel_roi(db, tz, rng, window_days: int) -> dict:
    """ROI per channel, paid channels included: cost = ad spend + message cost booked
    on the channel in the range; revenue = orders paid in the range attributed to it
    (campaign, referral or message attribution as campaign_roi, else the traffic source
    of the order's session, else `direct`), each order once."""
    costs = sum_buckets(db, rng, tz, "channel")
    launches = {c["_id"]: c for c in db.campaigns.find({}, {"channel": 1})}
    attributed = list(attributed_orders(db, rng, window_days, launches))
    sessions = {s["_id"]: s.get("source") for s in db.sessions.find(
        {"_id": {"$in": sorted({o.get("session_id") for o, c, _, _ in attributed
                                if not c and o.get("session_id")})}}, {"source": 1})}
    revenue: dict[str, int] = defaultdict(int)
    orders: dict[str, int] = defaultdict(int)
    for order, campaign, channel, net in attributed:
        if not campaign:
            channel = sessions.get(order.get("session_id")) or "direct"
        revenue[channel] += net
        orders[channel] += 1
    rows = []
    for channel in sorted(set(costs) | set(revenue)):
        c = costs.get(channel, {})
        cost = c.get("ad_spend", 0) + c.get("message_cost", 0)
        rows.append({"id": channel, "channel": channel, "orders": orders.get(channel, 0),
                     "revenue": revenue.get(channel, 0), "ad_spend": c.get("ad_spend", 0),
                     "message_cost": c.get("message_cost", 0), "cost": cost,
                     "roi": domain.roi(revenue.get(channel, 0), cost)})
    rows.sort(key=lambda r: (-r["revenue"], -r["cost"], r["channel"]))
    return {"id": f"channel_roi:{to_iso(rng.start)}:{to_iso(rng.end)}", "start": to_iso(rng.start),
            "end": to_iso(rng.end), "channels": rows}


def funnel_by_source(db, rng) -> list[dict]:
    """The funnel of sessions seen in the range, per traffic source (`source` of the
    session's session_started; `unknown` before one arrived)."""
    seen = _in_range("hours", rng)
    rows = {r["_id"] or "unknown": r for r in db.sessions.aggregate([
        {"$match": seen},
        {"$group": {"_id": "$source", "sessions": {"$sum": 1},
                    "product_viewed": {"$sum": {"$cond": ["$steps.product_viewed", 1, 0]}},
                    "cart_updated": {"$sum": {"$cond": ["$steps.cart_updated", 1, 0]}},
                    "checkout_started": {"$sum": {"$cond": ["$steps.checkout_started", 1, 0]}},
                    "ordered": {"$sum": {"$cond": ["$converted", 1, 0]}}}}])}
    extra = fallback_conversions(db, rng)
    if extra:
        for s in db.sessions.find({"_id": {"$in": sorted(extra)}}, {"source": 1}):
            rows[s.get("source") or "unknown"]["ordered"] += 1
    out = []
    for source, r in rows.items():
        out.append({"id": source, "source": source, "sessions": r["sessions"],
                    "product_viewed": r["product_viewed"], "cart_updated": r["cart_updated"],
                    "checkout_started": r["checkout_started"], "ordered": r["ordered"],
                    "conversion_rate": domain.rate(r["ordered"], r["sessions"])})
    out.sort(key=lambda r: (-r["sessions"], r["source"]))
    return out


def slas(db, tz, rng, now: datetime) -> dict:
    """Service levels of the range: shipments created / late (fulfillment's
    `shipment_late`), and tickets opened in the range answered and resolved by the
    deadlines they were opened with (tickets without one are not counted)."""
    totals = sum_buckets(db, rng, tz, "total").get("all", {})
    created, late = totals.get("shipments_created", 0), totals.get("shipments_late", 0)
    first = {"due": 0, "met": 0, "breached": 0, "open_overdue": 0}
    resolved = dict(first)
    for t in db.tickets.find({"opened_at": {"$gte": rng.start, "$lt": rng.end}}):
        for field, due_field, out in (("first_reply_at", "first_response_due_at", first),
                                      ("resolved_at", "resolution_due_at", resolved)):
            due = _aware(t.get(due_field))
            if due is None:
                continue
            out["due"] += 1
            done = _aware(t.get(field))
            if done is not None:
                out["met" if done <= due else "breached"] += 1
            elif due < now:
                out["open_overdue"] += 1
    for out in (first, resolved):
        out["met_rate"] = domain.rate(out["met"], out["due"])
    return {"shipments_created": created, "shipments_late": late,
            "on_time_rate": domain.rate(created - late, created) if created else 0.0,
            "ticket_first_response": first, "ticket_resolution": resolved}


def campaign_roi(db, tz, rng, window_days: int) -> dict:
    costs = sum_buckets(db, rng, tz, "campaign")
    split = sum_buckets(db, rng, tz, "campaign_channel")
    launches = {c["_id"]: c for c in db.campaigns.find({})}
    revenue: dict[str, int] = defaultdict(int)
    orders: dict[str, int] = defaultdict(int)
    channel_revenue: dict[tuple[str, str], int] = defaultdict(int)
    for _order, campaign, channel, net in attributed_orders(db, rng, window_days, launches):
        if campaign:
            revenue[campaign] += net
            orders[campaign] += 1
            channel_revenue[(campaign, channel)] += net
    rows = []
    for campaign in sorted(set(costs) | set(revenue)):
        c = costs.get(campaign, {})
        cost = c.get("ad_spend", 0) + c.get("message_cost", 0)
        channels = {k.split("|", 1)[1] for k in split if k.split("|", 1)[0] == campaign}
        channels |= {ch for (cp, ch) in channel_revenue if cp == campaign}
        by_channel = []
        for ch in sorted(channels):
            s = split.get(f"{campaign}|{ch}", {})
            ch_cost = s.get("ad_spend", 0) + s.get("message_cost", 0)
            ch_rev = channel_revenue.get((campaign, ch), 0)
            by_channel.append({"channel": ch, "revenue": ch_rev, "ad_spend": s.get("ad_spend", 0),
                               "message_cost": s.get("message_cost", 0), "cost": ch_cost,
                               "roi": domain.roi(ch_rev, ch_cost)})
        rows.append({"id": campaign, "campaign_id": campaign, "orders": orders.get(campaign, 0),
                     "revenue": revenue.get(campaign, 0), "ad_spend": c.get("ad_spend", 0),
                     "message_cost": c.get("message_cost", 0), "cost": cost,
                     "roi": domain.roi(revenue.get(campaign, 0), cost), "channels": by_channel})
    return {"id": f"roi:{to_iso(rng.start)}:{to_iso(rng.end)}", "start": to_iso(rng.start),
            "end": to_iso(rng.end), "attribution_window_days": window_days, "campaigns": rows}


def experiment_results(db, key: str, alpha: float, min_exposures: int) -> dict:
    experiment = db.experiments.find_one({"_id": key}) or {}
    exposures = list(db.exposures.find({"experiment_key": key}))
    if not experiment and not exposures:
        raise NotFound(f"no experiment {key}", {"experiment_key": key})
    subjects = {e["subject_id"]: e for e in exposures}
    paid_by_subject: dict[str, list[datetime]] = defaultdict(list)
    ids = list(subjects)
    for order in db.orders.find({"paid_at": {"$ne": None},
                                 "$or": [{"member_id": {"$in": ids}}, {"session_id": {"$in": ids}}]},
                                {"member_id": 1, "session_id": 1, "paid_at": 1}):
        for subject in {order.get("member_id"), order.get("session_id")} & subjects.keys():
            paid_by_subject[subject].append(_aware(order["paid_at"]))
    per_variant: dict[str, list[int]] = {v: [0, 0] for v in experiment.get("variants") or []}
    for subject, exposure in subjects.items():
        counts = per_variant.setdefault(exposure["variant"], [0, 0])
        counts[0] += 1
        if any(t >= _aware(exposure["at"]) for t in paid_by_subject.get(subject, [])):
            counts[1] += 1
    return domain.experiment_table(key, experiment.get("control"),
                                   {k: (v[0], v[1]) for k, v in per_variant.items()},
                                   alpha, min_exposures)


def experiment_keys(db) -> list[str]:
    return sorted({e["_id"] for e in db.experiments.find({}, {"_id": 1})}
                  | set(db.exposures.distinct("experiment_key")))


def daily_series(db, tz, rng) -> list[dict]:
    days: dict[str, dict[str, int]] = {}
    for doc in db[AGG].find({"dim": "total", "grain": "day", "start": {"$gte": rng.start, "$lt": rng.end}},
                            sort=[("start", 1)]):
        add_counters(days.setdefault(doc["bucket"], defaultdict(int)), doc)  # the day's shards
    return [{"day": day, "gmv": c.get("paid_total", 0) - c.get("refunded", 0),
             "orders": c.get("orders", 0), "sessions_started": c.get("sessions_started", 0)}
            for day, c in days.items()]


def unfolded_counts(db) -> list[dict]:
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for c in db.counters.find({}):
        counts[(c["status"], c["source"], c["event_type"])] += c["count"]  # sum of the shards
    return [{"status": status, "source": source, "event_type": event_type, "count": count}
            for (status, source, event_type), count in sorted(counts.items())]


def low_stock_count(db) -> int:
    return db.products.count_documents({"low": True})


# --- the operations dashboard ------------------------------------------------------------
# What it shows for a range (with the previous period for comparison) and the page that
# shows it. Served by the service itself with its script and a vendored, pinned chart
# library (static/vendor/): no CDN, it works with no internet access.

STATIC = Path(__file__).parent / "static"
DASHBOARD_SCRIPT = (STATIC / "dashboard.js").read_text()
CHART_JS = (STATIC / "vendor" / "chartjs" / "chart.umd.min.js").read_bytes()
STYLE = (STATIC / "dashboard.css").read_text()
PAGE = (STATIC / "dashboard.html").read_text()
COHORTS_SHOWN = 12


@dataclass(frozen=True)
class DashboardOptions:
    currency: str
    locale: str
    attribution_window_days: int
    experiment_alpha: float
    experiment_min_exposures: int
    refresh_seconds: int


def dashboard(db, tz: ZoneInfo, params: dict, now: datetime, options: DashboardOptions) -> dict:
    """Everything the page draws for the range `params` choose (domain.dashboard_range)."""
    preset, rng = domain.dashboard_range(params, now, tz)
    previous = domain.previous_range(rng)
    days = domain.TimeRange(domain.local_day_start(rng.start, tz), rng.end + timedelta(days=1))
    window = options.attribution_window_days
    experiments = [experiment_results(db, key, options.experiment_alpha,
                                      options.experiment_min_exposures)
                   for key in experiment_keys(db)[:10]]
    return {
        "range": {"preset": preset, "start": to_iso(rng.start), "end": to_iso(rng.end),
                  "from": rng.start.astimezone(tz).date().isoformat(),
                  "to": (rng.end - timedelta(seconds=1)).astimezone(tz).date().isoformat(),
                  "previous_start": to_iso(previous.start), "previous_end": to_iso(previous.end)},
        "generated_at": to_iso(now), "timezone": tz.key, "currency": options.currency,
        "locale": options.locale, "refresh_seconds": options.refresh_seconds,
        "kpis": get_kpis(db, tz, rng),
        "previous": get_kpis(db, tz, previous),
        "series": daily_series(db, tz, days),
        "funnel_by_source": funnel_by_source(db, rng),
        "channel_roi": channel_roi(db, tz, rng, window)["channels"],
        "campaign_roi": campaign_roi(db, tz, rng, window)["campaigns"],
        "top_products": top_products(db, tz, rng, 10),
        "slow_products": slow_products(db, tz, rng, 10),
        "cohorts": dashboard_cohorts(db, tz),
        "experiments": experiments,
        "slas": slas(db, tz, rng, now),
    }


def dashboard_cohorts(db, tz: ZoneInfo) -> dict:
    """Monthly cohorts, or weekly ones while the history is too short for months to
    show any retention (fewer than three months with purchases)."""
    monthly = retention_cohorts(db, tz, "month", None, None)
    months = {r["cohort"] for r in monthly["cohorts"]} | {
        p["period"] for r in monthly["cohorts"] for p in r["retention"]}
    table = monthly if len(months) >= 3 else retention_cohorts(db, tz, "week", None, None)
    return {"period": table["period"], "rows": table["cohorts"][-COHORTS_SHOWN:]}


def render_dashboard(payload: dict) -> str:
    inline = json.dumps(payload, default=str, ensure_ascii=False).replace("</", "<\\/")
    return PAGE.format(style=STYLE, data=inline, lang=escape(payload["locale"]),
                       tz=escape(payload["timezone"]))

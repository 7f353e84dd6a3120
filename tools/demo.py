"""What `make run` does after `make up`: seed a realistic shop, drive simulated
traffic for a bounded time with a progress bar, then print the KPI summary and
the dashboard address. The stack keeps running until `make down`; Ctrl-C
during the demo stops the demo and the stack.

    python -m tools.demo [--duration 60] [--rate 3] [--workers 8] [--members 40]

Environment: DEMO_DURATION, DEMO_RATE, DEMO_WORKERS, DEMO_MEMBERS (flags win)."""
from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta

from shared.green import patch

patch()

from shared.clock import to_iso, utcnow  # noqa: E402
from shared.config import env_float, env_int  # noqa: E402
from tools import devstack  # noqa: E402
from tools.traffic import ProgressPrinter, default_analytics_url, run_traffic  # noqa: E402

KPI_ROWS = [
    ("sessions", "Sessions", "int"),
    ("page_views", "Page views", "int"),
    ("orders_placed", "Orders placed", "int"),
    ("orders", "Paid orders", "int"),
    ("gross_paid", "Gross paid", "money"),
    ("refunded", "Refunded", "money"),
    ("gmv", "GMV (net of refunds)", "money"),
    ("aov", "Average order value", "money"),
    ("conversion_rate", "Conversion rate", "pct"),
    ("repurchase_rate", "Repurchase rate", "pct"),
    ("refund_rate", "Refund rate", "pct"),
    ("new_members", "New members", "int"),
    ("active_members", "Active members", "int"),
    ("cancellations", "Cancellations", "int"),
    ("cancelled_after_payment", "  of which after payment", "int"),
]


def err(message: str = "") -> None:
    print(message, file=sys.stderr, flush=True)


def money(minor, currency: str = "CNY") -> str:
    if minor is None:
        return "-"
    sign = "-" if minor < 0 else ""
    return f"{sign}{currency} {abs(minor) / 100:,.2f}"


def fmt(value, kind: str, currency: str = "CNY") -> str:
    if value is None:
        return "-"
    if kind == "money":
        return money(value, currency)
    if kind == "pct":
        return f"{float(value) * 100:.1f}%"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table; CJK characters count as two columns."""
    def width(text: str) -> int:
        return sum(2 if ord(ch) > 0x2E7F else 1 for ch in text)

    def pad(text: str, size: int, right: bool) -> str:
        gap = " " * (size - width(text))
        return gap + text if right else text + gap

    sizes = [max(width(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    numeric = [all(_numeric(str(r[i])) for r in rows) and bool(rows) for i in range(len(headers))]
    line = "+" + "+".join("-" * (s + 2) for s in sizes) + "+"
    head = " | ".join(pad(h, s, False) for h, s in zip(headers, sizes, strict=True))
    out = [line, f"| {head} |", line]
    for row in rows:
        cells = " | ".join(pad(str(c), s, n) for c, s, n in zip(row, sizes, numeric, strict=True))
        out.append(f"| {cells} |")
    out.append(line)
    return "\n".join(out)


def _numeric(text: str) -> bool:
    stripped = text.replace("CNY", "").replace(",", "").replace("%", "").replace(".", "").strip(" -+")
    return stripped.isdigit() or text == "-"


def kpi_table(kpis: dict, currency: str) -> str:
    rows = [[label, fmt(kpis.get(key), kind, currency)] for key, label, kind in KPI_ROWS if key in kpis]
    lead = kpis.get("fulfillment_lead_time_seconds") or {}
    if lead.get("count"):
        rows.append(["Paid → delivered p50 / p90", f"{lead.get('p50', 0):.1f}s / {lead.get('p90', 0):.1f}s"])
    first = kpis.get("ticket_first_response_seconds") or {}
    if first.get("count"):
        rows.append(["Ticket first response p50", f"{first.get('p50', 0):.1f}s"])
    steps = (kpis.get("funnel") or {}).get("steps") or []
    if steps:
        rows.append(["Funnel " + " → ".join(s["step"].split("_")[0] for s in steps),
                     " → ".join(f"{s['sessions']:,}" for s in steps)])
    return table(["KPI", "Value"], rows)


def stats_table(stats: dict) -> str:
    keys = [("sessions", "Sessions simulated"), ("track_events", "Tracking events sent"),
            ("exposures", "Experiment exposures"), ("quotes", "Quotes"),
            ("orders_placed", "Orders placed"), ("orders_with_coupon", "  with a coupon"),
            ("orders_attributed", "  attributed (campaign/referral)"),
            ("declines_sent", "  paid with a declining card"), ("cancellations", "Cancelled by the member"),
            ("dispatched", "Shipments dispatched"), ("delivered", "Deliveries confirmed"),
            ("returns_requested", "Returns requested"), ("returns_received", "Returns received"),
            ("tickets_opened", "Tickets opened"), ("tickets_resolved", "Tickets resolved")]
    rows = [[label, f"{stats.get(key, 0):,}"] for key, label in keys]
    if stats.get("track_retries"):
        rows.append(["Tracking batches retried", f"{stats['track_retries']:,}"])
    final = stats.get("final_status") or {}
    rows.append(["Orders by last status", ", ".join(f"{k} {v}" for k, v in sorted(final.items())) or "-"])
    errors = stats.get("errors") or {}
    rows.append(["Errors by type", ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none"])
    return table(["Traffic", "Count"], rows)


def ready(url: str) -> bool:
    return devstack.health_ready(url)


def not_ready(urls: list[str], names: list[str], timeout: float = 10.0) -> list[str]:
    """The names whose /health/ready still fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    waiting = dict(zip(names, urls, strict=True))
    while waiting:
        waiting = {name: url for name, url in waiting.items() if not ready(url)}
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return list(waiting)


def drain(rpc, start: str, quiet_for: float = 3.0, timeout: float = 20.0) -> dict:
    """Wait until analytics stops changing (queues drained) or `timeout`."""
    deadline = time.monotonic() + timeout
    last, stable_since = None, time.monotonic()
    kpis = {}
    while time.monotonic() < deadline:
        kpis = rpc.analytics.get_kpis(start=start)
        signature = (kpis.get("orders"), kpis.get("gmv"), kpis.get("sessions"), kpis.get("page_views"),
                     kpis.get("cancellations"))
        if signature != last:
            last, stable_since = signature, time.monotonic()
        elif time.monotonic() - stable_since >= quiet_for:
            break
        time.sleep(1.0)
    return kpis


def report(rpc, data: dict, stats: dict, start: str, currency: str, dashboard: str) -> None:
    kpis = drain(rpc, start)
    print()
    print(f"KPI summary ({kpis.get('start', start)} → {kpis.get('end', 'now')}, "
          f"{kpis.get('timezone', '')}: whole clock hours, so earlier runs in them count too)")
    print(kpi_table(kpis, currency))
    try:
        ours = {p["id"] for p in data["products"]}  # earlier runs' products may share titles
        top = [p for p in rpc.analytics.top_products(500, start=start) if p["product_id"] in ours][:5]
        rows = [[str(p.get("title") or p["product_id"]), p.get("category") or "-", f"{p.get('units', 0):,}",
                 money(p.get("revenue"), currency), str(p.get("views", 0))] for p in top]
        print("\nTop products of this run")
        print(table(["Product", "Category", "Units", "Revenue", "Views"], rows))
    except Exception as exc:
        print(f"\n(top products unavailable: {type(exc).__name__}: {exc})")
    try:
        result = rpc.analytics.experiment_results(data["experiment_key"])
        rows = [[v["variant"], str(v.get("exposures", 0)), str(v.get("conversions", 0)),
                 fmt(v.get("rate"), "pct"), "-" if v.get("lift") is None else f"{v['lift'] * 100:+.1f}%",
                 "-" if v.get("p_value") is None else f"{v['p_value']:.3f}", str(v.get("verdict") or "")]
                for v in result.get("variants", [])]
        print(f"\nA/B experiment {data['experiment_key']}")
        print(table(["Variant", "Exposed", "Converted", "Rate", "Lift", "p", "Verdict"], rows))
    except Exception as exc:
        print(f"\n(experiment results unavailable: {type(exc).__name__}: {exc})")
    print("\nWhat the generator did")
    print(stats_table(stats))
    print(f"\nDashboard: {dashboard}/dashboard")
    print("The stack keeps running until you run `make down`.")


def stop_stack() -> None:
    from tools import stack

    err("\nInterrupted: stopping the demo and the stack it started (make down)...")
    stack.down()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=env_float("DEMO_DURATION", 60.0),
                        help="seconds of simulated shopping (DEMO_DURATION, default 60)")
    parser.add_argument("--rate", type=float, default=env_float("DEMO_RATE", 3.0),
                        help="new sessions per second (DEMO_RATE, default 3)")
    parser.add_argument("--workers", type=int, default=env_int("DEMO_WORKERS", 8),
                        help="shopper green threads, one RPC connection each (DEMO_WORKERS, default 8)")
    parser.add_argument("--members", type=int, default=env_int("DEMO_MEMBERS", 40),
                        help="members to register (DEMO_MEMBERS, default 40)")
    parser.add_argument("--no-stop-on-interrupt", action="store_true",
                        help="on Ctrl-C stop only the demo, leave the stack running")
    args = parser.parse_args(argv)

    from shared.config import DEFAULT_PORTS, Settings
    from shared.errors import ShopError
    from tools.client import connect
    from tools.seed import seed

    settings = Settings.from_env("analytics")
    analytics = default_analytics_url()
    try:
        down = not_ready([f"http://127.0.0.1:{Settings.from_env(n).http_port}" for n in DEFAULT_PORTS],
                         list(DEFAULT_PORTS))
        if down:
            err(f"not ready: {', '.join(down)} (no answer on /health/ready). Run `make up` first "
                "(or `make run`, which starts the stack); logs in .run/logs/.")
            return 2
        start = to_iso(utcnow() - timedelta(seconds=5))
        err(f"Seeding a demo shop (members: {args.members})...")
        try:
            data = seed(members=args.members, say=lambda m: err(f"  seed: {m}"))
        except ShopError as exc:
            err(f"seeding failed: {type(exc).__name__}: {exc} (service logs in .run/logs/)")
            return 1
        data["currency"] = settings.currency
        err(f"  seeded run {data['run_id']}: {len(data['products'])} products, {len(data['members'])} "
            f"members, {len(data['warehouses'])} warehouses, {len(data['coupons'])} coupons, "
            f"experiment {data['experiment_key']}")
        err(f"Simulating shoppers for {args.duration:.0f}s at {args.rate:g} sessions/s "
            f"with {args.workers} workers...")
        stats = run_traffic(args.rate, args.duration, args.workers, data, progress=ProgressPrinter(),
                            analytics_url=analytics)
        err("Waiting for the event queues to drain...")
        with connect(timeout=15) as rpc:
            report(rpc, data, stats, start, settings.currency, analytics)
        return 0
    except KeyboardInterrupt:
        if args.no_stop_on_interrupt:
            err("\nInterrupted: the stack keeps running until `make down`.")
        else:
            stop_stack()
        return 130


if __name__ == "__main__":
    sys.exit(main())

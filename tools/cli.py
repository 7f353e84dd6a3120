"""`shop`: the operators' command line, built on RPC.

    shop order get ORDER_ID            shop catalog stock PRODUCT_ID
    shop kpis --since 7d               shop dlq list order
    shop outbox list order --state parked   shop outbox retry order
    shop call catalog get_product '"prd_..."'

Readable tables by default, `--json` for scripts. Every command has --help."""
from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import timedelta

from shared.clock import to_iso, utcnow
from shared.config import Settings
from shared.errors import ShopError
from tools import admin

# (service, verb) → (rpc method, positional argument names, help)
COMMANDS = {
    ("catalog", "get"): ("get_product", ["product_id"], "show a product"),
    ("catalog", "stock"): ("get_stock", ["product_id"], "on hand, reserved and available stock"),
    ("catalog", "reviews"): ("list_reviews", ["product_id"], "a product's reviews"),
    ("order", "get"): ("get_order", ["order_id"], "an order with its history, returns and refunds"),
    ("order", "cancel"): ("cancel_order", ["order_id", "reason"], "cancel an order before dispatch"),
    ("fulfillment", "shipment"): ("get_shipment_for_order", ["order_id"], "the shipment of an order"),
    ("fulfillment", "late"): ("list_late_shipments", [], "shipments past their dispatch deadline"),
    ("member", "get"): ("get_member", ["member_id"], "a member's profile, tier and progress"),
    ("member", "points"): ("get_points", ["member_id"], "points balance and recent entries"),
    ("member", "segment"): ("get_segment", ["member_id"], "lifecycle segment and RFM scores"),
    ("marketing", "promotions"): ("list_promotions", [], "every promotion"),
    ("analytics", "experiment"): ("experiment_results", ["experiment_key"],
                                  "an A/B experiment's results with significance"),
    ("analytics", "cohorts"): ("retention_cohorts", [], "monthly first-purchase retention cohorts"),
    ("analytics", "roi"): ("campaign_roi", [], "campaign ROI per campaign and channel"),
}


def parse_since(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([mhdw])", text.strip())
    if not match:
        raise argparse.ArgumentTypeError("use a number and a unit: 30m, 12h, 7d, 4w")
    value, unit = int(match.group(1)), match.group(2)
    return {"m": timedelta(minutes=value), "h": timedelta(hours=value),
            "d": timedelta(days=value), "w": timedelta(weeks=value)}[unit]


def render(value, as_json: bool) -> str:
    if as_json:
        return json.dumps(value, ensure_ascii=False, indent=2, default=str)
    if isinstance(value, dict) and isinstance(value.get("items"), list):
        footer = {k: v for k, v in value.items() if k != "items"}
        return render(value["items"], False) + ("\n" + _pairs(footer) if footer else "")
    if isinstance(value, list):
        if not value:
            return "(none)"
        if all(isinstance(row, dict) for row in value):
            return _table(value)
        return "\n".join(str(item) for item in value)
    if isinstance(value, dict):
        return _pairs(value)
    return str(value)


def _cell(value) -> str:
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = "" if value is None else str(value)
    return text if len(text) <= 48 else text[:45] + "..."


def _pairs(mapping: dict) -> str:
    width = max((len(str(k)) for k in mapping), default=0)
    return "\n".join(f"{str(k):<{width}}  {_cell(v)}" for k, v in mapping.items())


def _table(rows: list[dict]) -> str:
    columns = [key for key in rows[0] if not isinstance(rows[0][key], (dict, list))][:8] or list(rows[0])[:8]
    widths = {c: max(len(c), *(len(_cell(row.get(c))) for row in rows)) for c in columns}
    lines = ["  ".join(f"{c:<{widths[c]}}" for c in columns),
             "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(f"{_cell(row.get(c)):<{widths[c]}}" for c in columns) for row in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shop", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:5]))
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--timeout", type=float, default=None, help="RPC timeout in seconds")
    sub = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    verbs_of: dict[str, argparse._SubParsersAction] = {}
    for (service, verb), (_, args, text) in COMMANDS.items():
        if service not in verbs_of:
            p_service = sub.add_parser(service, help=f"{service} service commands")
            verbs_of[service] = p_service.add_subparsers(dest="verb", required=True, metavar="VERB")
        p_verb = verbs_of[service].add_parser(verb, help=text, description=text)
        for arg in args:
            p_verb.add_argument(arg)
    p_order_list = verbs_of["order"].add_parser(
        "list", help="orders, newest first", description="orders, newest first")
    p_order_list.add_argument("--member")
    p_order_list.add_argument("--status")
    p_order_list.add_argument("--page", type=int, default=1)
    p_order_list.add_argument("--page-size", type=int, default=20)
    p_search = verbs_of["catalog"].add_parser(
        "search", help="search published products", description="search published products")
    p_search.add_argument("query", nargs="?")
    p_search.add_argument("--category")
    p_search.add_argument("--sort", default="relevance", choices=["relevance", "price", "sales", "rating"])
    p_search.add_argument("--page", type=int, default=1)

    p_kpis = sub.add_parser("kpis", help="KPIs over a time range (analytics)",
                            description="KPIs over a time range (analytics)")
    window = p_kpis.add_mutually_exclusive_group()
    window.add_argument("--since", type=parse_since, help="e.g. 24h, 7d (default 7d)")
    window.add_argument("--start", help="ISO 8601 start (with --end)")
    p_kpis.add_argument("--end", help="ISO 8601 end")
    p_top = sub.add_parser("top", help="best sellers (analytics)", description="best sellers (analytics)")
    p_top.add_argument("--limit", type=int, default=10)

    p_dlq = sub.add_parser("dlq", help="dead-lettered events", description="dead-lettered events")
    p_dlq.add_argument("action", choices=["list", "replay"])
    p_dlq.add_argument("service")
    p_dlq.add_argument("--limit", type=int, default=100)
    p_outbox = sub.add_parser("outbox", help="a service's unpublished events (pending or parked)",
                              description="list a service's pending or parked outbox events, "
                                          "or make parked ones due again")
    p_outbox.add_argument("action", choices=["list", "retry"])
    p_outbox.add_argument("service")
    p_outbox.add_argument("event_ids", nargs="*", help="retry: only these (default: every parked one)")
    p_outbox.add_argument("--state", choices=["parked", "pending"], default="parked")
    p_outbox.add_argument("--limit", type=int, default=50)
    sub.add_parser("declare", help="declare the broker topology (idempotent)",
                   description="declare every event queue, binding and dead-letter queue")
    p_call = sub.add_parser("call", help="call any RPC method", description="call any RPC method: "
                            "positional arguments are JSON values")
    p_call.add_argument("service")
    p_call.add_argument("method")
    p_call.add_argument("args", nargs="*", help="JSON values, e.g. '\"prd_1\"' 3 '{\"a\": 1}'")
    return parser


def run(args) -> object:
    settings = Settings.from_env("cli")
    if args.group == "dlq":
        if args.action == "list":
            return admin.list_dead_letters(settings.amqp_uri, args.service, args.limit)
        return {"replayed": admin.replay_dead_letters(settings.amqp_uri, args.service, args.limit)}
    if args.group == "outbox":
        if args.action == "list":
            return admin.list_outbox(args.service, args.state, args.limit)
        return {"retried": admin.retry_outbox(args.service, args.event_ids or None),
                "service": args.service}
    if args.group == "declare":
        return {"declared": admin.declare(settings.amqp_uri, None, settings.delivery_limit)}

    from tools.client import connect

    with connect(timeout=args.timeout) as rpc:
        if args.group == "call":
            try:
                values = [json.loads(value) for value in args.args]
            except json.JSONDecodeError as exc:
                raise SystemExit(f"arguments must be JSON values: {exc}") from None
            return getattr(getattr(rpc, args.service), args.method)(*values)
        if args.group == "kpis":
            end = args.end or to_iso(utcnow())
            start = args.start or to_iso(utcnow() - (args.since or timedelta(days=7)))
            return rpc.analytics.get_kpis(start, end)
        if args.group == "top":
            return rpc.analytics.top_products(limit=args.limit)
        if (args.group, args.verb) == ("order", "list"):
            return rpc.order.list_orders(member_id=args.member, status=args.status, page=args.page,
                                         page_size=args.page_size)
        if (args.group, args.verb) == ("catalog", "search"):
            return rpc.catalog.search_products(query=args.query, category=args.category,
                                               sort=args.sort, page=args.page)
        method, names, _ = COMMANDS[(args.group, args.verb)]
        service = getattr(rpc, args.group)
        return getattr(service, method)(*[getattr(args, name) for name in names])


def main(argv: list[str] | None = None) -> int:
    from shared.green import patch

    patch()
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except ShopError as exc:
        print(render(exc.to_dict(), args.json) if args.json else f"error: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 2
    print(render(result, args.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())

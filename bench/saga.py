"""The checkout saga with all six services as real processes: `place_order`
latency at 1 and 16 clients, sustained placed → paid throughput with the
queues sampled, placed → paid latency at a fixed offered rate, `/track`
ingestion, and the messages and writes one order costs.

The stack is the crash tests' harness (tests/chaos/harness.py): a private
mongod, a private virtual host on the machine's broker, six
`python -m shared.run` processes, seeded the same way."""
from __future__ import annotations

import json
import os
import resource
import secrets
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import eventlet
import requests

from bench import units
from bench.stats import distribution, slope
from shared.clock import parse_iso, to_iso, utcnow
from shared.security.auth import track_headers
from tests.chaos.harness import ADDRESS, Infra, Shop, seed
from tests.support.suite import SERVICES
from tools.traffic import Pacer

# The crash harness's business settings, with the chassis back at its defaults
# (the harness sweeps fast and logs only warnings to make crashes visible).
# A tracking key made up for the run: /track refuses bodies not signed with one.
TRACK_KEY = ("bench-site", secrets.token_urlsafe(24))
BENCH_ENV = {
    "ANALYTICS_TRACK_KEYS": f"{TRACK_KEY[0]}:{TRACK_KEY[1]}",
    "LOG_LEVEL": "INFO",
    "OUTBOX_SWEEP_INTERVAL": "2",
    "OUTBOX_SWEEP_GRACE": "5",
    "ORDER_TIMER_INTERVAL": "5",
    "ORDER_PAYMENT_RETRY_BASE_SECONDS": "2",
    "ORDER_PAYMENT_RETRY_MAX_SECONDS": "60",
    "ORDER_PAYMENT_LEASE_SECONDS": "30",
    "ORDER_MARKETING_TIMEOUT": "5",
}
UNSETTLED = ("pending", "confirmed")
PAYMENT = {"token": "tok_bench_ok", "method": "card"}
# The tracking endpoint may require a key (set in the environment the stack inherits).


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Saga:
    """The running suite plus what the figures need: placing orders, the
    broker's and mongod's counters, the services' CPU."""

    def __init__(self, infra: Infra, base: Path):
        self.infra = infra
        self.shop = Shop.start(infra, base, env=BENCH_ENV)
        try:
            self.world = seed(self.shop, products=4, stock=10**8, members=16)
        except BaseException:
            self.shop.stop()
            raise
        self.tag = uuid.uuid4().hex[:6]
        self.sequence = 0

    def close(self) -> None:
        self.shop.stop()

    # -- placing orders ----------------------------------------------------------------
    def _next_plan(self) -> tuple[str, list, str]:
        n = self.sequence
        self.sequence += 1
        world = self.world
        product = world.products[n % len(world.products)]
        return (world.members[n % len(world.members)], [{"product_id": product["id"], "quantity": 1}],
                f"bench-{self.tag}-{n}")

    def place(self, rpc) -> float:
        """One place_order over `rpc` (a kept connection); its latency in seconds."""
        member_id, lines, key = self._next_plan()
        started = time.perf_counter()
        rpc.call("order", "place_order", member_id, lines, ADDRESS, PAYMENT, idempotency_key=key)
        return time.perf_counter() - started

    # -- observations ------------------------------------------------------------------
    def orders_since(self, since_iso: str) -> list[dict]:
        return list(self.shop.db("order").orders.find(
            {"placed_at": {"$gte": since_iso}, "idempotency_key": {"$regex": f"^bench-{self.tag}-"}},
            {"status": 1, "timestamps": 1}))

    def unsettled_since(self, since_iso: str) -> int:
        return self.shop.db("order").orders.count_documents(
            {"placed_at": {"$gte": since_iso}, "status": {"$in": list(UNSETTLED)}})

    def queue_total(self) -> int:
        return sum(v or 0 for v in self.shop.queue_depths().values())

    def drain(self, since_iso: str, timeout: float) -> float | None:
        """Wait until every order placed since `since_iso` is past payment and
        the event queues are empty; seconds it took, None on timeout."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.unsettled_since(since_iso) == 0 and self.queue_total() == 0:
                return round(time.monotonic() - started, 1)
            eventlet.sleep(0.5)
        return None

    def counters(self) -> dict:
        """Broker messages (from the services' /metrics) and mongod operations so far."""
        totals: Counter = Counter()
        for name in SERVICES:
            for line in self.shop.metrics_text(name).splitlines():
                if line.startswith("#") or " " not in line:
                    continue
                metric = line.split("{", 1)[0].split(" ", 1)[0]
                if metric in ("shop_events_published_total", "shop_events_consumed_total",
                              "shop_rpc_client_calls_total", "shop_outbox_swept_total"):
                    try:
                        value = float(line.rsplit(" ", 1)[1])
                    except ValueError:
                        continue
                    totals[metric] += value
                    if metric == "shop_events_consumed_total":
                        totals[f"consumed_by:{name}"] += value
        status = self.shop.mongo.admin.command("serverStatus")
        for op, count in status["opcounters"].items():
            totals[f"mongod_{op}"] = count
        totals["mongod_transactions_committed"] = status.get("transactions", {}).get("totalCommitted", 0)
        # Per collection (mongod's `top`): where an order's reads and writes go.
        prefix = self.shop.suite.database("")
        for namespace, ops in self.shop.mongo.admin.command("top")["totals"].items():
            if namespace.startswith(prefix):
                for op in ("insert", "update", "remove", "queries"):
                    totals[f"top:{namespace}:{op}"] = ops.get(op, {}).get("count", 0)
        return dict(totals)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time so far of each service, mongod, the broker (shared with the
        machine's other users) and this process (the clients)."""
        pids = {name: proc.pid for name, proc in self.shop.suite.procs.items()}
        pids["mongod"] = self.infra.mongod.pid()
        beam = _pid_named("beam.smp")
        if beam:
            pids["rabbitmq (shared)"] = beam
        out = {}
        for name, pid in pids.items():
            try:
                out[name] = units.process_cpu_s(pid)
            except (OSError, TypeError, IndexError, ValueError):
                continue
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out["bench clients"] = usage.ru_utime + usage.ru_stime
        return out


def _pid_named(comm: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    return int(entry.name)
            except OSError:
                continue
    return None


def _cpu_share(before: dict, after: dict, seconds: float) -> dict:
    return {name: round((after[name] - before.get(name, 0)) / seconds * 100, 1)
            for name in after if name in before}


# ---------------------------------------------------------------- phases

def one_client(saga: Saga, calls: int, warmup: int = 20) -> dict:
    """Back to back on one kept connection (the saga of the previous orders runs
    meanwhile on the same cores), then `calls // 8` calls each made once the
    previous order's saga has come to rest: the difference is CPU contention."""
    rpc = saga.shop.rpc(timeout=30)
    order_pid = saga.shop.suite.procs["order"].pid
    try:
        for _ in range(warmup):
            saga.place(rpc)
        since = to_iso(utcnow())
        sched_before, wall_before = _schedstat(order_pid), time.monotonic()
        latencies = [saga.place(rpc) for _ in range(calls)]
        sched_after, wall = _schedstat(order_pid), time.monotonic() - wall_before
        saga.drain(since, timeout=120)
        isolated = []
        for _ in range(max(calls // 8, 5)):
            since = to_iso(utcnow())
            isolated.append(saga.place(rpc))
            saga.drain(since, timeout=60)
            eventlet.sleep(0.3)  # the last handlers (analytics, fulfillment) finish their acks
    finally:
        rpc.close()
    result = {"clients": 1, "calls": calls, **distribution(latencies),
              "isolated": {"note": "each call made once the previous order's saga is at rest",
                           **distribution(isolated)}}
    if sched_before and sched_after:
        result["order_process"] = {
            "on_cpu_percent": round((sched_after[0] - sched_before[0]) / 1e9 / wall * 100, 1),
            "runqueue_wait_percent": round((sched_after[1] - sched_before[1]) / 1e9 / wall * 100, 1)}
    return result


def _schedstat(pid: int) -> tuple[int, int] | None:
    """(ns on CPU, ns runnable but waiting for a CPU) of a process's main thread,
    where eventlet runs every green thread."""
    try:
        on_cpu, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
        return int(on_cpu), int(waiting)
    except (OSError, ValueError):
        return None


def closed_loop(saga: Saga, clients: int, duration: float, sample_every: float = 2.0) -> dict:
    """`clients` green threads, each with its own kept RPC connection, placing
    orders back to back for `duration` seconds, while the queues are sampled."""
    since = to_iso(utcnow())
    latencies: list[float] = []
    errors: Counter = Counter()
    deadline = time.monotonic() + duration

    def client() -> None:
        rpc = saga.shop.rpc(timeout=30)
        try:
            while time.monotonic() < deadline:
                try:
                    latencies.append(saga.place(rpc))
                except Exception as exc:  # counted, never stops the run
                    errors[type(exc).__name__] += 1
        finally:
            rpc.close()

    # What the idle stack does by itself (timers, sweeps, probes) is taken out of the
    # per-order counts.
    idle_from, idle_cpu, idle_started = saga.counters(), saga.cpu_seconds(), time.monotonic()
    eventlet.sleep(5)
    before, cpu_before = saga.counters(), saga.cpu_seconds()
    idle_s = time.monotonic() - idle_started
    background = {k: (before[k] - idle_from.get(k, 0)) / idle_s for k in before}
    cpu_background = {k: (cpu_before[k] - idle_cpu.get(k, 0)) / idle_s for k in cpu_before}
    load_before = os.getloadavg()
    started = time.monotonic()
    threads = [eventlet.spawn(client) for _ in range(clients)]
    depths: list[tuple[float, int]] = []
    per_queue_max: Counter = Counter()
    while time.monotonic() < deadline:
        eventlet.sleep(sample_every)
        sample = saga.shop.queue_depths()
        for queue, depth in sample.items():
            per_queue_max[queue] = max(per_queue_max[queue], depth or 0)
        depths.append((round(time.monotonic() - started, 1), sum(v or 0 for v in sample.values())))
    for thread in threads:
        thread.wait()
    elapsed = time.monotonic() - started
    cpu_after = saga.cpu_seconds()
    load_during = os.getloadavg()
    ended_iso = to_iso(utcnow())
    drain_s = saga.drain(since, timeout=max(120.0, duration * 2))
    after = saga.counters()
    counted_s = time.monotonic() - started
    cpu_drained = saga.cpu_seconds()

    orders = saga.orders_since(since)
    paid_in_window = _paid_between(orders, parse_iso(since), parse_iso(ended_iso))
    placed = len(latencies)
    result = {
        "clients": clients, "duration_s": round(elapsed, 1),
        "place_order": {"calls": placed, "errors": dict(errors), **distribution(latencies)},
        "placed_per_s": round(placed / elapsed, 1),
        "paid_per_s": round(paid_in_window / elapsed, 1),
        "placed_to_paid": distribution(_placed_to_paid(orders)),
        "status_after_drain": dict(Counter(o["status"] for o in orders)),
        "drain_s": drain_s,
        "queue_depth": {"sample_every_s": sample_every, "total_series": depths,
                        "max_total": max((d for _, d in depths), default=0),
                        "max_per_queue": dict(per_queue_max),
                        "growth_per_s": slope(depths)},
        "cpu_percent_of_one_core": _cpu_share(before=cpu_before, after=cpu_after, seconds=elapsed),
        "loadavg_during": [round(x, 2) for x in load_during],
        "loadavg_before": [round(x, 2) for x in load_before],
    }
    after = {k: v - background.get(k, 0) * counted_s for k, v in after.items()}
    result["per_order"] = _per_order(before, after, placed)
    result["per_order"]["background_per_s"] = {k: round(v, 1) for k, v in background.items()
                                               if v and k.startswith(("mongod_", "shop_"))}
    if placed:
        own = [n for n in cpu_drained if n in cpu_before and n not in ("rabbitmq (shared)", "bench clients")]
        result["per_order"]["cpu_ms_services_and_mongod"] = round(
            sum(cpu_drained[n] - cpu_before[n] - cpu_background.get(n, 0) * counted_s for n in own)
            / placed * 1000, 1)
        if "rabbitmq (shared)" in cpu_before and "rabbitmq (shared)" in cpu_drained:
            result["per_order"]["cpu_ms_rabbitmq_shared"] = round(
                (cpu_drained["rabbitmq (shared)"] - cpu_before["rabbitmq (shared)"]) / placed * 1000, 1)
    return result


def open_loop(saga: Saga, rate: float, duration: float, clients: int = 48) -> dict:
    """Orders offered at `rate` per second (a shared pacer), placed by up to
    `clients` connections; placed → paid latency of each, after a drain."""
    since = to_iso(utcnow())
    pacer = Pacer(rate)
    deadline = time.monotonic() + duration
    latencies: list[float] = []
    late: list[float] = []
    errors: Counter = Counter()

    def client() -> None:
        rpc = saga.shop.rpc(timeout=30)
        try:
            while True:
                wait = pacer.claim()
                if time.monotonic() + wait >= deadline:
                    return
                if wait > 0:
                    eventlet.sleep(wait)
                else:
                    late.append(-wait)
                try:
                    latencies.append(saga.place(rpc))
                except Exception as exc:
                    errors[type(exc).__name__] += 1
        finally:
            rpc.close()

    started = time.monotonic()
    threads = [eventlet.spawn(client) for _ in range(clients)]
    for thread in threads:
        thread.wait()
    elapsed = time.monotonic() - started
    drain_s = saga.drain(since, timeout=120)
    orders = saga.orders_since(since)
    return {
        "offered_per_s": rate, "duration_s": round(elapsed, 1), "clients": clients,
        "placed_per_s": round(len(latencies) / elapsed, 1),
        "slots_started_late": len(late), "errors": dict(errors),
        "place_order": distribution(latencies),
        "placed_to_paid": distribution(_placed_to_paid(orders)),
        "drain_s": drain_s,
    }


def track(saga: Saga, duration: float, clients: int = 4, batch: int = 100) -> dict:
    """POST /track batches of `batch` events from `clients` keep-alive clients."""
    url = f"http://127.0.0.1:{saga.shop.suite.ports['analytics']}/track"
    accepted = 0
    statuses: Counter = Counter()
    latencies: list[float] = []
    deadline = time.monotonic() + duration

    def client(index: int) -> None:
        nonlocal accepted
        session = requests.Session()
        n = 0
        while time.monotonic() < deadline:
            now = to_iso(utcnow())
            events = []
            for _ in range(batch):
                n += 1
                sid = f"ses_bench{saga.tag}{index}x{n // 20}"
                events.append({"event_type": "page_viewed", "session_id": sid, "occurred_at": now,
                               "path": f"/p/{n % 30}"} if n % 2 else
                              {"event_type": "product_viewed", "session_id": sid, "occurred_at": now,
                               "product_id": saga.world.products[n % 4]["id"], "category": "books"})
            started = time.perf_counter()
            try:
                body = json.dumps({"events": events}).encode()
                resp = session.post(url, data=body, timeout=60, headers={
                    "Content-Type": "application/json", **track_headers(*TRACK_KEY, body)})
            except requests.RequestException as exc:
                statuses[type(exc).__name__] += 1
                continue
            latencies.append(time.perf_counter() - started)
            statuses[str(resp.status_code)] += 1
            if resp.ok:
                accepted += resp.json().get("accepted", 0)
        session.close()

    started = time.monotonic()
    threads = [eventlet.spawn(client, i) for i in range(clients)]
    for thread in threads:
        thread.wait()
    elapsed = time.monotonic() - started
    return {"clients": clients, "batch": batch, "duration_s": round(elapsed, 1),
            "events_per_s": round(accepted / elapsed, 1), "responses": dict(statuses),
            "key_id": TRACK_KEY[0], "post": distribution(latencies)}


# ---------------------------------------------------------------- arithmetic

def _placed_to_paid(orders: list[dict]) -> list[float]:
    out = []
    for order in orders:
        stamps = order.get("timestamps") or {}
        if "paid" in stamps and "pending" in stamps:
            out.append((parse_iso(stamps["paid"]) - parse_iso(stamps["pending"])).total_seconds())
    return out


def _paid_between(orders: list[dict], start, end) -> int:
    return sum(1 for o in orders if "paid" in (o.get("timestamps") or {})
               and start <= parse_iso(o["timestamps"]["paid"]) <= end)


def _per_order(before: dict, after: dict, orders: int) -> dict:
    """Counter deltas over the run and its drain, per order placed."""
    if not orders:
        return {}
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    rpc_calls = delta.get("shop_rpc_client_calls_total", 0) + orders  # + the client's place_order
    per = {
        "events_published": delta.get("shop_events_published_total", 0) / orders,
        "event_deliveries": delta.get("shop_events_consumed_total", 0) / orders,
        "rpc_calls": rpc_calls / orders,
        "mongod_writes": sum(delta.get(f"mongod_{op}", 0) for op in ("insert", "update", "delete")) / orders,
        "mongod_reads": sum(delta.get(f"mongod_{op}", 0) for op in ("query", "getmore")) / orders,
        "mongod_commands": delta.get("mongod_command", 0) / orders,
        "mongod_transactions": delta.get("mongod_transactions_committed", 0) / orders,
    }
    # Every event delivery is a quorum-queue enqueue + deliver + ack; every RPC a
    # request and a reply on classic queues.
    per["broker_messages"] = per["event_deliveries"] + 2 * per["rpc_calls"]
    out = {k: round(v, 2) for k, v in per.items()}
    out["event_deliveries_by_consumer"] = {key.split(":", 1)[1]: round(value / orders, 2)
                                           for key, value in delta.items() if key.startswith("consumed_by:")}
    by_collection: Counter = Counter()
    for key, value in delta.items():
        if key.startswith("top:"):
            _, namespace, op = key.split(":")
            service_collection = namespace.split("_", 1)[1]  # "<prefix>_order.orders" → "order.orders"
            by_collection[f"{service_collection} {'reads' if op == 'queries' else 'writes'}"] += value
    out["mongod_ops_by_collection"] = {name: round(n / orders, 2)
                                       for name, n in by_collection.most_common() if n / orders >= 0.1}
    return out


def ceiling(per_order: dict, raw_broker: dict, raw_store: dict) -> dict:
    """Orders/s the raw broker and the raw store could carry at the message and
    write counts of one order measured in this run (both share the same cores,
    so the combined ceiling adds their costs)."""
    if not per_order:
        return {}
    pub_each = raw_broker["publish_confirm_each"]["per_s"]
    pub_pipe = raw_broker["publish_confirm_pipelined"]["per_s"]
    consume = raw_broker["consume_acked"]["per_s"]
    messages = per_order["broker_messages"]
    broker_pipe = 1 / (messages * (1 / pub_pipe + 1 / consume))
    broker_each = 1 / (messages * (1 / pub_each + 1 / consume))
    writes_rate = raw_store["majority_insert"]["per_s"]
    tx_rate = raw_store["two_insert_transaction"]["per_s"]
    # A transaction of two inserts is the unit the store benchmark measures;
    # count each committed transaction as one and the writes outside them as single ones.
    store_tx = 1 / (per_order["mongod_transactions"] / tx_rate
                    + max(per_order["mongod_writes"] - 2 * per_order["mongod_transactions"], 0) / writes_rate)
    store_writes = writes_rate / per_order["mongod_writes"] if per_order["mongod_writes"] else None
    combined = 1 / (1 / broker_pipe + 1 / store_tx)
    return {
        "broker_pipelined_orders_per_s": round(broker_pipe, 1),
        "broker_confirm_each_orders_per_s": round(broker_each, 1),
        "store_transactions_orders_per_s": round(store_tx, 1),
        "store_single_writes_orders_per_s": round(store_writes, 1) if store_writes else None,
        "combined_orders_per_s": round(combined, 1),
    }

"""`python -m bench.analytics [--sizes 1e4,1e5,1e6] [--track-seconds 5]`: analytics at
scale, printed as one JSON document.

- fill: generated events (sessions with views, carts, checkouts and orders, members,
  campaigns with messages and ad spend, experiments, tickets) stored and folded in
  batches through the ingestion path live ingestion uses (`store.ingest_batch`,
  one transaction per batch), in a bench mongod of its own;
- queries: `get_kpis`, `top_products`, `retention_cohorts` (the cohorts of the
  range) and `campaign_roi` over the newest 30 days, at each size. The newest 30
  days always hold the same traffic (the first 10^4 events); every further event
  is older history, so flat timings mean a query's cost follows its range, not
  the raw store (the design's claim);
- rebuild: events/s of `store.rebuild` over the whole raw store at each size;
- track (with --track-seconds > 0): the analytics service started as a process
  (`python -m shared.run analytics`, its source tree given by --source, on a
  private virtual host of the broker at AMQP_URI, with a tracking key made up for
  the run), W clients posting signed batches of B tracking events to `POST /track`
  for a few seconds: events/s accepted, and the CPU seconds the service and mongod
  spent (events per CPU second);
- stream (with --stream N): N broker events published to `evt--analytics` first,
  then consumed by the service's batch handler: events/s stored;
- both (with both): the stream's N events queued first, then the service started
  and the /track clients posting while it drains them: events/s of each and
  together over the /track window (the issue's target: >= 10,000 together).

`run(...)` returns the same dictionary for `make bench`."""
from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from pymongo import MongoClient

from services.analytics import domain, store, usecases, views
from shared.security.auth import track_headers
from tools import devstack

TZ = ZoneInfo("Asia/Shanghai")
END = datetime(2026, 11, 30, 16, tzinfo=timezone.utc)  # local midnight, 1 Dec 2026
WINDOW_DAYS = 30
WINDOW_EVENTS = 10_000  # what the newest 30 days hold at every size
PRODUCTS = 300
CHANNELS = ("douyin", "baidu", "xiaohongshu")
TITLES = ("羊毛大衣", "保温杯", "无线耳机", "真丝围巾", "运动鞋", "护手霜", "台灯", "茶具套装")
ROOT = Path(__file__).resolve().parent.parent


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def envelope(source: str, event_type: str, data: dict, at: datetime) -> dict:
    return {"event_id": uuid.uuid4().hex, "event_type": event_type, "schema_version": 1,
            "source": source, "occurred_at": iso(at), "correlation_id": None,
            "causation_id": None, "data": data}


def tracking(event_type: str, data: dict, at: datetime) -> dict:
    return envelope("tracking", event_type, {**data, "occurred_at": iso(at)}, at)


class History:
    """A shop's history generated day by day backwards from END: about
    `per_day` events a day, self-contained days (an order is placed, paid and
    delivered within hours), members active for the 60 days after they register."""

    def __init__(self, per_day: int, seed: int = 1):
        self.per_day = per_day
        self.rnd = random.Random(seed)
        self.day = 0  # days before END already generated
        self.orders = 0

    def catalogue(self) -> list[dict]:
        out = []
        for i in range(PRODUCTS):
            product = f"p{i:04d}"
            out.append(envelope("catalog", "product_created", {
                "product_id": product, "sku": f"SKU{i:04d}", "title": f"{TITLES[i % len(TITLES)]} {i}",
                "category": ("apparel", "home", "beauty", "digital")[i % 4], "price": 5000 + 100 * i,
                "currency": "CNY", "merchant_id": None, "status": "published"},
                END - timedelta(days=4000)))
            out.append(envelope("catalog", "stock_adjusted", {
                "product_id": product, "delta": 100, "reason": "po", "on_hand": 100 + i % 50,
                "available": 90 + i % 50}, END - timedelta(days=4000)))
        out.append(envelope("marketing", "experiment_created", {
            "experiment_key": "exp-home", "control": "control",
            "variants": [{"name": "control", "weight": 0.5}, {"name": "red", "weight": 0.5}]},
            END - timedelta(days=4000)))
        return out

    def next_day(self) -> list[dict]:
        """The events of the next older day."""
        self.day += 1
        start = END - timedelta(days=self.day)
        rnd, out = self.rnd, []
        day_no = int(start.timestamp() // 86400)
        campaign = f"cmp-{day_no // 7}"  # a campaign a week
        if day_no % 7 == 0:
            out.append(envelope("marketing", "campaign_launched", {
                "campaign_id": campaign, "channel": "email", "segment": "active",
                "audience_size": 500}, start))
        for channel in CHANNELS:
            out.append(envelope("marketing", "ad_spend_recorded", {
                "channel": channel, "campaign_id": campaign, "amount": rnd.randint(5000, 50000),
                "currency": "CNY", "date": (start + timedelta(hours=8)).date().isoformat()}, start))
        while len(out) < self.per_day:
            out += self.visit(start + timedelta(seconds=rnd.randrange(86400 - 7200)), day_no, campaign)
        return out

    def member(self, day_no: int) -> str | None:
        if self.rnd.random() < 0.3:
            return None
        return f"m{day_no - self.rnd.randrange(60)}-{self.rnd.randrange(30)}"

    def visit(self, at: datetime, day_no: int, campaign: str) -> list[dict]:
        rnd, out = self.rnd, []
        session, member = uuid.uuid4().hex[:16], self.member(day_no)
        if member and member.startswith(f"m{day_no}-") and rnd.random() < 0.5:
            out.append(envelope("member", "member_registered", {
                "member_id": member, "region": "Shanghai", "gender": "female", "birth_year": 1990,
                "interests": [], "tier": "bronze"}, at))
        referrer = rnd.choice([None, "https://www.douyin.com/", "https://www.baidu.com/s?wd=x",
                               "https://www.xiaohongshu.com/"])
        from_campaign = rnd.random() < 0.2
        base = {"session_id": session, "member_id": member}
        out.append(tracking("session_started", {**base, "referrer": referrer, "landing_path": "/",
                                                "campaign_id": campaign if from_campaign else None},
                            at))
        out.append(tracking("page_viewed", {**base, "path": "/"}, at + timedelta(seconds=5)))
        products = [f"p{rnd.randrange(PRODUCTS):04d}" for _ in range(2)]
        for i, product in enumerate(products):
            out.append(tracking("product_viewed", {**base, "product_id": product},
                                at + timedelta(seconds=10 + i)))
        if rnd.random() < 0.5:
            out.append(tracking("cart_updated", {**base, "product_id": products[0], "quantity": 1},
                                at + timedelta(seconds=30)))
            if rnd.random() < 0.5:
                out.append(tracking("checkout_started", {**base, "cart_value": 10000, "currency": "CNY",
                                                         "item_count": 1}, at + timedelta(seconds=40)))
                if member and rnd.random() < 0.6:
                    out += self.order(at + timedelta(seconds=60), member, session, products[0],
                                      campaign if from_campaign else None)
        if member and rnd.random() < 0.1:
            out.append(envelope("marketing", "message_sent", {
                "message_id": uuid.uuid4().hex, "campaign_id": campaign, "member_id": member,
                "channel": "email", "kind": "marketing", "cost": 3}, at - timedelta(hours=1)))
            out.append(envelope("marketing", "experiment_exposed", {
                "experiment_key": "exp-home", "variant": rnd.choice(["control", "red"]),
                "subject_id": member}, at))
        return out

    def order(self, at, member, session, product, campaign) -> list[dict]:
        self.orders += 1
        order_id = f"o{self.orders}-{uuid.uuid4().hex[:6]}"
        line = {"product_id": product, "category": "home", "quantity": 1, "unit_price": 10000,
                "discount": 0, "line_total": 10000}
        out = [envelope("order", "order_placed", {
            "order_id": order_id, "member_id": member, "lines": [line], "subtotal": 10000,
            "discount": 0, "shipping_fee": 0, "total": 10000, "currency": "CNY", "coupon_code": None,
            "promotion_ids": [], "attribution": {"session_id": session, "campaign_id": campaign,
                                                 "referral_code": None}}, at),
               envelope("order", "order_paid", {
                   "order_id": order_id, "member_id": member, "lines": [line], "total": 10000,
                   "currency": "CNY", "shipping_address": {"region": "Shanghai"},
                   "payment_ref": f"pay-{order_id}"}, at + timedelta(seconds=30)),
               envelope("fulfillment", "shipment_created", {
                   "shipment_id": f"sh-{order_id}", "order_id": order_id, "warehouse_id": "w1",
                   "dispatch_due_at": iso(at + timedelta(hours=24))}, at + timedelta(minutes=5)),
               envelope("order", "order_delivered", {"order_id": order_id}, at + timedelta(hours=30))]
        if self.rnd.random() < 0.05:
            out.append(envelope("fulfillment", "ticket_opened", {
                "ticket_id": f"t-{order_id}", "member_id": member, "order_id": order_id,
                "category": "late", "first_response_due_at": iso(at + timedelta(hours=34)),
                "resolution_due_at": iso(at + timedelta(hours=80))}, at + timedelta(hours=32)))
            out.append(envelope("fulfillment", "ticket_replied", {
                "ticket_id": f"t-{order_id}", "member_id": member, "order_id": order_id,
                "category": "late"}, at + timedelta(hours=33)))
        return out


def fill(client, db, history: History, events: int, batch: int, leases) -> float:
    """Ingest about `events` generated events in batches; returns events/s."""
    done, started = 0, time.perf_counter()
    pending: list[dict] = history.catalogue() if history.day == 0 else []
    while done < events:
        while len(pending) < batch and done + len(pending) < events:
            pending += history.next_day()
        part, pending = pending[:batch], pending[batch:]
        with leases.lease(part[0]["event_id"]) as shard, client.start_session() as session:
            with session.start_transaction():
                store.ingest_batch(db, session, part, TZ, shard)
        done += len(part)
    return round(done / (time.perf_counter() - started), 1)


def time_queries(db, repeats: int, mongod_pid: int | None = None) -> dict:
    """Median wall-clock ms of each query, and (`cpu_ms`) the CPU this process and
    mongod spent per call: on a shared, loaded machine the CPU is what compares
    between sizes."""
    rng = domain.TimeRange(END - timedelta(days=WINDOW_DAYS), END)
    first, last = domain.month_key(rng.start, TZ), domain.month_key(rng.end - timedelta(seconds=1), TZ)
    calls = {
        "get_kpis": lambda: views.get_kpis(db, TZ, rng),
        "top_products": lambda: views.top_products(db, TZ, rng, 10),
        "retention_cohorts": lambda: views.retention_cohorts(db, TZ, "month", first, last),
        "campaign_roi": lambda: views.campaign_roi(db, TZ, rng, 7),
    }
    out: dict = {"cpu_ms": {}}
    for name, call in calls.items():
        call()  # warm the cache: the steady state is what an operator sees
        samples = []
        cpu = time.process_time(), cpu_seconds(mongod_pid)
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            samples.append(time.perf_counter() - started)
        spent = time.process_time() - cpu[0] + cpu_seconds(mongod_pid) - cpu[1]
        out[name] = round(statistics.median(samples) * 1000, 2)
        out["cpu_ms"][name] = round(spent / repeats * 1000, 2)
    kpis = views.get_kpis(db, TZ, rng)
    out["window"] = {"sessions": kpis["sessions"], "orders": kpis["orders"], "gmv": kpis["gmv"]}
    return out


def scale(mongo_uri: str, sizes: list[int], batch: int, repeats: int, rebuild: bool,
          mongod_pid: int | None = None) -> list[dict]:
    client = MongoClient(mongo_uri, w="majority", tz_aware=True)
    db = client[f"bench_analytics_{uuid.uuid4().hex[:6]}"]
    for name, indexes in store.INDEXES.items():
        db[name].create_indexes(indexes)
    history = History(per_day=WINDOW_EVENTS // WINDOW_DAYS)
    leases = usecases.ShardLeases(store.DEFAULT_SHARDS)
    rows = []
    try:
        for size in sizes:
            have = db.raw.estimated_document_count()
            rate = fill(client, db, history, size - have, batch, leases)
            row = {"events": db.raw.estimated_document_count(), "history_days": history.day,
                   "ingest_events_per_s": rate, "query_ms": time_queries(db, repeats, mongod_pid)}
            if rebuild:
                started = time.perf_counter()
                result = store.rebuild(db, TZ)
                row["rebuild_events_per_s"] = round(
                    (result["folded"] + result["unfolded"]) / (time.perf_counter() - started), 1)
                assert time_queries(db, 1)["window"] == row["query_ms"]["window"]  # rebuild == live
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        client.drop_database(db.name)
        client.close()
    base = rows[0]["query_ms"]
    for row in rows:
        row["query_vs_smallest"] = {k: round(v / base[k], 2) if base[k] else None
                                    for k, v in row["query_ms"].items() if k not in ("window", "cpu_ms")}
        row["query_cpu_vs_smallest"] = {k: round(v / base["cpu_ms"][k], 2) if base["cpu_ms"][k] else None
                                        for k, v in row["query_ms"]["cpu_ms"].items()}
    return rows


# --- POST /track ------------------------------------------------------------------------

def track_bodies(count: int, batch: int) -> list[bytes]:
    """`count` request bodies of `batch` unique tracking events each, encoded up front so
    the clients spend no CPU building them."""
    at = iso(END - timedelta(hours=3))
    bodies = []
    for b in range(count):
        events = []
        for i in range(batch):
            session = f"s{b}-{i // 5}"
            kind = ("session_started", "page_viewed", "product_viewed", "cart_updated",
                    "checkout_started")[i % 5]
            event = {"event_type": kind, "event_id": f"e{b}-{i}-{uuid.uuid4().hex[:6]}",
                     "session_id": session, "occurred_at": at}
            if kind in ("product_viewed", "cart_updated"):
                event["product_id"] = f"p{i % PRODUCTS:04d}"
            if kind == "cart_updated":
                event["quantity"] = 1
            events.append(event)
        bodies.append(json.dumps({"events": events}).encode())
    return bodies


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time a process has used (Linux /proc), 0 when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServiceProcess:
    """The analytics service as a process of its own (`python -m shared.run analytics`)
    on a fresh virtual host and database, from source tree `source`."""

    def __init__(self, mongo_uri: str, source: Path, track_batch: int):
        self.mongo_uri, self.source, self.track_batch = mongo_uri, source, track_batch
        # a server-side key made up for the run: /track refuses unsigned bodies
        self.key = ("bench-backend", secrets.token_urlsafe(24))
        base = os.environ.get("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
        self.vhost = f"shop-bench-{uuid.uuid4().hex[:8]}"
        self.amqp_uri = devstack.with_vhost(base, self.vhost)
        self.port = devstack.free_port()
        self.database = f"bench_track_{uuid.uuid4().hex[:6]}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        # the service's (warning and error) log, kept for a look after the run
        self.log = open(Path(tempfile.gettempdir()) / f"bench-analytics-{self.vhost}.log", "w")
        devstack.create_vhost(self.vhost)

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(self.source), "MONGO_URI": self.mongo_uri,
               "AMQP_URI": self.amqp_uri, "ANALYTICS_DB": self.database,
               "ANALYTICS_HTTP_PORT": str(self.port),
               "ANALYTICS_TRACK_MAX_BATCH": str(self.track_batch), "LOG_LEVEL": "WARNING",
               "ANALYTICS_TRACK_KEYS": f"{self.key[0]}:{self.key[1]}",
               "ANALYTICS_TRACK_SERVER_KEYS": self.key[0],
               "ANALYTICS_TRACK_RATE_PER_MINUTE": "1000000"}
        # BENCH_PROFILE=FILE: run the service under cProfile (written when it stops)
        profiled = os.environ.get("BENCH_PROFILE")
        profile = ["-m", "cProfile", "-o", profiled] if profiled else []
        self.proc = subprocess.Popen([sys.executable, *profile, "-m", "shared.run", "analytics"],
                                     cwd=self.source, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        devstack.wait_until(lambda: devstack.health_ready(self.url), 120, what="analytics ready")

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        MongoClient(self.mongo_uri).drop_database(self.database)
        devstack.delete_vhost(self.vhost)


def post_tracking(service: ServiceProcess, seconds: float, clients: int, batch: int) -> dict:
    """`clients` threads posting signed bodies of `batch` events to the running service
    for `seconds`: what was accepted, refused, and how long requests took."""
    import requests

    url = f"{service.url}/track"
    estimate = int(seconds * 20_000 / batch) + clients * 2  # more than the run can use
    bodies = [(body, {"Content-Type": "application/json", **track_headers(*service.key, body)})
              for body in track_bodies(estimate, batch)]
    lock, accepted, failed, latencies = threading.Lock(), [0], {}, []
    stop = time.perf_counter() + seconds

    def client() -> None:
        http = requests.Session()
        while time.perf_counter() < stop:
            with lock:
                if not bodies:
                    return
                body, headers = bodies.pop()
            started = time.perf_counter()
            try:
                reply = http.post(url, data=body, timeout=60, headers=headers)
                reply.raise_for_status()
            except requests.RequestException as exc:
                why = str(getattr(exc.response, "status_code", None) or type(exc).__name__)
                with lock:
                    failed[why] = failed.get(why, 0) + 1
                continue
            with lock:
                accepted[0] += reply.json()["accepted"]
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"clients": clients, "batch": batch, "seconds": round(elapsed, 2),
            "accepted": accepted[0], "failed_requests": failed,
            "events_per_s": round(accepted[0] / elapsed, 1),
            "request_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None}


def queue_stream(service: ServiceProcess, events: int) -> None:
    """Publish `events` generated broker events (no tracking ones) to the service's queue."""
    from kombu import Connection

    from shared.messaging.topology import declare_service, event_exchange

    history, sent = History(per_day=WINDOW_EVENTS // WINDOW_DAYS, seed=3), []
    while len(sent) < events:
        sent += [e for e in history.next_day() if e["source"] != "tracking"]
    with Connection(service.amqp_uri, transport_options={"confirm_publish": True}) as conn:
        declare_service(conn, "analytics")
        producer = conn.Producer(serializer="json")
        for env in sent[:events]:
            exchange = event_exchange(env["source"])
            producer.publish(env, exchange=exchange, routing_key=env["event_type"],
                             declare=[exchange], delivery_mode=2)


def stored_from_stream(db) -> int:
    return db.raw.count_documents({"source": {"$ne": "tracking"}})


def cpu_figures(events: int, service_cpu: float, mongod_cpu: float) -> dict:
    return {"service_cpu_s": round(service_cpu, 2), "mongod_cpu_s": round(mongod_cpu, 2),
            "events_per_cpu_s": round(events / (service_cpu + mongod_cpu), 1)
            if service_cpu + mongod_cpu else None}


def track(mongo_uri: str, source: Path, seconds: float, clients: int, batch: int,
          mongod_pid: int | None = None) -> dict:
    """/track alone: the clients against an idle service."""
    service = ServiceProcess(mongo_uri, source, batch)
    try:
        service.start()
        before = cpu_seconds(service.proc.pid), cpu_seconds(mongod_pid)
        out = post_tracking(service, seconds, clients, batch)
        out.update(cpu_figures(out["accepted"], cpu_seconds(service.proc.pid) - before[0],
                               cpu_seconds(mongod_pid) - before[1]))
        out["stored"] = MongoClient(mongo_uri)[service.database].raw.estimated_document_count()
        return {"source": str(source), **out, "load_average": os.getloadavg()}
    finally:
        service.close()


def stream(mongo_uri: str, source: Path, events: int, mongod_pid: int | None = None) -> dict:
    """The stream alone: `events` broker events published to evt--analytics before the
    service starts, then consumed by its batch handler: events/s from the first to the
    last stored."""
    service = ServiceProcess(mongo_uri, source, 500)
    try:
        queue_stream(service, events)
        db = MongoClient(mongo_uri, tz_aware=True)[service.database]
        cpu_mongod = cpu_seconds(mongod_pid)
        service.start()
        devstack.wait_until(lambda: db.raw.estimated_document_count() >= events, 1800,
                            interval=0.5, what="every event consumed")
        service_cpu = cpu_seconds(service.proc.pid)
        mongod_cpu = cpu_seconds(mongod_pid) - cpu_mongod
        first = db.raw.find_one(sort=[("received_at", 1)])["received_at"]
        last = db.raw.find_one(sort=[("received_at", -1)])["received_at"]
        elapsed = max((last - first).total_seconds(), 1e-3)
        return {"events": events, "seconds": round(elapsed, 2), "events_per_s": round(events / elapsed, 1),
                "service_cpu_s_incl_start": round(service_cpu, 2), "mongod_cpu_s": round(mongod_cpu, 2),
                "load_average": os.getloadavg()}
    finally:
        service.close()


def both(mongo_uri: str, source: Path, seconds: float, clients: int, batch: int, events: int,
         mongod_pid: int | None = None) -> dict:
    """/track and the stream together: `events` broker events queued, the service
    started, and the /track clients posting while the stream drains. The window is the
    /track run (the stream's backlog outlasts it when the bench is sized right:
    `stream_drained_in_window` says if it did not)."""
    service = ServiceProcess(mongo_uri, source, batch)
    try:
        queue_stream(service, events)
        db = MongoClient(mongo_uri, tz_aware=True)[service.database]
        service.start()
        devstack.wait_until(lambda: stored_from_stream(db) > 0, 120, interval=0.1,
                            what="the stream started")
        stream_before = stored_from_stream(db)
        cpu_before = cpu_seconds(service.proc.pid), cpu_seconds(mongod_pid)
        tracked = post_tracking(service, seconds, clients, batch)
        stream_done = stored_from_stream(db) - stream_before
        service_cpu = cpu_seconds(service.proc.pid) - cpu_before[0]
        mongod_cpu = cpu_seconds(mongod_pid) - cpu_before[1]
        elapsed = tracked["seconds"]
        together = tracked["accepted"] + stream_done
        return {"source": str(source), "track": tracked,
                "stream": {"events": stream_done, "events_per_s": round(stream_done / elapsed, 1)},
                "stream_drained_in_window": stream_before + stream_done >= events,
                "together_events_per_s": round(together / elapsed, 1),
                **cpu_figures(together, service_cpu, mongod_cpu), "load_average": os.getloadavg()}
    finally:
        service.close()


def run(sizes=(10_000, 100_000), batch: int = 500, repeats: int = 5, rebuild: bool = True,
        track_seconds: float = 0, clients: int = 6, track_batch: int = 500,
        source: Path = ROOT, stream_events: int = 0, together: bool = False) -> dict:
    """The whole bench against a mongod of its own; returns the JSON document."""
    out: dict = {"machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
                 "window_days": WINDOW_DAYS, "batch": batch}
    with tempfile.TemporaryDirectory() as tmp:
        mongod = devstack.Mongod(Path(tmp) / "db", devstack.free_port())
        mongod.start()
        try:
            if sizes:
                out["scale"] = scale(mongod.uri, sorted(int(s) for s in sizes), batch, repeats, rebuild,
                                     mongod.pid())
            if track_seconds > 0:
                out["track"] = track(mongod.uri, Path(source), track_seconds, clients, track_batch,
                                     mongod.pid())
            if stream_events > 0:
                out["stream"] = stream(mongod.uri, Path(source), stream_events, mongod.pid())
            if together and track_seconds > 0 and stream_events > 0:
                out["both"] = both(mongod.uri, Path(source), track_seconds, clients, track_batch,
                                   stream_events, mongod.pid())
        finally:
            mongod.stop()
    out["machine"]["load_average_at_end"] = os.getloadavg()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e4,1e5",
                        help="comma-separated event counts (1e4,1e5,1e6); empty: /track only")
    parser.add_argument("--batch", type=int, default=500, help="events per ingestion transaction")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each query (median)")
    parser.add_argument("--no-rebuild", action="store_true", help="skip timing rebuild")
    parser.add_argument("--track-seconds", type=float, default=0, help="also load POST /track")
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--track-batch", type=int, default=500)
    parser.add_argument("--stream", type=int, default=0,
                        help="also consume this many broker events through the batch handler")
    parser.add_argument("--both", action="store_true",
                        help="also run /track while the stream drains (needs --track-seconds, --stream)")
    parser.add_argument("--source", type=Path, default=ROOT,
                        help="source tree the /track service runs from (to compare versions)")
    args = parser.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    result = run(sizes, args.batch, args.repeats, not args.no_rebuild,
                 args.track_seconds, args.clients, args.track_batch, args.source, args.stream,
                 args.both)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

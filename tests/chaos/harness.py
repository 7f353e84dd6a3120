"""Crash-test harness: the whole suite as real processes on infrastructure the
test owns, a stream of orders, faults, a drain wait and a reconciliation.

    infra = Infra.start(tmp)                        # private mongod (+ private RabbitMQ node)
    shop = Shop.start(infra, workdir)               # six `python -m shared.run` processes
    world = seed(shop)                              # products, a warehouse, members, a coupon
    stream = OrderStream(shop, world, count=30)     # unique order ids, some with the coupon
    with Driver(shop, world):                       # dispatches and delivers paid orders
        stream.start(); <inject a fault>; stream.wait()
        drain(shop, world)                  # queues, outboxes, orders at rest
    report = reconcile(shop, world, stream)         # raises AssertionError listing every problem

Nothing here mocks anything: RPC over the real broker, state read straight from
each service's MongoDB database, queue depths from the broker."""
from __future__ import annotations

import dataclasses
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from contextlib import suppress
from datetime import timedelta
from pathlib import Path

import eventlet
import pymongo
import requests
from kombu import Connection

from shared import devstack
from shared.clock import to_iso, utcnow
from shared.errors import Conflict, NotFound, ShopError, ValidationFailed
from shared.topology import dead_letter_queue_name, service_queue_name
from tests.support.suite import SERVICES, ProcessSuite

TERMINAL = {"completed", "cancelled", "rejected", "partially_refunded", "refunded"}
CONSUMERS = SERVICES  # every service has an event queue (analytics consumes all)

# Business settings for crash runs: a long expiry, so a lost event shows up as a
# stuck order instead of being hidden by the expiry timer; fast payment retries and
# a short payment lease, so an order killed mid-capture recovers within the test.
CHAOS_ENV = {
    "ORDER_EXPIRY_SECONDS": "3600",
    "ORDER_TIMER_INTERVAL": "1",
    "ORDER_PAYMENT_RETRY_BASE_SECONDS": "0.5",
    "ORDER_PAYMENT_RETRY_MAX_SECONDS": "2",
    "ORDER_PAYMENT_LEASE_SECONDS": "4",
    "ORDER_MARKETING_TIMEOUT": "5",
    "CATALOG_RESERVATION_TTL": "86400",
    "MARKETING_COUPON_RESERVATION_TTL": "7200",
    "RPC_TIMEOUT": "10",
    "LOG_LEVEL": "WARNING",
}


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------- infrastructure

@dataclasses.dataclass
class Infra:
    """A private mongod and a broker: a private RabbitMQ node when the machine
    has `rabbitmq-server` (restartable), else a fresh vhost on the shared broker
    (never restarted)."""

    base: Path
    mongod: devstack.Mongod
    rabbit: devstack.PrivateRabbit | None
    amqp_uri: str
    vhost: str | None = None

    @property
    def mongo_uri(self) -> str:
        return self.mongod.uri

    @classmethod
    def start(cls, base: Path, private_broker: bool = True, shared_amqp_uri: str | None = None) -> Infra:
        base = Path(base)
        mongod = devstack.Mongod(base / "mongo" / "db", devstack.free_port())
        mongod.start()
        rabbit, vhost = None, None
        if private_broker and devstack.PrivateRabbit.available():
            # The node runs as the `rabbitmq` user: its directories must not sit
            # under pytest's private (0700) temporary directories.
            rabbit_base = Path(tempfile.mkdtemp(prefix="shop-chaos-rabbit-"))
            os.chmod(rabbit_base, 0o755)
            rabbit = devstack.PrivateRabbit(rabbit_base, devstack.free_port(),
                                            name=f"chaos{uuid.uuid4().hex[:6]}@localhost")
            amqp_uri = rabbit.start()
        else:
            vhost = f"shop-chaos-{uuid.uuid4().hex[:8]}"
            devstack.create_vhost(vhost)
            amqp_uri = devstack.with_vhost(shared_amqp_uri or "amqp://guest:guest@127.0.0.1:5672/", vhost)
        return cls(base, mongod, rabbit, amqp_uri, vhost)

    def restart_broker(self, down_seconds: float = 1.0) -> None:
        if self.rabbit is None:
            raise RuntimeError("no private broker: the shared broker is never restarted")
        self.rabbit.stop()
        time.sleep(down_seconds)
        self.rabbit.start()

    def restart_mongod(self, down_seconds: float = 1.0) -> None:
        self.mongod.stop()
        time.sleep(down_seconds)
        self.mongod.start()

    def stop(self) -> None:
        if self.rabbit is not None:
            with suppress(Exception):
                self.rabbit.stop()
            shutil.rmtree(self.rabbit.base, ignore_errors=True)
        if self.vhost is not None:
            with suppress(Exception):
                devstack.delete_vhost(self.vhost)
        with suppress(Exception):
            self.mongod.stop()


# ---------------------------------------------------------------- RPC that survives faults

class Rpc:
    """One standalone RPC connection, reopened after a broker/timeout failure.
    Typed business errors (ShopError other than timeouts) pass through."""

    def __init__(self, amqp_uri: str, timeout: float = 10):
        self.amqp_uri = amqp_uri
        self.timeout = timeout
        self._cm = None
        self._client = None

    def _open(self):
        from shared.client import connect

        if self._client is None:
            self._cm = connect(self.amqp_uri, timeout=self.timeout)
            self._client = self._cm.__enter__()
        return self._client

    def close(self) -> None:
        if self._cm is not None:
            with suppress(Exception):
                self._cm.__exit__(None, None, None)
        self._cm = self._client = None

    def call(self, service: str, method: str, *args, attempts: int = 1, **kwargs):
        """Call once per attempt; a transport failure or timeout reconnects and
        (if attempts remain) retries. Only use attempts > 1 for idempotent calls."""
        last = None
        for attempt in range(attempts):
            try:
                return getattr(getattr(self._open(), service), method)(*args, **kwargs)
            except (Conflict, NotFound, ValidationFailed):
                raise
            except ShopError as exc:  # ServiceTimeout / ServiceUnavailable: transient
                last = exc
            except Exception as exc:  # broker connection gone, reply queue lost, ...
                last = exc
                self.close()
            if attempt + 1 < attempts:
                eventlet.sleep(min(0.5 * (attempt + 1), 3))
        raise last

    def __getattr__(self, service: str):
        rpc = self

        class _Service:
            def __getattr__(self, method):
                return lambda *a, **k: rpc.call(service, method, *a, **k)

        return _Service()


# ---------------------------------------------------------------- the running suite

class Shop:
    def __init__(self, infra: Infra, suite: ProcessSuite):
        self.infra = infra
        self.suite = suite
        self.mongo = pymongo.MongoClient(infra.mongo_uri, tz_aware=True, serverSelectionTimeoutMS=30000)
        self.duplicates_before_kills = 0  # metrics of killed processes, sampled before the kill

    @classmethod
    def start(cls, infra: Infra, workdir: Path, env: dict | None = None) -> Shop:
        suite = ProcessSuite(infra.mongo_uri, infra.amqp_uri, workdir, env={**CHAOS_ENV, **(env or {})})
        started = time.monotonic()
        suite.start_all(timeout=120)
        log(f"six services ready in {time.monotonic() - started:.1f}s")
        return cls(infra, suite)

    def stop(self) -> None:
        self.suite.stop_all()
        self.mongo.close()

    def db(self, name: str):
        return self.mongo[self.suite.database(name)]

    def rpc(self, timeout: float = 10) -> Rpc:
        return Rpc(self.infra.amqp_uri, timeout)

    # faults on services
    def kill(self, name: str) -> None:
        self.duplicates_before_kills += self.duplicates_of(name)
        self.suite.kill(name)

    def stop_service(self, name: str) -> None:
        """Graceful stop (SIGTERM): the consumer goes away, its queue keeps filling."""
        import signal

        self.duplicates_before_kills += self.duplicates_of(name)
        proc = self.suite.procs[name]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

    def restart(self, name: str) -> None:
        self.suite.restart(name, timeout=120)

    def wait_all_ready(self, timeout: float = 120) -> None:
        for name in SERVICES:
            self.suite.wait_ready(name, timeout)

    # observations
    def metrics_text(self, name: str) -> str:
        try:
            return requests.get(f"http://127.0.0.1:{self.suite.ports[name]}/metrics", timeout=5).text
        except requests.RequestException:
            return ""

    def duplicates_of(self, name: str) -> int:
        total = 0.0
        for line in self.metrics_text(name).splitlines():
            if line.startswith("shop_events_duplicate_total"):
                with suppress(ValueError):
                    total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def duplicates(self) -> int:
        return self.duplicates_before_kills + sum(self.duplicates_of(name) for name in SERVICES)

    def _depths(self, names: list[str]) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        with Connection(self.infra.amqp_uri, connect_timeout=5) as conn:
            for queue in names:
                try:
                    channel = conn.channel()
                    _, count, _ = channel.queue_declare(queue, passive=True)
                    out[queue] = count
                    channel.close()
                except Exception:  # not declared (yet): no consumer ever started
                    out[queue] = None
        return out

    def in_flight(self) -> dict[str, int]:
        """Messages per event queue, ready AND unacknowledged (being handled, or held by
        a consumer that is retrying): the broker's passive declare counts only ready ones."""
        if shutil.which("rabbitmqctl") is None:
            return {}  # a broker we cannot inspect: ready counts only (queue_depths)
        args = ["list_queues", "-q", "-p", self.infra.vhost or "/", "name", "messages"]
        if self.infra.rabbit is not None:
            command = ["rabbitmqctl", "-n", self.infra.rabbit.nodename, *args]
            env = self.infra.rabbit._env()
        else:
            command, env = ["rabbitmqctl", *args], None
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=True).stdout
        counts = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].startswith("evt--") and not parts[0].endswith(".dlq"):
                counts[parts[0]] = int(parts[1])
        return counts

    def queue_depths(self) -> dict[str, int | None]:
        return self._depths([service_queue_name(s) for s in CONSUMERS])

    def dlq_depths(self) -> dict[str, int | None]:
        return self._depths([dead_letter_queue_name(s) for s in CONSUMERS])

    def outbox_pending(self) -> dict[str, int]:
        return {name: self.db(name).outbox.count_documents({"pending": True}) for name in SERVICES}


# ---------------------------------------------------------------- seed

@dataclasses.dataclass
class World:
    tag: str
    products: list[dict]           # {id, category, price, stock}
    scarce: dict                   # a product with little stock: some orders are rejected
    warehouse_id: str
    members: list[str]
    coupon_code: str
    promotion_id: str

    @property
    def product_ids(self) -> list[str]:
        return [p["id"] for p in self.products] + [self.scarce["id"]]

    def initial_stock(self) -> dict[str, int]:
        return {p["id"]: p["stock"] for p in [*self.products, self.scarce]}


def seed(shop: Shop, products: int = 4, stock: int = 500, scarce_stock: int = 6, members: int = 6) -> World:
    """Fresh products, a warehouse, members and a coupon under a new tag, so
    several tests share one running stack without seeing each other's data."""
    tag = uuid.uuid4().hex[:6]
    rpc = shop.rpc(timeout=15)
    try:
        made = []
        for index in range(products + 1):
            scarce = index == products
            category = ["apparel", "books", "home", "food"][index % 4]
            price = [2900, 4900, 7900, 12900, 19900][index % 5]
            amount = scarce_stock if scarce else stock
            product = rpc.call("catalog", "create_product", {
                "sku": f"CHAOS-{tag}-{index}", "title": f"Chaos test product {index}",
                "description": "synthetic", "category": category, "price": price, "stock": amount,
                "low_stock_threshold": 0}, attempts=1)
            rpc.call("catalog", "publish_product", product["id"], attempts=3)
            made.append({"id": product["id"], "category": category, "price": price, "stock": amount})
        warehouse = rpc.call("fulfillment", "create_warehouse", {
            "code": f"CH{tag}", "name": "Chaos DC", "region": "Shanghai", "address": "Test road 1"})
        member_ids = []
        for index in range(members):
            member = rpc.call("member", "register_member", {
                "email": f"chaos{index}.{tag}@example.com", "name": f"Chaos Tester {index}",
                "region": "Shanghai", "consent": {"email": False, "sms": False}})
            member_ids.append(member["id"])
        since = to_iso(utcnow().replace(microsecond=0) - timedelta(hours=1))
        promotion = rpc.call("marketing", "create_promotion", {
            "name": f"chaos coupon {tag}", "kind": "amount_off", "amount": 500, "trigger": "coupon",
            "starts_at": since})
        code = f"CHAOS{tag.upper()}"
        rpc.call("marketing", "create_coupons", {
            "promotion_id": promotion["id"], "code": code, "max_redemptions": None,
            "per_member_limit": None, "starts_at": since})
    finally:
        rpc.close()
    world = World(tag, made[:-1], made[-1], warehouse["id"], member_ids, code, promotion["id"])
    _wait_read_models(shop, world)
    return world


def _wait_read_models(shop: Shop, world: World, timeout: float = 60) -> None:
    """Order prices from its read models (fed by events): wait until it has them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        products = shop.db("order").products.count_documents({"_id": {"$in": world.product_ids}})
        members = shop.db("order").members.count_documents({"_id": {"$in": world.members}})
        if products == len(world.product_ids) and members == len(world.members):
            return
        eventlet.sleep(0.2)
    log("read models incomplete after seeding (order will fall back to RPC)")


# ---------------------------------------------------------------- the order stream

ADDRESS = {"name": "Chaos Tester", "line1": "1 Test Road", "city": "Shanghai", "region": "Shanghai"}


class OrderStream:
    """`count` orders, each with its own idempotency key (so its own order id),
    placed by `workers` green threads, each with one RPC connection. A call that
    fails in transit is retried with the same key: the order is placed once.
    Mix: every 3rd uses the coupon, every 7th a declined card, every 5th asks for
    the scarce product (some are rejected)."""

    def __init__(self, shop: Shop, world: World, count: int = 30, workers: int = 3,
                 pause: float = 0.05, seed_value: int | None = None):
        self.shop = shop
        self.world = world
        self.count = count
        self.workers = workers
        self.pause = pause
        self.rng = random.Random(seed_value)
        self.plans = [self._plan(i) for i in range(count)]
        self.accepted: dict[str, dict] = {}     # order id → plan
        self.failed: list[tuple[dict, str]] = []
        self.attempted = 0
        self.retried = 0
        self.duplicates_at_start = shop.duplicates()
        self._next = 0
        self._threads: list = []

    def _plan(self, index: int) -> dict:
        world = self.world
        chosen = self.rng.sample(world.products, self.rng.randint(1, 2))
        lines = [{"product_id": p["id"], "quantity": self.rng.randint(1, 3)} for p in chosen]
        if index % 5 == 4:
            lines.append({"product_id": world.scarce["id"], "quantity": 2})
        return {
            "index": index,
            "key": f"chaos-{world.tag}-{index}",
            "member_id": world.members[index % len(world.members)],
            "lines": lines,
            "coupon_code": world.coupon_code if index % 3 == 0 else None,
            "token": "tok_decline_chaos" if index % 7 == 6 else "tok_chaos_ok",
        }

    @property
    def placed(self) -> int:
        return len(self.accepted)

    def start(self, batch: int | None = None) -> OrderStream:
        """Place the next `batch` plans (default: all that are left) in the background."""
        end = self.count if batch is None else min(self._next + batch, self.count)
        queue = list(self.plans[self._next:end])
        self._next = end
        for _ in range(self.workers):
            self._threads.append(eventlet.spawn(self._work, queue))
        return self

    def run(self) -> OrderStream:
        return self.start().wait()

    def wait(self, timeout: float = 300) -> OrderStream:
        with eventlet.Timeout(timeout):
            for thread in self._threads:
                thread.wait()
        return self

    def wait_placed(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.placed + len(self.failed) < min(n, self.count):
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.placed} orders placed")
            eventlet.sleep(0.1)

    def _work(self, queue: list[dict]) -> None:
        rpc = self.shop.rpc(timeout=8)
        try:
            while queue:
                plan = queue.pop(0)
                self._place(rpc, plan)
                eventlet.sleep(self.pause)
        finally:
            rpc.close()

    def _place(self, rpc: Rpc, plan: dict, attempts: int = 40) -> None:
        error = None
        for attempt in range(attempts):
            self.attempted += 1
            if attempt:
                self.retried += 1
            try:
                order = rpc.call("order", "place_order", plan["member_id"], plan["lines"], ADDRESS,
                                 {"token": plan["token"], "method": "card"},
                                 coupon_code=plan["coupon_code"], idempotency_key=plan["key"])
                plan["order_id"] = order["id"]
                self.accepted[order["id"]] = plan
                return
            except (ValidationFailed, NotFound) as exc:  # business refusal: never accepted
                self.failed.append((plan, f"{type(exc).__name__}: {exc}"))
                return
            except Exception as exc:  # timeout / broker or service down: same key again
                error = f"{type(exc).__name__}: {exc}"
                eventlet.sleep(min(0.5 + attempt * 0.25, 2.0))
        self.failed.append((plan, f"gave up: {error}"))


# ---------------------------------------------------------------- fulfillment driver

def return_plan(order: dict) -> list[dict] | None:
    """Which completed orders the member sends back: every 8th (index 1) all of it, every
    8th (index 5) one unit of its first line; None: kept."""
    match = re.search(r"-(\d+)$", order.get("idempotency_key") or "")
    index = int(match.group(1)) if match else 0
    if index % 8 == 1:
        return [{"product_id": line["product_id"], "quantity": line["quantity"]} for line in order["lines"]]
    if index % 8 == 5:
        return [{"product_id": order["lines"][0]["product_id"], "quantity": 1}]
    return None


class Driver:
    """A green thread that dispatches and delivers every shipment of the
    world's orders (as the warehouse would), through fulfillment's RPC."""

    def __init__(self, shop: Shop, world: World, interval: float = 0.3):
        self.shop = shop
        self.world = world
        self.interval = interval
        self.running = False
        self.thread = None
        self.dispatched = 0
        self.delivered = 0
        self.returns_requested = 0
        self.returns_received = 0
        self.errors = Counter()

    def __enter__(self) -> Driver:
        self.running = True
        self.thread = eventlet.spawn(self._loop)
        return self

    def __exit__(self, *exc) -> None:
        self.running = False
        if self.thread is not None:
            self.thread.wait()

    def _loop(self) -> None:
        rpc = self.shop.rpc(timeout=8)
        try:
            while self.running:
                try:
                    self.step(rpc)
                except Exception as exc:
                    self.errors[type(exc).__name__] += 1
                eventlet.sleep(self.interval)
        finally:
            rpc.close()

    def step(self, rpc: Rpc) -> None:
        shipments = list(self.shop.db("fulfillment").shipments.find(
            {"member_id": {"$in": self.world.members}, "status": {"$in": ["created", "dispatched"]}},
            {"_id": 1, "status": 1}))
        for shipment in shipments:
            try:
                if shipment["status"] == "created":
                    rpc.call("fulfillment", "dispatch_shipment", shipment["_id"])
                    self.dispatched += 1
                else:
                    rpc.call("fulfillment", "confirm_delivery", shipment["_id"])
                    self.delivered += 1
            except Conflict:
                pass  # already moved (a retry after a lost reply): the next round sees it
            except Exception as exc:
                self.errors[type(exc).__name__] += 1
        self.return_step(rpc)

    def return_step(self, rpc: Rpc) -> None:
        """Members send some completed orders back; the warehouse receives each return
        (the first line resellable, the others damaged)."""
        unreturned = {"member_id": {"$in": self.world.members}, "status": "completed",
                      "returns.0": {"$exists": False}}
        for order in self.shop.db("order").orders.find(unreturned, {"idempotency_key": 1, "lines": 1}):
            lines = return_plan(order)
            if lines is None:
                continue
            try:
                rpc.call("order", "request_return", order["_id"], lines, "chaos test")
                self.returns_requested += 1
            except (Conflict, ValidationFailed):
                pass  # already requested (a retry after a lost reply)
            except Exception as exc:
                self.errors[type(exc).__name__] += 1
        for ret in self.shop.db("fulfillment").returns.find(
                {"member_id": {"$in": self.world.members}, "status": "expected"}):
            lines = [{"product_id": line["product_id"], "quantity": line["quantity"],
                      "condition": "resellable" if index == 0 else "damaged"}
                     for index, line in enumerate(ret["expected_lines"])]
            try:
                rpc.call("fulfillment", "receive_return", ret["_id"], lines)
                self.returns_received += 1
            except Conflict:
                pass
            except Exception as exc:
                self.errors[type(exc).__name__] += 1


# ---------------------------------------------------------------- drain

def orders_of(shop: Shop, world: World) -> list[dict]:
    return list(shop.db("order").orders.find({"member_id": {"$in": world.members}}))


def at_rest(shop: Shop, world: World) -> tuple[bool, dict]:
    depths = shop.queue_depths()
    pending = shop.outbox_pending()
    orders = orders_of(shop, world)
    statuses = Counter(o["status"] for o in orders)
    moving = {s: n for s, n in statuses.items() if s not in TERMINAL}
    for order in orders:
        if order["status"] == "completed" and return_plan(order) and not order.get("returns"):
            moving["return to request"] = moving.get("return to request", 0) + 1
        for ret in order.get("returns") or []:
            if ret.get("status") != "refunded":
                moving["return to refund"] = moving.get("return to refund", 0) + 1
    unsettled = shop.db("order").refunds.count_documents(
        {"order_id": {"$in": [o["_id"] for o in orders]}, "state": {"$ne": "succeeded"}})
    if unsettled:
        moving["refunds pending"] = unsettled
    quiet = all(not d for d in depths.values()) and not any(pending.values()) and not moving
    held = {}
    if quiet:
        held = {k: v for k, v in shop.in_flight().items() if v}
        quiet = not held
    return quiet, {"in_flight": held, "queues": {k: v for k, v in depths.items() if v}, "outbox_pending":
                   {k: v for k, v in pending.items() if v}, "non_terminal": moving}


def drain(shop: Shop, world: World, timeout: float = 120, settle: float = 1.5) -> dict:
    """Wait until every `evt--*` queue is empty, no outbox row is pending and no
    order of the world is in a state that should still progress — twice in a row,
    `settle` seconds apart (a message being handled is not counted by the broker)."""
    deadline = time.monotonic() + timeout
    started = reported = time.monotonic()
    last = {}
    while time.monotonic() < deadline:
        try:
            quiet, last = at_rest(shop, world)
        except Exception as exc:  # broker or mongod coming back
            quiet, last = False, {"error": type(exc).__name__}
        if quiet:
            eventlet.sleep(settle)
            quiet, last = at_rest(shop, world)
            if quiet:
                log(f"drained in {time.monotonic() - started:.1f}s")
                return last
        if time.monotonic() - reported > 10:
            reported = time.monotonic()
            log(f"draining: {last}")
        eventlet.sleep(0.5)
    log(f"NOT drained after {timeout}s: {last}")
    return last


# ---------------------------------------------------------------- reconciliation

@dataclasses.dataclass
class Report:
    placed: int
    completed: int
    cancelled: int
    rejected: int
    lost: int
    duplicates_suppressed: int
    dead_lettered: dict
    problems: list[str]
    refused: int = 0

    def line(self) -> str:
        return (f"orders placed={self.placed} completed={self.completed} cancelled={self.cancelled} "
                f"rejected={self.rejected} lost={self.lost} duplicates suppressed="
                f"{self.duplicates_suppressed} dead-lettered={self.dead_lettered}")


def kpis(shop: Shop) -> dict:
    rpc = shop.rpc(timeout=15)
    try:
        return rpc.call("analytics", "get_kpis", attempts=5)
    finally:
        rpc.close()


def reconcile(shop: Shop, world: World, stream: OrderStream, kpis_before: dict | None = None,
              name: str = "") -> Report:
    """Check every invariant; return the report or raise AssertionError naming every problem."""
    problems: list[str] = []
    orders = {o["_id"]: o for o in orders_of(shop, world)}

    # 1. every accepted order exists and reached a terminal state; none appeared unasked
    missing = [oid for oid in stream.accepted if oid not in orders]
    problems += [f"accepted order {oid} is not in the order database" for oid in missing]
    stuck = {oid: o["status"] for oid, o in orders.items() if o["status"] not in TERMINAL}
    problems += [f"order {oid} stuck in {status}" for oid, status in stuck.items()]
    keys = {p["key"] for p in stream.plans}
    strangers = [oid for oid, o in orders.items() if o.get("idempotency_key") not in keys]
    problems += [f"order {oid} was not placed by the stream" for oid in strangers]
    per_key = Counter(o.get("idempotency_key") for o in orders.values())
    problems += [f"idempotency key {k} made {n} orders" for k, n in per_key.items() if n > 1]
    lost = len(missing) + len(stuck)
    statuses = Counter(o["status"] for o in orders.values())
    paid = {oid: o for oid, o in orders.items() if o["status"] in ("completed", "partially_refunded",
                                                                  "refunded")}

    # 2. stock conserved: on_hand = initial − dispatched (no returns here); reserved = 0 at rest
    shipments = list(shop.db("fulfillment").shipments.find({"order_id": {"$in": list(orders)}}))
    by_order = Counter(s["order_id"] for s in shipments)
    problems += [f"order {oid} has {n} shipments" for oid, n in by_order.items() if n > 1]
    dispatched: dict[str, int] = defaultdict(int)
    for shipment in shipments:
        if shipment["status"] in ("dispatched", "delivered"):
            for line in shipment["lines"]:
                dispatched[line["product_id"]] += line["quantity"]
    ordered: dict[str, int] = defaultdict(int)
    for order in paid.values():
        for line in order["lines"]:
            ordered[line["product_id"]] += line["quantity"]
    if dict(dispatched) != dict(ordered):
        problems.append(f"units dispatched {dict(dispatched)} != units of completed orders {dict(ordered)}")
    restocked: dict[str, int] = defaultdict(int)
    returns = list(shop.db("fulfillment").returns.find({"order_id": {"$in": list(orders)}}))
    for ret in returns:
        if ret["status"] != "received":
            problems.append(f"return {ret['_id']} of {ret['order_id']} is {ret['status']}")
        for line in ret.get("received_lines") or []:
            if line["condition"] == "resellable":
                restocked[line["product_id"]] += line["quantity"]
    asked = sum(len(o.get("returns") or []) for o in orders.values())
    if asked != len(returns):
        problems.append(f"order recorded {asked} returns, fulfillment {len(returns)}")
    for product_id, initial in world.initial_stock().items():
        doc = shop.db("catalog").products.find_one({"_id": product_id}) or {}
        stock = doc.get("stock", {})
        expect = initial - dispatched.get(product_id, 0) + restocked.get(product_id, 0)
        if stock.get("on_hand") != expect or stock.get("reserved") != 0 or stock.get("available") != expect:
            levels = {k: stock.get(k) for k in ("on_hand", "reserved", "available")}
            problems.append(f"stock of {product_id}: {levels}, expected on_hand=available={expect}, "
                            "reserved=0")
        if stock.get("on_hand", 0) < 0 or stock.get("available", 0) < 0:
            problems.append(f"stock of {product_id} went negative: {stock}")
    reservations = {r["_id"]: r for r in shop.db("catalog").reservations.find(
        {"_id": {"$in": list(orders)}})}
    for oid, order in orders.items():
        state = (reservations.get(oid) or {}).get("state")
        if reservations and order["status"] == "completed" and state != "committed":
            problems.append(f"completed order {oid}: catalog reservation is {state}")
        if reservations and order["status"] == "cancelled" and state not in ("released", "cancelled"):
            problems.append(f"cancelled order {oid}: catalog reservation is {state}")

    # 3. coupon: redemptions = paid orders that used it, nothing still reserved
    coupon = shop.db("marketing").coupons.find_one({"_id": world.coupon_code}) or {}
    with_coupon = [o for o in paid.values() if o.get("coupon_code")]
    if coupon.get("redeemed", 0) != len(with_coupon) or coupon.get("used", 0) != len(with_coupon):
        problems.append(f"coupon {world.coupon_code}: used={coupon.get('used')} redeemed="
                        f"{coupon.get('redeemed')}, paid orders with it={len(with_coupon)}")

    refunded: dict[str, int] = defaultdict(int)
    for refund in shop.db("order").refunds.find({"order_id": {"$in": list(orders)}}):
        if refund.get("state") != "succeeded":
            problems.append(f"refund {refund['_id']} of {refund['order_id']} is {refund.get('state')}")
        refunded[refund["order_id"]] += refund["amount"]
    for oid, order in orders.items():
        if order.get("refunded_amount", 0) != refunded.get(oid, 0):
            problems.append(f"order {oid}: refunded_amount {order.get('refunded_amount')} != refunds "
                            f"{refunded.get(oid, 0)}")

    # 4. points: balance = ledger; one earn per completed order
    member_db = shop.db("member")
    for member_id in world.members:
        member = member_db.members.find_one({"_id": member_id}) or {}
        entries = list(member_db.ledger.find({"member_id": member_id}))
        total = sum(e["points"] for e in entries)
        if member.get("points_balance") != total:
            problems.append(f"member {member_id}: balance {member.get('points_balance')} != ledger {total}")
        earns = Counter(e.get("order_id") for e in entries if e["kind"] == "earn")
        completed = {oid for oid, o in paid.items() if o["member_id"] == member_id}
        problems += [f"member {member_id}: order {oid} earned {n} times" for oid, n in earns.items() if n > 1]
        unearned = [oid for oid in completed if oid not in earns and orders[oid]["total"] >= 100]
        problems += [f"member {member_id}: completed order {oid} earned no points" for oid in unearned]
        reversed_ = Counter()
        for e in entries:
            if e["kind"] == "reverse":
                reversed_[e.get("order_id")] += -e["points"]
        earned_points = {e.get("order_id"): e["points"] for e in entries if e["kind"] == "earn"}
        problems += [f"member {member_id}: order {oid} reversed {n} of {earned_points.get(oid, 0)} points"
                     for oid, n in reversed_.items() if n > earned_points.get(oid, 0)]
        for oid, points in earned_points.items():
            # member's rule: points are earned on the merchandise (total − shipping fee);
            # cumulative reversal = floor(earned × refunded / merchandise), all of it once
            # the refunds reach the merchandise (returning every item reverses every point)
            order, back = orders.get(oid), refunded.get(oid, 0)
            if order is None:
                continue
            base = order["total"] - order.get("shipping_fee", 0)
            expect = points if back >= base else points * back // base
            if reversed_.get(oid, 0) != expect:
                problems.append(f"member {member_id}: {oid} ({order['status']}, refunded {back} of "
                                f"{order['total']}) reversed {reversed_.get(oid, 0)} of {points} points, "
                                f"expected {expect}")
        strays = [oid for oid in earns if oid not in completed]
        problems += [f"member {member_id}: points earned for {oid}, which did not complete" for oid in strays]

    # 5. analytics: each paid order counted once with its total; KPI deltas match the orders
    analytics = {a["_id"]: a for a in shop.db("analytics").orders.find({"_id": {"$in": list(orders)}})}
    for oid, order in orders.items():
        summary = analytics.get(oid) or {}
        if oid in paid:
            if summary.get("paid_at") is None or summary.get("paid_total") != order["total"]:
                problems.append(f"analytics: paid order {oid} has {summary.get('paid_total')} "
                                f"paid_at={summary.get('paid_at')}, order total {order['total']}")
        elif summary.get("paid_at") is not None:
            problems.append(f"analytics: unpaid order {oid} ({order['status']}) counted as paid")
        if (summary.get("refunded") or 0) != refunded.get(oid, 0):
            problems.append(f"analytics: order {oid} refunded {summary.get('refunded')}, "
                            f"order refunds sum to {refunded.get(oid, 0)}")
    raw = shop.db("analytics").raw
    paid_events = Counter(r["data"]["order_id"] for r in raw.find(
        {"event_type": "order_paid", "data.order_id": {"$in": list(orders)}}, {"data.order_id": 1}))
    problems += [f"analytics: {n} order_paid events for {oid}" for oid, n in paid_events.items() if n > 1]
    if kpis_before is not None:
        after = kpis(shop)
        gmv = sum(o["total"] for o in paid.values()) - sum(refunded.values())
        if after["orders"] - kpis_before["orders"] != len(paid):
            problems.append(f"analytics orders grew by {after['orders'] - kpis_before['orders']}, "
                            f"{len(paid)} orders were paid")
        if after["gmv"] - kpis_before["gmv"] != gmv:
            problems.append(f"analytics GMV grew by {after['gmv'] - kpis_before['gmv']}, "
                            f"order records sum to {gmv} (paid totals − refunds)")

    # 6. every producer emitted each milestone once per order (an event applied twice
    #    downstream would double the effects checked above)
    outbox = shop.db("order").outbox
    for event_type in ("order_placed", "order_paid", "order_completed"):
        counts = Counter(r["envelope"]["data"]["order_id"] for r in outbox.find(
            {"event_type": event_type, "envelope.data.order_id": {"$in": list(orders)}}))
        problems += [f"order emitted {event_type} {n} times for {oid}" for oid, n in counts.items() if n > 1]

    # 7. no service process died on its own (a crash the fault did not ask for)
    problems += [f"service {name} exited (code {proc.poll()}): {shop.suite.log(name)[-600:]}"
                 for name, proc in shop.suite.procs.items() if proc.poll() is not None]

    # 8. dead letters: expected none
    dlq = shop.dlq_depths()
    dead = {k: v for k, v in dlq.items() if v}
    if dead:
        from shared.admin import list_dead_letters

        for queue in dead:
            service = queue.split("--", 1)[1].rsplit(".", 1)[0]
            for row in list_dead_letters(shop.infra.amqp_uri, service, limit=20):
                problems.append(f"dead-lettered in {service}: {row}")

    report = Report(
        placed=len(stream.accepted), completed=len(paid),
        cancelled=statuses.get("cancelled", 0), rejected=statuses.get("rejected", 0), lost=lost,
        duplicates_suppressed=shop.duplicates() - stream.duplicates_at_start, dead_lettered=dlq,
        problems=problems,
        refused=len(stream.failed))
    log(f"{name}: {report.line()}")
    print(f"{name}: orders placed={report.placed} completed={report.completed} lost={report.lost} "
          f"duplicates suppressed={report.duplicates_suppressed}", flush=True)
    if stream.failed:
        log(f"{name}: {len(stream.failed)} orders refused: {[why for _, why in stream.failed][:5]}")
    if problems:
        suspects = sorted({oid for problem in problems for oid in re.findall(r"ord_[a-z0-9]+", problem)})
        for oid in suspects[:3]:
            log(f"{name}: trace of {oid}:\n{explain_order(shop, oid)}")
        for service in SERVICES:
            errors = [line for line in shop.suite.log(service).splitlines()
                      if '"error"' in line or "Traceback" in line or "failed" in line][-8:]
            if errors:
                log(f"{name}: last errors of {service}:\n  " + "\n  ".join(e[:400] for e in errors))
        raise AssertionError(f"{name}: reconciliation failed ({len(problems)} problems):\n  "
                             + "\n  ".join(problems[:60]))
    return report


def explain_order(shop: Shop, order_id: str) -> str:
    """Where each event of one order went: published?, seen by which consumer's inbox."""
    lines = []
    order = shop.db("order").orders.find_one({"_id": order_id}) or {}
    history = [h.get('status') for h in order.get('history', [])]
    lines.append(f"status={order.get('status')} history={history}")
    events = []
    for name in SERVICES:
        for row in shop.db(name).outbox.find({"envelope.data.order_id": order_id}).sort("created_at", 1):
            events.append((name, row))
    for source, row in events:
        event_id = row["_id"]
        seen = [c for c in SERVICES if shop.db(c).inbox.find_one({"event_id": event_id})]
        raw = bool(shop.db("analytics").raw.find_one({"_id": event_id}))
        lines.append(f"  {source}.{row['event_type']} {event_id} pending={row.get('pending', False)} "
                     f"created={row.get('created_at')} published={row.get('published_at')} "
                     f"inboxes={seen} analytics_raw={raw}")
    return "\n".join(lines)


def snapshot(shop: Shop, world: World) -> dict:
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


# ---------------------------------------------------------------- re-delivery of published events

def republish_shuffled(shop: Shop, window: int = 20, seed_value: int | None = None,
                       since=None, until=None) -> int:
    """Publish every published outbox row of every service again, exactly as the
    relay would (same envelope, same event id), in an order shuffled within
    windows of `window` events. Returns how many envelopes were re-published."""
    from nameko.amqp.publish import Publisher

    from shared.topology import event_exchange

    rng = random.Random(seed_value)
    rows = []
    for name in SERVICES:
        query = {"pending": {"$exists": False}}
        if since is not None or until is not None:
            query["published_at"] = {k: v for k, v in (("$gte", since), ("$lt", until)) if v is not None}
        rows += list(shop.db(name).outbox.find(query).sort("created_at", 1))
    rows.sort(key=lambda r: r["created_at"])
    envelopes = [r["envelope"] for r in rows]
    shuffled = []
    for start in range(0, len(envelopes), window):
        chunk = envelopes[start:start + window]
        rng.shuffle(chunk)
        shuffled += chunk
    publisher = Publisher(shop.infra.amqp_uri, use_confirms=True, mandatory=False, serializer="json")
    for envelope in shuffled:
        publisher.publish(envelope, exchange=event_exchange(envelope["source"]),
                          routing_key=envelope["event_type"], declare=[event_exchange(envelope["source"])],
                          extra_headers={"nameko.correlation_id": envelope.get("correlation_id") or ""},
                          message_id=envelope["event_id"])
    return len(shuffled)

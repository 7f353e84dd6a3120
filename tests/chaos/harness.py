"""Crash-test harness: the whole suite as real processes on infrastructure the
test owns, a stream of orders recorded in the client's ledger, faults, a drain
that fails when anything is left, and a reconciliation against the ledger.

    infra = Infra.start(tmp)                        # private mongod (+ private RabbitMQ node)
    infra = Infra.start(tmp, cluster=True)          # 3-member replica set + 3-node RabbitMQ cluster
    shop = Shop.start(infra, workdir, replicas=2)   # `python -m shared.run` processes
    world = seed(shop)                              # products, a warehouse, members, a coupon
    stream = OrderStream(shop, world, count=30)     # unique order ids, each promise in stream.ledger
    with Driver(shop, world, stream.ledger):        # dispatches, delivers, returns as planned
        stream.start(); <inject a fault>; stream.wait()
        drain(shop, world)                          # raises unless queues, outboxes, orders are at rest
    report = reconcile(shop, world, stream)         # raises AssertionError listing every problem

Nothing here mocks anything: RPC over the real broker, state read straight from
each service's MongoDB database, queue depths from the broker."""
from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import suppress
from datetime import timedelta
from pathlib import Path

import eventlet
import pymongo
import requests
from kombu import Connection

from shared.clock import to_iso, utcnow
from shared.errors import Conflict, NotFound, ShopError, ValidationFailed
from shared.messaging.topology import dead_letter_queue_name, service_queue_name
from tests.chaos import ledger as ledger_rules
from tests.chaos.ledger import Ledger
from tests.chaos.reconcile import (  # noqa: F401  (the harness's public surface)
    REPORTS,
    TERMINAL,
    Report,
    explain_order,
    kpis,
    log,
    orders_of,
    reconcile,
    snapshot,
    write_summary,
)
from tests.support.suite import ROOT, SERVICES, ProcessSuite
from tools import devstack

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


# ---------------------------------------------------------------- infrastructure

@dataclasses.dataclass
class Infra:
    """MongoDB and a broker the tests own.

    - single: a private one-member replica set, and a private RabbitMQ node when the
      machine has `rabbitmq-server` (restartable), else a fresh vhost on the shared
      broker (never restarted);
    - cluster: a three-member replica set and a three-node RabbitMQ cluster, the
      services connecting to every node through a failover URI; on loopback, or with
      `hosts` one member and one node on each host (network namespaces: partitions)."""

    base: Path
    mongo: devstack.Mongod | devstack.MongoReplicaSet
    rabbit: devstack.PrivateRabbit | devstack.RabbitCluster | None
    amqp_uri: str
    vhost: str | None = None

    @property
    def mongo_uri(self) -> str:
        return self.mongo.uri

    @property
    def clustered(self) -> bool:
        return isinstance(self.rabbit, devstack.RabbitCluster)

    @property
    def mongod(self) -> devstack.Mongod:
        return self.mongo if isinstance(self.mongo, devstack.Mongod) else self.mongo.members[0]

    @classmethod
    def start(cls, base: Path, private_broker: bool = True, shared_amqp_uri: str | None = None,
              cluster: bool = False, hosts: list[devstack.Host] | None = None,
              net_ticktime: int | None = None) -> Infra:
        base = Path(base)
        if cluster:
            mongo = devstack.MongoReplicaSet(base / "mongo", hosts=hosts)
        else:
            mongo = devstack.Mongod(base / "mongo" / "db", devstack.free_port())
        mongo.start()
        rabbit, vhost = None, None
        if cluster or (private_broker and devstack.PrivateRabbit.available()):
            # The nodes run as the `rabbitmq` user: their directories must not sit
            # under pytest's private (0700) temporary directories.
            rabbit_base = Path(tempfile.mkdtemp(prefix="shop-chaos-rabbit-"))
            os.chmod(rabbit_base, 0o755)
            if cluster:
                rabbit = devstack.RabbitCluster(rabbit_base, prefix=f"chaos{uuid.uuid4().hex[:4]}n",
                                                hosts=hosts, net_ticktime=net_ticktime)
            else:
                rabbit = devstack.PrivateRabbit(rabbit_base, devstack.free_port(),
                                                name=f"chaos{uuid.uuid4().hex[:6]}@localhost")
            try:
                amqp_uri = rabbit.start()
            except BaseException:
                # nodes still booting would outlive the test (and load the machine): kill them
                for node in rabbit.nodes if cluster else [rabbit]:
                    with suppress(Exception):
                        node.kill()
                shutil.rmtree(rabbit_base, ignore_errors=True)
                with suppress(Exception):
                    mongo.stop()
                raise
        else:
            vhost = f"shop-chaos-{uuid.uuid4().hex[:8]}"
            devstack.create_vhost(vhost)
            amqp_uri = devstack.with_vhost(shared_amqp_uri or "amqp://guest:guest@127.0.0.1:5672/", vhost)
        return cls(base, mongo, rabbit, amqp_uri, vhost)

    # faults
    def restart_broker(self, down_seconds: float = 1.0, kill: bool = False) -> None:
        """Every broker node down then up (kill -9 when `kill`, else a clean stop)."""
        if self.rabbit is None:
            raise RuntimeError("no private broker: the shared broker is never restarted")
        nodes = self.rabbit.nodes if self.clustered else [self.rabbit]
        for node in nodes:
            node.kill() if kill else node.stop()
        time.sleep(down_seconds)
        devstack.RabbitCluster.start_nodes(nodes)

    def restart_mongod(self, down_seconds: float = 1.0, kill: bool = False) -> None:
        members = self.mongo.members if self.clustered else [self.mongo]
        for member in members:
            member.kill() if kill else member.stop()
        time.sleep(down_seconds)
        self.mongo.start()

    def busiest_queue(self) -> str:
        """The event queue holding the most messages now (analytics, which consumes
        every event, when they are all empty)."""
        queues = {name: info for name, info in self.rabbit.queue_members(self.vhost or "/").items()
                  if name.startswith("evt--") and not name.endswith(".dlq")}
        return max(queues, key=lambda name: (queues[name]["messages"], name == "evt--analytics"))

    def kill_queue_leader(self, queue: str) -> devstack.PrivateRabbit:
        """kill -9 the cluster node that leads `queue`'s quorum (Raft) group."""
        leader = self.rabbit.queue_members(self.vhost or "/")[queue]["leader"]
        node = self.rabbit.node_named(leader)
        node.kill()
        return node

    def kill_mongo_primary(self) -> devstack.Mongod:
        """kill -9 the replica set's primary (no step-down: an election replaces it)."""
        primary = self.mongo.wait_primary()
        primary.kill()
        return primary

    # observations
    def rabbitmqctl(self, *args: str) -> str | None:
        """rabbitmqctl against our broker (any running node of a cluster); None when the
        machine has no rabbitmqctl."""
        if shutil.which("rabbitmqctl") is None:
            return None
        if self.clustered:
            return self.rabbit.ctl(*args)
        if self.rabbit is not None:
            return self.rabbit.ctl(*args)
        return devstack.rabbitmqctl(*args)

    def stop(self) -> None:
        """Throw the test's servers away with SIGKILL: their data goes with them, and a
        clean stop of a cluster node waits on its peers (about a minute per module)."""
        if self.rabbit is not None:
            for node in self.rabbit.nodes if self.clustered else [self.rabbit]:
                with suppress(Exception):
                    node.kill()
                # the nodes' logs outlive their data, beside the test's own logs
                with suppress(OSError):
                    shutil.copytree(node.base / "log", self.base / "broker-logs" / node.base.name,
                                    dirs_exist_ok=True)
            shutil.rmtree(self.rabbit.base, ignore_errors=True)
        if self.vhost is not None:
            with suppress(Exception):
                devstack.delete_vhost(self.vhost)
        for member in self.mongo.members if self.clustered else [self.mongo]:
            with suppress(Exception):
                member.kill()


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
        from tools.client import connect

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
                log(f"rpc {service}.{method}: attempt {attempt + 1} of {attempts} failed "
                    f"({type(last).__name__}: {str(last)[:120]}); again")
                eventlet.sleep(min(0.5 * (attempt + 1), 3))
        raise last

    def write(self, service: str, method: str, *args, request_id: str, attempts: int = 4, **kwargs):
        """A write as a client under faults makes it: with a request id, repeated after
        a timeout or a lost connection; the service applies it once and a repeat gets
        the first call's result (shared.messaging.idempotency)."""
        return self.call(service, method, *args, attempts=attempts, request_id=request_id, **kwargs)

    def __getattr__(self, service: str):
        rpc = self

        class _Service:
            def __getattr__(self, method):
                return lambda *a, **k: rpc.call(service, method, *a, **k)

        return _Service()


# ---------------------------------------------------------------- the running suite

class ReplicatedSuite(ProcessSuite):
    """ProcessSuite with `replicas` processes per service, sharing the service's
    database and queue: instance labels are `catalog`, `catalog-2`, … ."""

    def __init__(self, mongo_uri: str, amqp_uri: str, workdir: Path, env: dict | None = None,
                 replicas: int = 1):
        super().__init__(mongo_uri, amqp_uri, workdir, env)
        self.instances = {(name if i == 0 else f"{name}-{i + 1}"): name
                          for name in SERVICES for i in range(replicas)}
        self.ports = {label: devstack.free_port() for label in self.instances}

    def labels(self, service: str) -> list[str]:
        return [label for label, name in self.instances.items() if name == service]

    def _env(self, label: str) -> dict:
        name = self.instances[label]
        env = super()._env(name)
        env[f"{name.upper()}_HTTP_PORT"] = str(self.ports[label])
        return env

    def start(self, label: str) -> None:
        log = open(self.workdir / f"{label}.log", "ab")
        self.procs[label] = subprocess.Popen(
            [sys.executable, "-m", "shared.run", self.instances[label]], cwd=ROOT,
            env=self._env(label), stdout=log, stderr=subprocess.STDOUT)

    def start_all(self, timeout: float = 90) -> None:
        for label in self.instances:
            self.start(label)
        for label in self.instances:
            self.wait_ready(label, timeout)


class Shop:
    def __init__(self, infra: Infra, suite: ReplicatedSuite):
        self.infra = infra
        self.suite = suite
        self.mongo = pymongo.MongoClient(infra.mongo_uri, tz_aware=True, serverSelectionTimeoutMS=30000)
        # duplicates counted by processes that were killed, sampled before each kill
        self.duplicates_before_kills: Counter = Counter()
        # each running process's last answered count: a scrape that times out on the
        # loaded machine must not count as zero (a soak round once showed -6642)
        self._duplicates_seen: dict[str, int] = {}

    @classmethod
    def start(cls, infra: Infra, workdir: Path, env: dict | None = None, replicas: int = 1) -> Shop:
        suite = ReplicatedSuite(infra.mongo_uri, infra.amqp_uri, workdir,
                                env={**CHAOS_ENV, **(env or {})}, replicas=replicas)
        started = time.monotonic()
        for label in suite.instances:
            suite.start(label)
        shop = cls(infra, suite)
        try:
            shop.wait_all_ready(timeout=600)
        except BaseException:
            shop.stop(grace=5)  # the fixture never yields: nothing else would stop them
            raise
        log(f"{len(suite.instances)} service processes ready in {time.monotonic() - started:.1f}s")
        return shop

    def stop(self, grace: float = 20) -> None:
        """SIGTERM every process, SIGKILL what is still running `grace` seconds later
        (a service shutting down towards a dead broker node can wait a long time)."""
        procs = [p for p in self.suite.procs.values() if p.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        self.mongo.close()

    def db(self, name: str):
        return self.mongo[self.suite.database(name)]

    def rpc(self, timeout: float = 10) -> Rpc:
        return Rpc(self.infra.amqp_uri, timeout)

    @property
    def labels(self) -> list[str]:
        return list(self.suite.instances)

    # faults on services (by instance label: `order` or `order-2`)
    def _sample(self, label: str) -> None:
        self.duplicates_before_kills[self.suite.instances[label]] += self.duplicates_of(label)
        self._duplicates_seen[label] = 0  # the process started next counts from zero

    def kill(self, label: str) -> None:
        self._sample(label)
        self.suite.kill(label)

    def stop_service(self, label: str) -> None:
        """Graceful stop (SIGTERM): the consumer goes away, its queue keeps filling."""
        self._sample(label)
        proc = self.suite.procs[label]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

    def restart(self, label: str) -> None:
        self.suite.restart(label, timeout=180)

    def kill_all(self) -> None:
        for label in self.labels:
            if self.suite.procs[label].poll() is None:
                self.kill(label)

    def start_all_again(self) -> None:
        for label in self.labels:
            self.suite.start(label)
        self.wait_all_ready()

    def ready(self, label: str) -> bool:
        # a service working through a backlog on a loaded machine answers its health
        # check late, not never: a generous per-request timeout
        try:
            url = f"http://127.0.0.1:{self.suite.ports[label]}/health/ready"
            return requests.get(url, timeout=15).ok
        except requests.RequestException:
            return False

    def health(self, label: str) -> str:
        """The readiness checks as the service reports them (which one fails)."""
        try:
            return requests.get(f"http://127.0.0.1:{self.suite.ports[label]}/health/ready", timeout=15).text
        except requests.RequestException as exc:
            return f"no answer: {type(exc).__name__}"

    def wait_all_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        for label in self.labels:
            while not self.ready(label):
                proc = self.suite.procs[label]
                if proc.poll() is not None:
                    raise RuntimeError(f"{label} exited: {self.suite.log(label)[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{label} not ready after {timeout}s ({self.health(label)}): "
                                       f"{self.suite.log(label)[-1500:]}")
                eventlet.sleep(0.5)

    # observations
    def metrics_text(self, label: str) -> str:
        """The process's /metrics, or "" when it does not answer with them."""
        try:
            response = requests.get(f"http://127.0.0.1:{self.suite.ports[label]}/metrics", timeout=5)
        except requests.RequestException:
            return ""
        return response.text if response.ok else ""

    def duplicates_of(self, label: str) -> int:
        """The process's duplicate count, or its last answered one when it does not answer."""
        text = self.metrics_text(label)
        if not text:
            return self._duplicates_seen.get(label, 0)
        total = 0.0
        for line in text.splitlines():
            if line.startswith("shop_events_duplicate_total"):
                with suppress(ValueError):
                    total += float(line.rsplit(" ", 1)[1])
        self._duplicates_seen[label] = int(total)
        return int(total)

    def duplicates(self) -> Counter:
        """Redeliveries each consuming service's inbox suppressed (every replica, and
        every process killed on the way)."""
        counts = Counter(self.duplicates_before_kills)
        for label, service in self.suite.instances.items():
            counts[service] += self.duplicates_of(label)
        return counts

    def exited(self) -> list[tuple[str, int, str]]:
        """Service processes that exited although no fault asked for it."""
        return [(label, proc.poll(), self.suite.log(label)[-600:])
                for label, proc in self.suite.procs.items() if proc.poll() is not None]

    def logs(self, service: str) -> str:
        return "\n".join(self.suite.log(label) for label in self.suite.labels(service))

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

    def in_flight(self) -> dict[str, int] | None:
        """Messages per event queue, ready AND unacknowledged (being handled, or held by
        a consumer that is retrying): the broker's passive declare counts only ready
        ones. None when the broker cannot be inspected (no rabbitmqctl)."""
        out = self.infra.rabbitmqctl("list_queues", "-q", "-p", self.infra.vhost or "/",
                                     "name", "messages")
        if out is None:
            return None
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

    def outbox_left(self) -> dict[str, dict[str, int]]:
        """Outbox rows not yet published, per service: pending (the relay or its sweep
        will publish them) and parked (the relay gave up: nobody will)."""
        left = {}
        for name in SERVICES:
            outbox = self.db(name).outbox
            counts = {"pending": outbox.count_documents({"pending": True}),
                      "parked": outbox.count_documents({"state": "parked"})}
            if any(counts.values()):
                left[name] = counts
        return left


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
    # The first calls after a fault healed may time out (the cluster tests seed right
    # after a partition's heal): every write is repeated with its request id.
    try:
        made = []
        for index in range(products + 1):
            scarce = index == products
            category = ["apparel", "books", "home", "food"][index % 4]
            price = [2900, 4900, 7900, 12900, 19900][index % 5]
            amount = scarce_stock if scarce else stock
            product = rpc.write("catalog", "create_product", {
                "sku": f"CHAOS-{tag}-{index}", "title": f"Chaos test product {index}",
                "description": "synthetic", "category": category, "price": price, "stock": amount,
                "low_stock_threshold": 0}, request_id=f"seed-{tag}-product-{index}")
            rpc.write("catalog", "publish_product", product["id"], request_id=f"seed-{tag}-publish-{index}")
            made.append({"id": product["id"], "category": category, "price": price, "stock": amount})
        warehouse = rpc.write("fulfillment", "create_warehouse", {
            "code": f"CH{tag}", "name": "Chaos DC", "region": "Shanghai", "address": "Test road 1"},
            request_id=f"seed-{tag}-warehouse")
        member_ids = []
        for index in range(members):
            member = rpc.write("member", "register_member", {
                "email": f"chaos{index}.{tag}@example.com", "name": f"Chaos Tester {index}",
                "region": "Shanghai", "consent": {"email": False, "sms": False}},
                request_id=f"seed-{tag}-member-{index}")
            member_ids.append(member["id"])
        since = to_iso(utcnow().replace(microsecond=0) - timedelta(hours=1))
        promotion = rpc.write("marketing", "create_promotion", {
            "name": f"chaos coupon {tag}", "kind": "amount_off", "amount": 500, "trigger": "coupon",
            "starts_at": since}, request_id=f"seed-{tag}-promotion")
        code = f"CHAOS{tag.upper()}"
        rpc.write("marketing", "create_coupons", {
            "promotion_id": promotion["id"], "code": code, "max_redemptions": None,
            "per_member_limit": None, "starts_at": since}, request_id=f"seed-{tag}-coupons")
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
    fails in transit is retried with the same key: the order is placed once. Every
    accepted order goes into `self.ledger` with what it must end as.
    Mix: every 3rd uses the coupon, every 7th a declined card, every 5th asks for
    the scarce product (contended: some are rejected)."""

    def __init__(self, shop: Shop, world: World, count: int = 30, workers: int = 3,
                 pause: float = 0.05, seed_value: int | None = None):
        self.shop = shop
        self.world = world
        self.count = count
        self.workers = workers
        self.pause = pause
        self.rng = random.Random(seed_value)
        self.plans = [self._plan(i) for i in range(count)]
        self.ledger = Ledger()
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
    def accepted(self) -> dict:
        return self.ledger.promises

    @property
    def placed(self) -> int:
        return len(self.ledger)

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

    def done(self) -> bool:
        return self.placed + len(self.failed) >= self.count

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

    def _place(self, rpc: Rpc, plan: dict, attempts: int = 60) -> None:
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
                self.ledger.accept(plan, order, self.world.scarce["id"])
                return
            except (ValidationFailed, NotFound) as exc:  # business refusal: never accepted
                self.failed.append((plan, f"{type(exc).__name__}: {exc}"))
                return
            except Exception as exc:  # timeout / broker or service down: same key again
                error = f"{type(exc).__name__}: {exc}"
                eventlet.sleep(min(0.5 + attempt * 0.25, 2.0))
        self.failed.append((plan, f"gave up: {error}"))


# ---------------------------------------------------------------- fulfillment driver

class Driver:
    """A green thread that plays the warehouse and the members: dispatches and
    delivers every shipment of the world's orders through fulfillment's RPC, asks
    for the returns the ledger plans and receives them (first line resellable)."""

    def __init__(self, shop: Shop, world: World, ledger: Ledger, interval: float = 0.3):
        self.shop = shop
        self.world = world
        self.ledger = ledger
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
        unreturned = {"member_id": {"$in": self.world.members}, "status": "completed",
                      "returns.0": {"$exists": False}}
        for order in self.shop.db("order").orders.find(unreturned, {"_id": 1}):
            promise = self.ledger.promises.get(order["_id"])
            if promise is None or not promise.returns:
                continue
            try:
                # A return is not a state transition a repeat would bounce off: a call that
                # timed out and still ran, then a second one, made two returns of one unit
                # each (the cluster soak). The request id makes the repeat the same request.
                rpc.call("order", "request_return", order["_id"], promise.returns, "chaos test",
                         request_id=f"return-{order['_id']}")
                self.returns_requested += 1
            except (Conflict, ValidationFailed):
                pass  # already requested (a retry after a lost reply: request_applied)
            except Exception as exc:
                self.errors[type(exc).__name__] += 1
        for ret in self.shop.db("fulfillment").returns.find(
                {"member_id": {"$in": self.world.members}, "status": "expected"}):
            promise = self.ledger.promises.get(ret["order_id"])
            plan = promise.returns if promise else []
            lines = [{"product_id": line["product_id"], "quantity": line["quantity"],
                      "condition": ledger_rules.condition(plan, line["product_id"])}
                     for line in ret["expected_lines"]]
            try:
                rpc.call("fulfillment", "receive_return", ret["_id"], lines)
                self.returns_received += 1
            except Conflict:
                pass
            except Exception as exc:
                self.errors[type(exc).__name__] += 1


# ---------------------------------------------------------------- drain

class NotDrained(AssertionError):
    """Something was left when the suite should have been at rest."""


def leftovers(shop: Shop, world: World, ledger: Ledger) -> dict:
    """Everything that is not at rest: messages in event queues (ready or unacked),
    outbox rows pending or parked, dead letters, orders/returns/refunds still due
    to move. Empty when at rest."""
    left: dict = {}
    depths = {k: v for k, v in shop.queue_depths().items() if v}
    if depths:
        left["queued"] = depths
    outbox = shop.outbox_left()
    if outbox:
        left["outbox"] = outbox
    dead = {k: v for k, v in shop.dlq_depths().items() if v}
    if dead:
        left["dead_letters"] = dead
    moving: Counter = Counter()
    orders = orders_of(shop, world)
    for order in orders:
        if order["status"] not in TERMINAL:
            moving[order["status"]] += 1
        promise = ledger.promises.get(order["_id"])
        if order["status"] == "completed" and promise and promise.returns and not order.get("returns"):
            moving["return to request"] += 1
        for ret in order.get("returns") or []:
            if ret.get("status") != "refunded":
                moving["return to refund"] += 1
    unsettled = shop.db("order").refunds.count_documents(
        {"order_id": {"$in": [o["_id"] for o in orders]}, "state": {"$ne": "succeeded"}})
    if unsettled:
        moving["refunds pending"] = unsettled
    if moving:
        left["moving"] = dict(moving)
    if not left:
        held = shop.in_flight()
        held = {k: v for k, v in (held or {}).items() if v}
        if held:
            left["unacked"] = held
    return left


def drain(shop: Shop, world: World, ledger: Ledger, timeout: float = 120, settle: float = 1.5) -> None:
    """Wait until nothing is left (see `leftovers`) twice in a row, `settle` seconds
    apart; raise NotDrained naming what is left after `timeout`, or at once when only
    dead letters remain (nothing will take them out)."""
    deadline = time.monotonic() + timeout
    started = reported = time.monotonic()
    left: dict = {}
    while time.monotonic() < deadline:
        try:
            left = leftovers(shop, world, ledger)
        except Exception as exc:  # broker or mongod coming back
            left = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        if not left:
            eventlet.sleep(settle)
            with suppress(Exception):
                left = leftovers(shop, world, ledger)
            if not left:
                log(f"drained in {time.monotonic() - started:.1f}s")
                return
        if set(left) == {"dead_letters"}:
            break
        if time.monotonic() - reported > 10:
            reported = time.monotonic()
            log(f"draining: {left}")
        eventlet.sleep(0.5)
    raise NotDrained(f"not at rest after {time.monotonic() - started:.0f}s: {left}")


# ---------------------------------------------------------------- re-delivery of published events

def republish_shuffled(shop: Shop, window: int = 20, seed_value: int | None = None,
                       since=None, until=None) -> list[dict]:
    """Publish every published outbox row of every service again, exactly as the
    relay would (same envelope, same event id), in an order shuffled within
    windows of `window` events. Returns the envelopes re-published."""
    from nameko.amqp.publish import Publisher

    from shared.messaging.topology import event_exchange

    rng = random.Random(seed_value)
    rows = []
    for name in SERVICES:
        # published rows carry published_at (both before and after the outbox's `state` field)
        query: dict = {"published_at": {"$exists": True}}
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
    return shuffled

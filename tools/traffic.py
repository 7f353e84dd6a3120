"""A reusable traffic generator: simulated shoppers and an operations team.

Shoppers (N green threads, each with its OWN RPC connection) start sessions at
a target rate: tracking events to analytics' `POST /track` (batched), an A/B
variant from marketing, carts, quotes and orders with coupons and attribution
(session, campaign, referral), some declined payments. An operations loop
(its own connections) walks every placed order forward: cancellations,
dispatch and delivery, returns and their receipt, customer-service tickets.

Bounded in time and count, it stops by itself; typed errors (and RPC timeouts)
are counted by type and never stop it. Returns a stats dict.

    from tools.traffic import run_traffic
    stats = run_traffic(rate=3, duration=60, workers=8, seed_data=seed(...))

    python -m tools.traffic --rate 3 --duration 60 --workers 8
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from nameko.exceptions import RemoteError

from shared.clock import to_iso, utcnow
from shared.errors import NotFound, ShopError, ValidationFailed
from shared.ids import new_id
from shared.security.auth import track_headers

# Scenario weights of a signed-in session; `buy` is scaled for the experiment's
# treatment so the A/B results show something. Anonymous visitors only browse.
SCENARIOS = {"bounce": 0.15, "browse": 0.2, "abandon_cart": 0.15, "quote_only": 0.05, "buy": 0.45}
ANONYMOUS = {"bounce": 0.45, "browse": 0.55}
TREATMENT_LIFT = 1.35
CARRIERS = ["SF Express 顺丰", "JD Logistics 京东物流", "ZTO 中通", "YTO 圆通"]
CITIES = {"Shanghai": "上海", "Beijing": "北京", "Guangdong": "广州", "Zhejiang": "杭州",
          "Sichuan": "成都"}
TICKET_TEXT = {
    "late_delivery": "快递什么时候到？(synthetic demo ticket)",
    "damaged_item": "The package arrived damaged. (synthetic demo ticket)",
    "wrong_item": "收到的颜色不对。(synthetic demo ticket)",
    "refund": "退款什么时候到账？(synthetic demo ticket)",
    "payment": "Payment failed twice, please help. (synthetic demo ticket)",
}
FINAL = ("completed", "cancelled", "rejected", "refunded", "partially_refunded")
CANCELLABLE = ("pending", "confirmed", "paid", "fulfilling")


# --- pure parts ----------------------------------------------------------------------

def weighted_choice(rng: random.Random, weights: dict[str, float]) -> str:
    total = sum(weights.values())
    point = rng.random() * total
    for name, weight in weights.items():
        point -= weight
        if point < 0:
            return name
    return next(reversed(weights))


def scenario_weights(signed_in: bool, variant: str | None, control: str = "control") -> dict[str, float]:
    if not signed_in:
        return dict(ANONYMOUS)
    weights = dict(SCENARIOS)
    if variant is not None and variant != control:
        weights["buy"] *= TREATMENT_LIFT
    return weights


def choose_scenario(rng: random.Random, signed_in: bool, variant: str | None = None,
                    control: str = "control") -> str:
    """What this session will do: bounce, browse, abandon_cart, quote_only or buy."""
    return weighted_choice(rng, scenario_weights(signed_in, variant, control))


@dataclass(frozen=True)
class Fate:
    """What will happen to a placed order after checkout."""

    decline: bool = False       # pay with a tok_decline token
    cancel: str | None = None   # None, "early" (before payment) or "after_payment"
    ret: str | None = None      # None, "partial" or "full"
    damaged: bool = False       # the returned goods arrive damaged
    ticket: str | None = None   # a ticket category, or None


def choose_fate(rng: random.Random) -> Fate:
    decline = rng.random() < 0.08
    cancel = None
    if not decline and rng.random() < 0.10:
        cancel = "early" if rng.random() < 0.4 else "after_payment"
    ret = None
    if not decline and cancel is None and rng.random() < 0.15:
        ret = "partial" if rng.random() < 0.5 else "full"
    ticket = None
    if rng.random() < 0.12:
        if decline:
            ticket = "payment"
        elif ret:
            ticket = "refund"
        else:
            ticket = rng.choice(["late_delivery", "damaged_item", "wrong_item"])
    return Fate(decline=decline, cancel=cancel, ret=ret, damaged=bool(ret) and rng.random() < 0.25,
                ticket=ticket)


class Pacer:
    """Hands out start slots `1/rate` apart, shared by every worker: the
    generator's total rate stays `rate` whatever the number of workers."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self.clock = clock
        self.next = clock()

    def claim(self) -> float:
        """Seconds to wait before the claimed slot."""
        now = self.clock()
        slot = max(self.next, now)
        self.next = slot + self.interval
        return slot - now


class TrackBatcher:
    """Buffers tracking events and sends them in batches of at most `max_batch`."""

    def __init__(self, send: Callable[[list[dict]], None], max_batch: int = 25):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.send = send
        self.max_batch = max_batch
        self.pending: list[dict] = []

    def add(self, event: dict) -> None:
        self.pending.append(event)
        if len(self.pending) >= self.max_batch:
            self.flush()

    def flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:self.max_batch], self.pending[self.max_batch:]
            self.send(batch)


class Stats:
    """Counters of what the generator did and of the errors it met (by type)."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.errors: Counter = Counter()
        self.expected: Counter = Counter()  # refusals that are part of the scenario
        self.samples: dict[str, str] = {}
        self.variants: Counter = Counter()
        self.final_status: Counter = Counter()
        self.started = time.monotonic()

    def inc(self, name: str, amount: int = 1) -> None:
        self.counts[name] += amount

    def error(self, where: str, exc: BaseException | str) -> None:
        kind = exc if isinstance(exc, str) else error_type(exc)
        self.errors[kind] += 1
        key = f"{where} {kind}"
        if key not in self.samples and len(self.samples) < 40:
            self.samples[key] = exc if isinstance(exc, str) else str(exc)[:300]

    def refused(self, where: str) -> None:
        self.expected[where] += 1

    def as_dict(self) -> dict:
        return {**{k: self.counts[k] for k in sorted(self.counts)},
                "elapsed_s": round(time.monotonic() - self.started, 1),
                "variants": dict(self.variants), "final_status": dict(self.final_status),
                "errors": dict(self.errors), "errors_total": sum(self.errors.values()),
                "error_samples": dict(self.samples), "expected_refusals": dict(self.expected)}


def error_type(exc: BaseException) -> str:
    if isinstance(exc, RemoteError):
        return f"RemoteError({exc.exc_type})"
    return type(exc).__name__


def render_progress(snapshot: dict, width: int = 30) -> str:
    """One plain-text line: a bar over the shopping time, then the settling phase."""
    duration = max(float(snapshot.get("duration") or 0), 1e-9)
    elapsed = float(snapshot.get("elapsed") or 0)
    fraction = min(max(elapsed / duration, 0.0), 1.0)
    filled = int(round(fraction * width))
    bar = "#" * filled + "-" * (width - filled)
    phase = snapshot.get("phase", "shopping")
    head = f"[{bar}] {int(fraction * 100):3d}% {min(elapsed, duration):5.0f}/{duration:.0f}s"
    if phase == "settling":
        head += f" settling {snapshot.get('open_orders', 0)} open orders"
    elif phase == "done":
        head += " done"
    return (f"{head} | sessions {snapshot.get('sessions', 0)} orders {snapshot.get('orders', 0)}"
            f" completed {snapshot.get('completed', 0)} errors {snapshot.get('errors', 0)}")


# --- the simulation ------------------------------------------------------------------

class CallFailed(Exception):
    """An RPC call raised a typed error (already counted)."""


class Caller:
    """RPC through one worker's own client, counting typed errors by type."""

    def __init__(self, rpc, stats: Stats):
        self.rpc = rpc
        self.stats = stats

    def __call__(self, service: str, method: str, *args, expected: tuple = (), **kwargs):
        self.stats.inc("rpc_calls")
        try:
            return getattr(getattr(self.rpc, service), method)(*args, **kwargs)
        except expected as exc:
            self.stats.refused(f"{service}.{method}")
            raise CallFailed(exc) from exc
        except (ShopError, RemoteError) as exc:
            self.stats.error(f"{service}.{method}", exc)
            raise CallFailed(exc) from exc


@dataclass
class OrderTrack:
    order_id: str
    member_id: str
    lines: list[dict]
    fate: Fate
    status: str = "pending"
    return_id: str | None = None
    return_received: bool = False
    ticket_id: str | None = None
    ticket_stage: str | None = None  # opened, replied, resolved
    next_check: float = 0.0
    done: bool = False
    extra: dict = field(default_factory=dict)


class Traffic:
    def __init__(self, seed_data: dict, *, rate: float, duration: float, workers: int,
                 amqp_uri: str | None, analytics_url: str, timeout: float, max_sessions: int | None,
                 ops_workers: int, ops_grace: float, rng_seed: int | None, track_batch: int,
                 track_key: tuple[str, str] | None = None):
        self.world = seed_data
        self.rate, self.duration, self.workers = rate, duration, workers
        self.amqp_uri, self.analytics_url, self.timeout = amqp_uri, analytics_url.rstrip("/"), timeout
        self.max_sessions = max_sessions
        self.ops_workers, self.ops_grace = ops_workers, ops_grace
        self.master = random.Random(rng_seed)
        self.track_batch = track_batch
        self.track_key = track_key
        self.track_timeout = max(timeout, 30.0)
        self.stats = Stats()
        self.pacer = Pacer(rate)
        self.coupons = list(seed_data.get("coupons") or [])
        self.tracks: list[OrderTrack] = []
        self.started = time.monotonic()
        self.shop_deadline = self.started + duration
        self.ops_deadline = self.shop_deadline + ops_grace
        self.shoppers_left = workers
        self.stopping = False

    # -- plumbing ---------------------------------------------------------------------
    def _connect(self):
        from tools.client import connect

        return connect(self.amqp_uri, timeout=self.timeout)

    def post_track(self, events: list[dict]) -> None:
        """POST a batch; a timeout or a 5xx is retried once with the same event ids, so
        analytics counts a batch it already stored only once."""
        body = json.dumps({"events": events}).encode()
        headers = {"Content-Type": "application/json"}
        if self.track_key:
            headers.update(track_headers(*self.track_key, body))
        for attempt in (1, 2):
            request = urllib.request.Request(f"{self.analytics_url}/track", data=body, method="POST",
                                             headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.track_timeout) as resp:
                    resp.read()
                self.stats.inc("track_posts")
                self.stats.inc("track_events", len(events))
                if attempt > 1:
                    self.stats.inc("track_retries_ok")
                return
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode(errors="replace")
                kind = f"HTTP {exc.code}"
                self.stats.samples.setdefault(f"analytics.POST /track {kind}", detail)
                if exc.code < 500 or attempt == 2:
                    self.stats.error("analytics.POST /track", kind)
                    return
            except (urllib.error.URLError, OSError) as exc:
                if attempt == 2:
                    self.stats.error("analytics.POST /track", f"TrackUnavailable({type(exc).__name__})")
                    return
            self.stats.inc("track_retries")

    def snapshot(self) -> dict:
        now = time.monotonic()
        phase = "shopping" if now < self.shop_deadline and self.shoppers_left else "settling"
        open_orders = sum(1 for t in self.tracks if not t.done)
        counts = self.stats.counts
        return {"phase": phase, "elapsed": now - self.started, "duration": self.duration,
                "sessions": counts["sessions"], "orders": counts["orders_placed"],
                "completed": counts["completed_seen"],
                "open_orders": open_orders, "errors": sum(self.stats.errors.values())}

    def _shopping_open(self) -> bool:
        if self.stopping or time.monotonic() >= self.shop_deadline:
            return False
        return self.max_sessions is None or self.stats.counts["sessions_started"] < self.max_sessions

    # -- shoppers ---------------------------------------------------------------------
    def shopper_worker(self, index: int) -> None:
        import eventlet

        rng = random.Random(self.master.random())
        try:
            while self._shopping_open():
                try:
                    with self._connect() as rpc:
                        caller = Caller(rpc, self.stats)
                        batcher = TrackBatcher(self.post_track, self.track_batch)
                        try:
                            while True:
                                eventlet.sleep(self.pacer.claim())
                                if not self._shopping_open():
                                    return
                                self.stats.inc("sessions_started")
                                self.session(caller, batcher, rng)
                        finally:
                            batcher.flush()
                except Exception as exc:  # the broker went away: count, back off, reconnect
                    self.stats.error("shopper", exc)
                    eventlet.sleep(1.0)
        finally:
            self.shoppers_left -= 1

    def _event(self, event_type: str, session_id: str, member_id: str | None, **data) -> dict:
        return {"event_type": event_type, "event_id": new_id("trk"), "session_id": session_id,
                "member_id": member_id, "occurred_at": to_iso(utcnow()), **data}

    def session(self, call: Caller, batcher: TrackBatcher, rng: random.Random) -> None:
        world = self.world
        members, products = world.get("members") or [], world["products"]
        member = rng.choice(members) if members and rng.random() < 0.85 else None
        member_id = member["id"] if member else None
        session_id = new_id("ses")
        self.stats.inc("sessions")
        source = rng.random()
        campaign_id = world.get("campaign_id") if source < 0.2 else None
        referral = rng.choice(world["referral_codes"]) if 0.2 <= source < 0.3 and world.get(
            "referral_codes") else None
        landing = "/promo/winter" if campaign_id else ("/r/" + referral if referral else "/")
        batcher.add(self._event("session_started", session_id, member_id, landing_path=landing,
                                referrer=rng.choice(["https://www.douyin.com/", "https://weixin.qq.com/",
                                                     "https://www.xiaohongshu.com/", None]),
                                campaign_id=campaign_id, referral_code=referral,
                                device=rng.choice(["mobile", "mobile", "desktop", "tablet"])))
        batcher.add(self._event("page_viewed", session_id, member_id, path=landing, referrer=None))
        variant = None
        if member_id and world.get("experiment_key"):
            try:
                assigned = call("marketing", "assign_variant", world["experiment_key"], member_id)
                variant = assigned.get("variant")
                self.stats.variants[variant] += 1
                if assigned.get("exposed"):
                    self.stats.inc("exposures")
            except CallFailed:
                pass
        scenario = choose_scenario(rng, member_id is not None, variant)
        self.stats.inc(f"scenario_{scenario}")
        if not member_id:
            self.stats.inc("anonymous_sessions")
        if scenario == "bounce":
            return
        liked = set(member["interests"]) if member else set()
        pool = [p for p in products if p["category"] in liked] or products
        viewed = rng.sample(pool, min(len(pool), rng.randint(1, 4)))
        if rng.random() < 0.3:
            viewed.append(rng.choice(products))
        for product in viewed:
            batcher.add(self._event("page_viewed", session_id, member_id, path=f"/product/{product['id']}",
                                    referrer=landing))
            batcher.add(self._event("product_viewed", session_id, member_id, product_id=product["id"],
                                    category=product["category"]))
            self.stats.inc("product_views")
        if scenario == "browse":
            return
        cart: dict[str, int] = {}
        for product in rng.sample(viewed, rng.randint(1, min(3, len(viewed)))):
            cart[product["id"]] = rng.choice([1, 1, 1, 2])
            batcher.add(self._event("cart_updated", session_id, member_id, product_id=product["id"],
                                    quantity=cart[product["id"]]))
        self.stats.inc("carts")
        if scenario == "abandon_cart":
            return
        prices = {p["id"]: p["price"] for p in products}
        batcher.add(self._event("checkout_started", session_id, member_id,
                                cart_value=sum(prices[p] * q for p, q in cart.items()),
                                currency=world.get("currency", "CNY"), item_count=sum(cart.values())))
        self.stats.inc("checkouts")
        batcher.flush()  # the session is on record before its order
        lines = [{"product_id": p, "quantity": q} for p, q in cart.items()]
        coupon = None
        if rng.random() < 0.35:
            coupon = self.coupons.pop() if self.coupons else world.get("shared_coupon")
        try:
            call("order", "quote", member_id, lines, coupon_code=coupon,
                 expected=(ValidationFailed,) if coupon else ())
            self.stats.inc("quotes")
        except CallFailed as failed:
            if coupon is None:
                return
            self.stats.inc("coupon_refused")
            coupon = None  # the shopper drops the coupon and carries on
            if isinstance(failed.__cause__, NotFound):
                return
            try:
                call("order", "quote", member_id, lines)
                self.stats.inc("quotes")
            except CallFailed:
                return
        if scenario == "quote_only":
            return
        fate = choose_fate(rng)
        region = member.get("region") or "Shanghai"
        address = {"name": "测试收件人 Demo Recipient", "line1": f"演示路 {rng.randint(1, 999)} 号",
                   "city": CITIES.get(region, region), "region": region, "postal_code": "200000",
                   "country": "CN"}
        token = "tok_decline_demo" if fate.decline else f"tok_demo_{rng.randint(1000, 9999)}"
        attribution = {"session_id": session_id, "campaign_id": campaign_id, "referral_code": referral}
        try:
            order = call("order", "place_order", member_id, lines, address,
                         {"token": token, "method": rng.choice(["card", "wallet"])},
                         coupon_code=coupon, idempotency_key=session_id, attribution=attribution)
        except CallFailed:
            return
        self.stats.inc("orders_placed")
        if coupon:
            self.stats.inc("orders_with_coupon")
        if campaign_id or referral:
            self.stats.inc("orders_attributed")
        if fate.decline:
            self.stats.inc("declines_sent")
        self.tracks.append(OrderTrack(order["id"], member_id, lines, fate,
                                      next_check=time.monotonic() + 0.5))

    # -- operations -------------------------------------------------------------------
    def ops_open(self) -> bool:
        if self.stopping or time.monotonic() >= self.ops_deadline:
            return False
        if self.shoppers_left or time.monotonic() < self.shop_deadline:
            return True
        return any(not t.done for t in self.tracks)

    def ops_worker(self, index: int) -> None:
        import eventlet

        rng = random.Random(self.master.random())
        cursor = index
        while self.ops_open():
            try:
                with self._connect() as rpc:
                    call = Caller(rpc, self.stats)
                    while self.ops_open():
                        track = self._next_due(cursor)
                        cursor += 1
                        if track is None:
                            eventlet.sleep(0.2)
                            continue
                        track.next_check = time.monotonic() + 0.6 + rng.random() * 0.6
                        track.extra["busy"] = True
                        try:
                            self.step(call, track, rng)
                        finally:
                            track.extra["busy"] = False
            except Exception as exc:
                self.stats.error("operations", exc)
                eventlet.sleep(1.0)

    def _next_due(self, cursor: int) -> OrderTrack | None:
        now = time.monotonic()
        due = [t for t in self.tracks if not t.done and not t.extra.get("busy") and t.next_check <= now]
        if not due:
            return None
        return min(due, key=lambda t: t.next_check)

    def step(self, call: Caller, track: OrderTrack, rng: random.Random) -> None:
        """Move one order one step along its fate."""
        try:
            order = call("order", "get_order", track.order_id)
        except CallFailed:
            return
        status = track.status = order["status"]
        fate = track.fate
        if fate.cancel and status in CANCELLABLE and not track.extra.get("cancel_tried"):
            if fate.cancel == "early" or status in ("paid", "fulfilling"):
                track.extra["cancel_tried"] = True
                try:
                    call("order", "cancel_order", track.order_id, "member")
                    self.stats.inc("cancellations")
                    if status in ("paid", "fulfilling"):
                        self.stats.inc("cancellations_after_payment")
                except CallFailed as failed:
                    if "in progress" in str(failed.__cause__):
                        track.extra["cancel_tried"] = False  # a payment attempt holds it: later
                return
        if status in ("paid", "fulfilling"):
            self._dispatch(call, track, rng)
        elif status == "shipped":
            self._deliver(call, track)
        elif status in ("delivered", "completed", "partially_refunded"):
            self._after_sales(call, track, rng)
        if fate.ticket:
            self._ticket(call, track, status)
        self._maybe_done(track, status)

    def _dispatch(self, call: Caller, track: OrderTrack, rng: random.Random) -> None:
        if track.fate.cancel == "after_payment" and not track.extra.get("cancel_tried"):
            return  # the member cancels first
        try:
            shipment = call("fulfillment", "get_shipment_for_order", track.order_id, expected=(NotFound,))
        except CallFailed:
            return
        if shipment["status"] == "created":
            try:
                call("fulfillment", "dispatch_shipment", shipment["id"], carrier=rng.choice(CARRIERS))
                self.stats.inc("dispatched")
            except CallFailed:
                pass

    def _deliver(self, call: Caller, track: OrderTrack) -> None:
        try:
            shipment = call("fulfillment", "get_shipment_for_order", track.order_id, expected=(NotFound,))
        except CallFailed:
            return
        if shipment["status"] == "dispatched":
            try:
                call("fulfillment", "add_tracking_event", shipment["id"],
                     {"status": "out_for_delivery", "location": track.extra.get("city", "配送站")})
                call("fulfillment", "confirm_delivery", shipment["id"])
                self.stats.inc("delivered")
            except CallFailed:
                pass

    def _after_sales(self, call: Caller, track: OrderTrack, rng: random.Random) -> None:
        if track.status == "completed" and not track.extra.get("completed_counted"):
            track.extra["completed_counted"] = True
            self.stats.inc("completed_seen")
        fate = track.fate
        if not fate.ret or track.return_received or track.extra.get("return_refused"):
            return
        if track.return_id is None:
            if fate.ret == "full":
                lines = track.lines
            else:
                first = track.lines[0]
                lines = [{"product_id": first["product_id"], "quantity": 1}]
            try:
                ret = call("order", "request_return", track.order_id, lines,
                           rng.choice(["size_issue", "not_as_described", "changed_mind", "damaged"]))
                track.return_id = ret["id"]
                self.stats.inc("returns_requested")
            except CallFailed:
                track.extra["return_refused"] = True  # window or quantities: nothing to receive
            return
        lines = None
        if fate.damaged:
            lines = [{"product_id": line["product_id"], "quantity": line["quantity"], "condition": "damaged"}
                     for line in (track.lines if fate.ret == "full" else track.lines[:1])]
            if fate.ret != "full":
                lines[0]["quantity"] = 1
        try:
            call("fulfillment", "receive_return", track.return_id, lines, expected=(NotFound,))
            self.stats.inc("returns_received")
            track.return_received = True
        except CallFailed as failed:
            if not isinstance(failed.__cause__, NotFound):
                track.extra["return_refused"] = True

    def _ticket(self, call: Caller, track: OrderTrack, status: str) -> None:
        category = track.fate.ticket
        settled = status in FINAL or status in ("delivered",) or (status == "shipped" and
                                                                  category == "late_delivery")
        try:
            if track.ticket_stage is None and settled:
                ticket = call("fulfillment", "open_ticket", track.member_id, track.order_id, category,
                              TICKET_TEXT.get(category, "Demo ticket (synthetic)."))
                track.ticket_id, track.ticket_stage = ticket["id"], "opened"
                self.stats.inc("tickets_opened")
            elif track.ticket_stage == "opened":
                call("fulfillment", "reply_ticket", track.ticket_id,
                     "您好，我们已经在处理，请稍候。We are on it. (demo agent)")
                track.ticket_stage = "replied"
                self.stats.inc("tickets_replied")
            elif track.ticket_stage == "replied":
                call("fulfillment", "resolve_ticket", track.ticket_id, "Resolved for the member (demo).")
                track.ticket_stage = "resolved"
                self.stats.inc("tickets_resolved")
        except CallFailed:
            track.ticket_stage = "failed"

    def _maybe_done(self, track: OrderTrack, status: str) -> None:
        if status not in FINAL:
            return
        returning = track.fate.ret and not track.extra.get("return_refused")
        if returning and status not in ("cancelled", "rejected"):
            if not track.return_received or status not in ("refunded", "partially_refunded"):
                return  # the refund follows the receipt
        if track.fate.ticket and track.ticket_stage not in ("resolved", "failed"):
            return
        track.done = True

    # -- the run ----------------------------------------------------------------------
    def run(self, progress: Callable[[dict], None] | None, progress_interval: float) -> dict:
        import eventlet

        threads = [eventlet.spawn(self.shopper_worker, i) for i in range(self.workers)]
        threads += [eventlet.spawn(self.ops_worker, i) for i in range(self.ops_workers)]
        try:
            hard_stop = self.ops_deadline + max(30.0, 2 * self.timeout)
            while any(not t.dead for t in threads) and time.monotonic() < hard_stop:
                eventlet.sleep(progress_interval)
                if progress:
                    progress(self.snapshot())
        finally:
            self.stopping = True
            for thread in threads:
                try:
                    thread.wait() if thread.dead else thread.kill()
                except Exception:  # already counted by the worker
                    pass
        for track in self.tracks:
            self.stats.final_status[track.status] += 1
        self.stats.inc("open_at_end", sum(1 for t in self.tracks if not t.done))
        result = self.stats.as_dict()
        result["order_ids"] = [t.order_id for t in self.tracks]
        if progress:
            progress({**self.snapshot(), "phase": "done"})
        return result


def default_track_key() -> tuple[str, str] | None:
    """The key `POST /track` is signed with: $TRACK_KEY (`id:secret`), else the local
    stack's (.run/secrets.json, made by `make up`), else none (analytics answers 401)."""
    raw = os.environ.get("TRACK_KEY", "")
    if ":" in raw:
        key_id, _, secret = raw.partition(":")
        return key_id, secret
    from tools.stack import SECRETS, local_secrets

    if SECRETS.exists():
        keys = local_secrets()
        return keys["track_key_id"], keys["track_secret"]
    return None


def default_analytics_url() -> str:
    from shared.config import Settings

    settings = Settings.from_env("analytics")
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "") else settings.http_host
    return f"http://{host}:{settings.http_port}"


def run_traffic(rate: float = 3.0, duration: float = 60.0, workers: int = 8, seed_data: dict | None = None,
                progress: Callable[[dict], None] | None = None, *, amqp_uri: str | None = None,
                analytics_url: str | None = None, timeout: float = 10.0, max_sessions: int | None = None,
                ops_workers: int = 2, ops_grace: float | None = None, rng_seed: int | None = None,
                track_batch: int = 10, progress_interval: float = 0.5,
                track_key: tuple[str, str] | None = None) -> dict:
    """Simulate shoppers for `duration` seconds at `rate` sessions per second over
    `workers` green threads (one RPC connection each), then let operations settle
    the placed orders for at most `ops_grace` seconds. Returns the stats dict.
    Needs eventlet monkey patching (`shared.green.patch()`) in the process."""
    if seed_data is None:
        raise ValueError("seed_data is required (see tools.seed.seed)")
    if workers < 1 or duration <= 0:
        raise ValueError("workers must be at least 1 and duration positive")
    grace = ops_grace if ops_grace is not None else max(10.0, min(30.0, duration / 2))
    traffic = Traffic(seed_data, rate=rate, duration=duration, workers=workers, amqp_uri=amqp_uri,
                      analytics_url=analytics_url or default_analytics_url(), timeout=timeout,
                      max_sessions=max_sessions, ops_workers=ops_workers, ops_grace=grace,
                      rng_seed=rng_seed, track_batch=track_batch,
                      track_key=track_key or default_track_key())
    return traffic.run(progress, progress_interval)


class ProgressPrinter:
    """Renders progress snapshots on a stream: one rewritten line on a terminal,
    a new line every `every` seconds otherwise (logs, CI)."""

    def __init__(self, stream=None, every: float = 5.0):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self.last = -1e9

    def __call__(self, snapshot: dict) -> None:
        line = render_progress(snapshot)
        if self.tty:
            self.stream.write("\r" + line.ljust(120)[:160])
            if snapshot.get("phase") == "done":
                self.stream.write("\n")
        else:
            now = time.monotonic()
            if now - self.last >= self.every or snapshot.get("phase") == "done":
                self.last = now
                self.stream.write(line + "\n")
        self.stream.flush()


def main(argv=None) -> None:
    from shared.green import patch

    patch()
    parser = argparse.ArgumentParser(prog="python -m tools.traffic", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=3.0, help="sessions per second (default 3)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of shopping (default 60)")
    parser.add_argument("--workers", type=int, default=8, help="shopper green threads (default 8)")
    parser.add_argument("--max-sessions", type=int, default=None)
    parser.add_argument("--members", type=int, default=40, help="members to seed (default 40)")
    parser.add_argument("--seed-file", help="JSON written by `python -m tools.seed` (default: seed now)")
    parser.add_argument("--analytics-url", default=None, help="default http://127.0.0.1:8006")
    parser.add_argument("--amqp-uri", default=None, help="default AMQP_URI")
    parser.add_argument("--track-key", default=None,
                        help="ID:SECRET signing POST /track (default $TRACK_KEY, else .run/secrets.json)")
    args = parser.parse_args(argv)
    if args.seed_file:
        with open(args.seed_file, encoding="utf-8") as handle:
            data = json.load(handle)
    else:
        from tools.seed import seed

        data = seed(amqp_uri=args.amqp_uri, members=args.members,
                    say=lambda m: print(f"[seed] {m}", file=sys.stderr, flush=True))
    stats = run_traffic(args.rate, args.duration, args.workers, data, progress=ProgressPrinter(),
                        amqp_uri=args.amqp_uri, analytics_url=args.analytics_url,
                        max_sessions=args.max_sessions,
                        track_key=tuple(args.track_key.split(":", 1)) if args.track_key else None)
    stats.pop("order_ids", None)
    print(json.dumps(stats, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()

"""The member service's entrypoints: RPC, order-event handlers and the maintenance timer.

Each entrypoint calls one use case (usecases.py), which validates, runs one transaction
(state + outbox) and returns a plain dict."""
from __future__ import annotations

from nameko.timer import timer

from services.member import domain, usecases
from services.member import store as st
from services.member.config import Config
from shared.clock import parse_iso, utcnow
from shared.config import env_float
from shared.messaging.rpc import rpc
from shared.messaging.subscriptions import handles
from shared.security.guard import Bool, Id, Int, Items, Page, PageSize, Payload, Text, When
from shared.service import ShopService
from shared.storage.store import Store

MAINTENANCE_INTERVAL = env_float("MEMBER_MAINTENANCE_INTERVAL", 60.0)


class MemberService(ShopService):
    name = "member"
    store = Store(indexes=st.INDEXES)
    config = Config()

    # ------------------------------------------------------------------ profile

    @rpc(schema={"member": Payload()})
    def register_member(self, member):
        return usecases.register_member(self.store, self.config, member)

    @rpc(schema={"member_id": Id(), "now": When()})
    def get_member(self, member_id, now=None):
        return usecases.get_member(self.store, self.config, member_id, now)

    @rpc(schema={"member_id": Id(), "changes": Payload()})
    def update_profile(self, member_id, changes):
        return usecases.update_profile(self.store, self.config, member_id, changes)

    @rpc(schema={"member_id": Id()})
    def erase_member(self, member_id):
        return usecases.erase_member(self.store, member_id)

    @rpc(schema={"member_id": Id(), "channel": Text(32), "granted": Bool()})
    def update_consent(self, member_id, channel, granted):
        return usecases.update_consent(self.store, member_id, channel, granted)

    @rpc(schema={"member_id": Id()})
    def get_consent(self, member_id):
        return usecases.get_consent(self.store, member_id)

    @rpc(schema={"channel": Text(32), "member_ids": Items(Id()), "page": Page(), "page_size": PageSize()})
    def list_contactable(self, channel, member_ids=None, page=1, page_size=100):
        return usecases.list_contactable(self.store, channel, member_ids, page, page_size)

    @rpc(schema={"member_id": Id(), "channel": Text(32)})
    def get_contact(self, member_id, channel):
        return usecases.get_contact(self.store, member_id, channel)

    @rpc(schema={"member_id": Id(), "limit": Int(1, 1000)})
    def get_points(self, member_id, limit=20):
        return usecases.get_points(self.store, member_id, limit)

    @rpc(schema={"member_id": Id(), "points": Int(), "reason": Text(200), "request_id": Id()})
    def redeem_points(self, member_id, points, reason, request_id=None):
        return usecases.redeem_points(self.store, member_id, points, reason, request_id)

    @rpc(schema={"member_id": Id(), "now": When()})
    def get_segment(self, member_id, now=None):
        return usecases.get_segment(self.store, self.config, member_id, now)

    @rpc(schema={"name": Text(64), "page": Page(), "page_size": PageSize(), "now": When()})
    def list_segment(self, name, page=1, page_size=50, now=None):
        return usecases.list_segment(self.store, self.config, name, page, page_size, now)

    @rpc(schema={})
    def get_tiers(self):
        return usecases.get_tiers(self.config)

    @rpc(schema={"now": When()})
    def run_expiry(self, now=None):
        return usecases.run_expiry(self.store, self.config, now)

    @rpc(schema={"now": When()})
    def run_tier_review(self, now=None):
        return usecases.run_tier_review(self.store, self.config, now)

    @timer(interval=MAINTENANCE_INTERVAL)
    def run_maintenance(self):
        now = utcnow()
        usecases.expire_points(self.store, self.config, now)
        usecases.review_tiers(self.store, self.config, now)

    @handles("order", "order_paid", one_at_a_time=domain.member_keys)
    def on_order_paid(self, envelope):
        data = envelope["data"]
        usecases.count_paid(self.store, self.config, data["order_id"], data["member_id"], data["total"],
                            domain.merchandise_total(data), parse_iso(envelope["occurred_at"]),
                            completed=False)

    @handles("order", "order_completed", one_at_a_time=domain.member_keys)
    def on_order_completed(self, envelope):
        data = envelope["data"]
        usecases.count_paid(self.store, self.config, data["order_id"], data["member_id"], data["total"],
                            domain.merchandise_total(data), parse_iso(envelope["occurred_at"]),
                            completed=True)

    @handles("order", "order_refunded", one_at_a_time=domain.member_keys)
    def on_order_refunded(self, envelope):
        usecases.count_refund(self.store, self.config, envelope["data"])

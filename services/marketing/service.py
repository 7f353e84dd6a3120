"""The marketing nameko service: entrypoints only. Each one validates its clock argument, if it
takes one, and calls a use case in `usecases/` (`carts`, `promotions`, `coupons`, `campaigns`,
`notifications`, `order_events`, `attribution`, `experiments`, `recommendations`) or
`readmodels`, which validates its payload and runs one transaction (state + events)."""
from __future__ import annotations

from datetime import datetime

from nameko.timer import timer

from services.marketing import domain, readmodels
from services.marketing.channels import Channels
from services.marketing.config import Config, sweep_interval_from_env
from services.marketing.store import INDEXES
from services.marketing.usecases import (
    attribution,
    campaigns,
    carts,
    coupons,
    experiments,
    notifications,
    order_events,
    promotions,
    recommendations,
)
from shared.clock import parse_iso, utcnow
from shared.errors import ValidationFailed
from shared.messaging.rpc import RpcClient, rpc
from shared.messaging.subscriptions import handles
from shared.observability.logs import get_logger
from shared.security.guard import Id, Int, Objects, Payload, Text, When
from shared.service import ShopService
from shared.storage.store import Store

log = get_logger(__name__)


def _now(now: str | None) -> datetime:
    """The business clock of an entrypoint that takes one (tests, operators); else the time."""
    if now is None:
        return utcnow()
    try:
        return parse_iso(now)
    except ValueError:
        raise ValidationFailed.field("now", "Not an ISO 8601 timestamp.") from None


class MarketingService(ShopService):
    name = "marketing"
    store = Store(indexes=INDEXES)
    config = Config()
    channels = Channels()
    member = RpcClient("member")

    # --- pricing ------------------------------------------------------------------------

    @rpc(schema={"member_id": Id(), "lines": Objects(max=200), "coupon_code": Id(), "tier": Text(64),
                 "order_id": Id()})
    def price_cart(self, member_id, lines, coupon_code=None, tier=None, order_id=None):
        return carts.price_cart(self.store, self.config, utcnow(), member_id=member_id,
                                lines=lines, coupon_code=coupon_code, tier=tier,
                                order_id=order_id)

    # --- promotions ---------------------------------------------------------------------

    @rpc(schema={"promotion": Payload()})
    def create_promotion(self, promotion):
        return promotions.create_promotion(self.store, promotion, utcnow())

    @rpc(schema={"promotion_id": Id()})
    def get_promotion(self, promotion_id):
        return promotions.get_promotion(self.store, promotion_id)

    @rpc(schema={"status": Text(32)})
    def list_promotions(self, status=None):
        return promotions.list_promotions(self.store, status)

    @rpc(schema={"promotion_id": Id(), "now": When()})
    def end_promotion(self, promotion_id, now=None):
        return promotions.end_promotion(self.store, promotion_id, _now(now))

    # --- coupons ------------------------------------------------------------------------

    @rpc(schema={"batch": Payload()})
    def create_coupons(self, batch):
        return coupons.create_coupons(self.store, batch, utcnow())

    @rpc(schema={"code": Id()})
    def get_coupon(self, code):
        return coupons.get_coupon(self.store, code)

    @rpc(schema={"code": Id(), "member_id": Id(), "subtotal": Int(0)})
    def validate_coupon(self, code, member_id, subtotal):
        return coupons.validate_coupon(self.store, code, member_id, subtotal, utcnow())

    @rpc(schema={"order_id": Id()})
    def get_coupon_reservation(self, order_id):
        return coupons.get_coupon_reservation(self.store, order_id)

    @rpc(schema={"now": When()})
    def run_expiry(self, now=None):
        """Release coupon reservations past their TTL and send campaign messages that are due.
        The timer calls it; tests call it with an explicit `now`."""
        moment = _now(now)
        released = coupons.release_expired(self.store, moment)
        dispatched = campaigns.dispatch_due(self.store, self.config, self.channels, self.member,
                                            moment)
        return {"released": released, "campaigns": dispatched}

    @timer(interval=sweep_interval_from_env())
    def sweep(self):
        try:
            self.run_expiry()
        except Exception as exc:  # a store or member outage: the next round tries again
            log.warning("marketing_sweep_failed", error=type(exc).__name__)

    # --- campaigns ----------------------------------------------------------------------

    @rpc(schema={"campaign": Payload()})
    def create_campaign(self, campaign):
        return campaigns.create_campaign(self.store, self.config, campaign, utcnow())

    @rpc(schema={"campaign_id": Id()})
    def get_campaign(self, campaign_id):
        return campaigns.get_campaign(self.store, campaign_id)

    @rpc(schema={"campaign_id": Id(), "now": When()})
    def launch_campaign(self, campaign_id, now=None):
        return campaigns.launch_campaign(self.store, self.config, self.channels, self.member,
                                         campaign_id, _now(now))

    @rpc(schema={"member_id": Id(), "campaign_id": Id(), "kind": Text(32)})
    def list_messages(self, member_id=None, campaign_id=None, kind=None):
        return notifications.list_messages(self.store, member_id, campaign_id, kind)

    @rpc(schema={"member_id": Id(), "channel": Text(32)})
    def unsubscribe(self, member_id, channel):
        return campaigns.unsubscribe(self.store, self.member, member_id, channel, utcnow)

    # --- attribution --------------------------------------------------------------------

    @rpc(schema={"code": Payload()})
    def create_referral_code(self, code):
        return attribution.create_referral_code(self.store, code, utcnow())

    @rpc(schema={"code": Id()})
    def get_referral_code(self, code):
        return attribution.get_referral_code(self.store, code)

    @rpc(schema={"spend": Payload()})
    def record_ad_spend(self, spend):
        return attribution.record_ad_spend(self.store, self.config, spend, utcnow())

    # --- experiments --------------------------------------------------------------------

    @rpc(schema={"experiment": Payload()})
    def create_experiment(self, experiment):
        return experiments.create_experiment(self.store, experiment, utcnow())

    @rpc(schema={"experiment_key": Id()})
    def get_experiment(self, experiment_key):
        return experiments.get_experiment(self.store, experiment_key)

    @rpc(schema={"experiment_key": Id(), "subject_id": Id()})
    def assign_variant(self, experiment_key, subject_id):
        return experiments.assign_variant(self.store, experiment_key, subject_id, utcnow())

    @rpc(schema={"experiment_key": Id()})
    def stop_experiment(self, experiment_key):
        return experiments.stop_experiment(self.store, experiment_key, utcnow())

    @rpc(schema={"experiment_key": Id(), "winner": Text(200)})
    def conclude_experiment(self, experiment_key, winner):
        return experiments.conclude_experiment(self.store, experiment_key, winner, utcnow())

    # --- recommendations ------------------------------------------------------------------

    @rpc(schema={"member_id": Id(), "limit": Int(1, 100)})
    def recommend_products(self, member_id, limit=10):
        return recommendations.recommend_products(self.store, member_id, limit)

    # --- order events -------------------------------------------------------------------

    def _order_event(self, use_case, envelope) -> None:
        use_case(self.store, self.config, self.channels, envelope["data"], utcnow())

    @handles("order", "order_placed")
    def on_order_placed(self, envelope):
        self._order_event(order_events.on_order_placed, envelope)

    @handles("order", "order_paid", one_at_a_time=domain.purchase_keys)
    def on_order_paid(self, envelope):
        self._order_event(order_events.on_order_paid, envelope)

    @handles("order", "order_rejected")
    def on_order_rejected(self, envelope):
        order_events.on_order_rejected(self.store, envelope["data"], utcnow())

    @handles("order", "order_cancelled")
    def on_order_cancelled(self, envelope):
        self._order_event(order_events.on_order_cancelled, envelope)

    @handles("order", "order_completed")
    def on_order_completed(self, envelope):
        self._order_event(order_events.on_order_completed, envelope)

    @handles("order", "order_shipped")
    def on_order_shipped(self, envelope):
        self._order_event(order_events.on_order_shipped, envelope)

    @handles("order", "order_refunded")
    def on_order_refunded(self, envelope):
        self._order_event(order_events.on_order_refunded, envelope)

    # --- member events ------------------------------------------------------------------

    @handles("member", "member_registered", one_at_a_time=domain.member_keys)
    def on_member_registered(self, envelope):
        readmodels.on_member_registered(self.store, envelope)

    @handles("member", "member_consent_changed", one_at_a_time=domain.member_keys)
    def on_member_consent_changed(self, envelope):
        readmodels.on_member_consent_changed(self.store, envelope)

    @handles("member", "tier_changed", one_at_a_time=domain.member_keys)
    def on_tier_changed(self, envelope):
        readmodels.on_tier_changed(self.store, envelope)

    @handles("member", "member_erased", one_at_a_time=domain.member_keys)
    def on_member_erased(self, envelope):
        readmodels.on_member_erased(self.store, envelope)

    # --- catalog events -------------------------------------------------------------------

    @handles("catalog", "product_created")
    def on_product_created(self, envelope):
        readmodels.set_product_status(self.store, envelope, envelope["data"].get("status") or "draft")

    @handles("catalog", "product_published")
    def on_product_published(self, envelope):
        readmodels.set_product_status(self.store, envelope, "published")

    @handles("catalog", "product_unpublished")
    def on_product_unpublished(self, envelope):
        readmodels.set_product_status(self.store, envelope, "unpublished")

    @handles("catalog", "stock_ran_low")
    def on_stock_ran_low(self, envelope):
        readmodels.set_low_stock(self.store, envelope, True)

    @handles("catalog", "stock_replenished")
    def on_stock_replenished(self, envelope):
        readmodels.set_low_stock(self.store, envelope, False)

    @handles("catalog", "review_added")
    def on_review_added(self, envelope):
        readmodels.on_review_added(self.store, envelope)

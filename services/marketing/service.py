"""The marketing service's entrypoints: validate → domain → one transaction (state + events)."""
from __future__ import annotations

from datetime import datetime

from nameko.timer import timer
from pymongo.errors import DuplicateKeyError

from services.marketing import (
    attribution,
    campaigns,
    carts,
    coupons,
    domain,
    metrics,
    notifications,
    order_events,
    promotions,
    readmodels,
    schemas,
)
from services.marketing.channels import Channels
from services.marketing.config import Config, sweep_interval_from_env
from services.marketing.store import (
    INDEXES,
    public,
)
from shared.clock import parse_iso, to_iso, utcnow
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.logs import get_logger
from shared.rpc import RpcClient, rpc
from shared.service import ShopService
from shared.store import Store
from shared.subscriptions import handles
from shared.validation import load

log = get_logger(__name__)

def _now(now: str | None) -> datetime:
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

    @rpc
    def price_cart(self, member_id, lines, coupon_code=None, tier=None, order_id=None):
        return carts.price_cart(self.store, self.config, utcnow(), member_id=member_id,
                                lines=lines, coupon_code=coupon_code, tier=tier,
                                order_id=order_id)

    # --- promotions ---------------------------------------------------------------------

    @rpc
    def create_promotion(self, promotion):
        return promotions.create_promotion(self.store, promotion, utcnow())

    @rpc
    def get_promotion(self, promotion_id):
        return promotions.get_promotion(self.store, promotion_id)

    @rpc
    def list_promotions(self, status=None):
        return promotions.list_promotions(self.store, status)

    @rpc
    def end_promotion(self, promotion_id, now=None):
        return promotions.end_promotion(self.store, promotion_id, _now(now))

    # --- coupons ------------------------------------------------------------------------

    @rpc
    def create_coupons(self, batch):
        return coupons.create_coupons(self.store, batch, utcnow())

    @rpc
    def get_coupon(self, code):
        return coupons.get_coupon(self.store, code)

    @rpc
    def validate_coupon(self, code, member_id, subtotal):
        return coupons.validate_coupon(self.store, code, member_id, subtotal, utcnow())

    @rpc
    def get_coupon_reservation(self, order_id):
        return coupons.get_coupon_reservation(self.store, order_id)

    @rpc
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

    @rpc
    def create_campaign(self, campaign):
        return campaigns.create_campaign(self.store, self.config, campaign, utcnow())

    @rpc
    def get_campaign(self, campaign_id):
        return campaigns.get_campaign(self.store, campaign_id)

    @rpc
    def launch_campaign(self, campaign_id, now=None):
        return campaigns.launch_campaign(self.store, self.config, self.channels, self.member,
                                         campaign_id, _now(now))

    @rpc
    def list_messages(self, member_id=None, campaign_id=None, kind=None):
        return notifications.list_messages(self.store, member_id, campaign_id, kind)

    @rpc
    def unsubscribe(self, member_id, channel):
        return campaigns.unsubscribe(self.store, self.member, member_id, channel, utcnow)

    # --- attribution --------------------------------------------------------------------

    @rpc
    def create_referral_code(self, code):
        return attribution.create_referral_code(self.store, code, utcnow())

    @rpc
    def get_referral_code(self, code):
        return attribution.get_referral_code(self.store, code)

    @rpc
    def record_ad_spend(self, spend):
        return attribution.record_ad_spend(self.store, self.config, spend, utcnow())

    # --- experiments --------------------------------------------------------------------

    @rpc
    def create_experiment(self, experiment):
        data = load(schemas.Experiment(), experiment)
        doc = {"_id": data["key"], "key": data["key"], "variants": data["variants"],
               "control": data["control"], "description": data["description"],
               "status": "running", "winner": None, "created_at": to_iso(utcnow())}
        try:
            with self.store.transaction() as tx:
                if tx.db.experiments.find_one({"_id": doc["_id"]}, session=tx.session):
                    raise Conflict(f"experiment {data['key']} exists", {"key": data["key"]})
                tx.db.experiments.insert_one(doc, session=tx.session)
                tx.emit("experiment_created", {"experiment_key": data["key"],
                                               "variants": data["variants"],
                                               "control": data["control"]})
        except DuplicateKeyError:
            raise Conflict(f"experiment {data['key']} exists", {"key": data["key"]}) from None
        return public(doc)

    @rpc
    def get_experiment(self, experiment_key):
        doc = self.store.db.experiments.find_one({"_id": experiment_key})
        if doc is None:
            raise NotFound(f"no experiment {experiment_key}", {"experiment_key": experiment_key})
        out = public(doc)
        out["exposures"] = self.store.db.exposures.count_documents({"experiment_key": experiment_key})
        return out

    @rpc
    def assign_variant(self, experiment_key, subject_id):
        data = load(schemas.Assign(), {"experiment_key": experiment_key, "subject_id": subject_id})
        exp = self.store.db.experiments.find_one({"_id": data["experiment_key"]})
        if exp is None:
            raise NotFound(f"no experiment {experiment_key}", {"experiment_key": experiment_key})
        out = {"id": f"{exp['_id']}|{data['subject_id']}", "experiment_key": exp["_id"],
               "subject_id": data["subject_id"], "status": exp["status"], "exposed": False}
        if exp["status"] != "running":
            out["variant"] = exp.get("winner") or exp["control"]
            return out
        variant = domain.assign(exp["_id"], data["subject_id"], exp["variants"])
        out["variant"] = variant
        key = f"{exp['_id']}|{data['subject_id']}"
        try:
            with self.store.transaction() as tx:
                if not tx.db.exposures.find_one({"_id": key}, session=tx.session):
                    tx.db.exposures.insert_one({"_id": key, "experiment_key": exp["_id"],
                                                "subject_id": data["subject_id"], "variant": variant,
                                                "at": to_iso(utcnow())}, session=tx.session)
                    tx.emit("experiment_exposed", {"experiment_key": exp["_id"], "variant": variant,
                                                   "subject_id": data["subject_id"]})
                    out["exposed"] = True
        except DuplicateKeyError:
            out["exposed"] = False
        if out["exposed"]:
            metrics.EXPOSURES.inc()
        return out

    @rpc
    def stop_experiment(self, experiment_key):
        self.get_experiment(experiment_key)
        self.store.db.experiments.update_one({"_id": experiment_key, "status": "running"},
                                             {"$set": {"status": "stopped", "stopped_at": to_iso(utcnow())}})
        return self.get_experiment(experiment_key)

    @rpc
    def conclude_experiment(self, experiment_key, winner):
        exp = self.get_experiment(experiment_key)
        if winner not in {v["name"] for v in exp["variants"]}:
            raise ValidationFailed.field("winner", "Must name one of the variants.")
        done = self.store.db.experiments.update_one(
            {"_id": experiment_key, "status": {"$in": ["running", "stopped"]}},
            {"$set": {"status": "concluded", "winner": winner, "concluded_at": to_iso(utcnow())}})
        if not done.matched_count and exp.get("winner") != winner:
            raise Conflict(f"experiment {experiment_key} already concluded",
                           {"winner": exp.get("winner")})
        return self.get_experiment(experiment_key)

    # --- recommendations ----------------------------------------------------------------

    @rpc
    def recommend_products(self, member_id, limit=10):
        data = load(schemas.Recommend(), {"member_id": member_id, "limit": limit})
        db, limit = self.store.db, data["limit"]
        member = db.members.find_one({"_id": data["member_id"]}) or {}
        bought_doc = db.member_purchases.find_one({"_id": data["member_id"]}) or {}
        bought = set(bought_doc.get("products") or [])
        recent = (bought_doc.get("products") or [])[-50:]
        co = {d["_id"]: d.get("with") or {} for d in db.co_purchases.find({"_id": {"$in": recent}})}
        unavailable = {d["_id"] for d in db.products.find(
            {"$or": [{"status": "unpublished"}, {"low_stock": True}]}, {"_id": 1})}
        fetch = limit + len(bought) + len(unavailable)
        interests = [i for i in (member.get("interests") or [])]
        interest_products = [{"product_id": d["_id"], "category": d.get("category")}
                             for d in db.products.find({"category": {"$in": interests}, "units": {"$gt": 0}})
                             .sort("units", -1).limit(fetch)] if interests else []
        best = [{"product_id": d["_id"], "category": d.get("category")}
                for d in db.products.find({"units": {"$gt": 0}})
                .sort([("units", -1), ("_id", 1)]).limit(fetch)]
        items = domain.recommend(bought, co, interest_products, best, unavailable, limit)
        return {"id": data["member_id"], "member_id": data["member_id"], "products": items}

    # --- order events -------------------------------------------------------------------

    @handles("order", "order_placed")
    def on_order_placed(self, envelope):
        order_events.on_order_placed(self.store, self.config, self.channels, envelope["data"],
                                     utcnow())

    @handles("order", "order_paid")
    def on_order_paid(self, envelope):
        order_events.on_order_paid(self.store, self.config, self.channels, envelope["data"],
                                   utcnow())

    @handles("order", "order_rejected")
    def on_order_rejected(self, envelope):
        order_events.on_order_rejected(self.store, envelope["data"], utcnow())

    @handles("order", "order_cancelled")
    def on_order_cancelled(self, envelope):
        order_events.on_order_cancelled(self.store, self.config, self.channels, envelope["data"],
                                        utcnow())

    @handles("order", "order_completed")
    def on_order_completed(self, envelope):
        order_events.on_order_completed(self.store, self.config, self.channels, envelope["data"],
                                        utcnow())

    @handles("order", "order_shipped")
    def on_order_shipped(self, envelope):
        order_events.on_order_shipped(self.store, self.config, self.channels, envelope["data"],
                                      utcnow())

    @handles("order", "order_refunded")
    def on_order_refunded(self, envelope):
        order_events.on_order_refunded(self.store, self.config, self.channels, envelope["data"],
                                       utcnow())

    # --- member events ------------------------------------------------------------------

    def _member_update(self, tx, member_id: str, field: str, value, at: str) -> None:
        """Set `field` unless the member is erased or a newer value was already applied."""
        stamp = f"{field}_at".replace(".", "_")
        tx.db.members.update_one({"_id": member_id}, {"$setOnInsert": {"erased": False}},
                                 upsert=True, session=tx.session)
        tx.db.members.update_one(
            {"_id": member_id, "erased": {"$ne": True},
             "$or": [{stamp: None}, {stamp: {"$lte": at}}]},
            {"$set": {field: value, stamp: at}}, session=tx.session)

    @handles("member", "member_registered")
    def on_member_registered(self, envelope):
        data, at = envelope["data"], envelope["occurred_at"]
        with self.store.transaction() as tx:
            readmodels.learn_tier_benefit(tx, data.get("tier"), data.get("tier_discount_percent"), at)
            self._member_update(tx, data["member_id"], "tier", data.get("tier"), at)
            self._member_update(tx, data["member_id"], "interests", data.get("interests") or [], at)
            self._member_update(tx, data["member_id"], "region", data.get("region"), at)

    @handles("member", "member_consent_changed")
    def on_member_consent_changed(self, envelope):
        data, at = envelope["data"], envelope["occurred_at"]
        with self.store.transaction() as tx:
            self._member_update(tx, data["member_id"], f"consents.{data['channel']}",
                                {"granted": bool(data["granted"]), "at": at}, at)

    @handles("member", "tier_changed")
    def on_tier_changed(self, envelope):
        data, at = envelope["data"], envelope["occurred_at"]
        with self.store.transaction() as tx:
            readmodels.learn_tier_benefit(tx, data["new_tier"], data.get("tier_discount_percent"), at)
            self._member_update(tx, data["member_id"], "tier", data["new_tier"], at)

    @handles("member", "member_erased")
    def on_member_erased(self, envelope):
        member_id = envelope["data"]["member_id"]
        with self.store.transaction() as tx:
            tx.db.members.update_one(
                {"_id": member_id},
                {"$set": {"erased": True, "consents": {}, "interests": [], "region": None,
                          "erased_at": envelope["occurred_at"]}},
                upsert=True, session=tx.session)
            tx.db.messages.update_many(
                {"member_id": member_id},
                {"$set": {"subject": "", "body": "", "redacted": True}}, session=tx.session)
            tx.db.member_purchases.delete_one({"_id": member_id}, session=tx.session)

    # --- catalog events -----------------------------------------------------------------

    def _product_status(self, envelope, status: str) -> None:
        data, at = envelope["data"], envelope["occurred_at"]
        with self.store.transaction() as tx:
            tx.db.products.update_one({"_id": data["product_id"]},
                                      {"$setOnInsert": {"units": 0}}, upsert=True, session=tx.session)
            tx.db.products.update_one(
                {"_id": data["product_id"], "$or": [{"status_at": None}, {"status_at": {"$lte": at}}]},
                {"$set": {"status": status, "status_at": at, "category": data.get("category")}},
                session=tx.session)

    @handles("catalog", "product_created")
    def on_product_created(self, envelope):
        self._product_status(envelope, envelope["data"].get("status") or "draft")

    @handles("catalog", "product_published")
    def on_product_published(self, envelope):
        self._product_status(envelope, "published")

    @handles("catalog", "product_unpublished")
    def on_product_unpublished(self, envelope):
        self._product_status(envelope, "unpublished")

    def _stock_flag(self, envelope, low: bool) -> None:
        data, at = envelope["data"], envelope["occurred_at"]
        with self.store.transaction() as tx:
            tx.db.products.update_one({"_id": data["product_id"]},
                                      {"$setOnInsert": {"units": 0}}, upsert=True, session=tx.session)
            tx.db.products.update_one(
                {"_id": data["product_id"], "$or": [{"stock_at": None}, {"stock_at": {"$lte": at}}]},
                {"$set": {"low_stock": low, "stock_at": at}}, session=tx.session)

    @handles("catalog", "stock_ran_low")
    def on_stock_ran_low(self, envelope):
        self._stock_flag(envelope, True)

    @handles("catalog", "stock_replenished")
    def on_stock_replenished(self, envelope):
        self._stock_flag(envelope, False)

    @handles("catalog", "review_added")
    def on_review_added(self, envelope):
        data = envelope["data"]
        with self.store.transaction() as tx:
            tx.db.products.update_one({"_id": data["product_id"]},
                                      {"$inc": {"rating_sum": data.get("rating", 0), "rating_count": 1},
                                       "$setOnInsert": {"units": 0}},
                                      upsert=True, session=tx.session)

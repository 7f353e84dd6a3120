"""The marketing service's entrypoints: validate → domain → one transaction (state + events)."""
from __future__ import annotations

from datetime import datetime

from nameko.timer import timer
from pymongo.errors import DuplicateKeyError

from services.marketing import carts, coupons, domain, metrics, promotions, readmodels, schemas
from services.marketing.channels import Channels
from services.marketing.config import Config, sweep_interval_from_env
from services.marketing.store import (
    INDEXES,
    close_order,
    deliver,
    public,
    redeem_reservation,
)
from shared.clock import parse_iso, to_iso, utcnow
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.ids import new_id
from shared.logs import get_logger
from shared.rpc import RpcClient, rpc
from shared.service import ShopService
from shared.store import Store
from shared.subscriptions import handles
from shared.validation import load

log = get_logger(__name__)

DISPATCH_BATCH = 500


def _now(now: str | None) -> datetime:
    if now is None:
        return utcnow()
    try:
        return parse_iso(now)
    except ValueError:
        raise ValidationFailed.field("now", "Not an ISO 8601 timestamp.") from None


def _page_items(result, page: int) -> tuple[list[str], bool]:
    """Member ids of one `member.list_segment` page, read tolerantly (list or paged dict)."""
    if isinstance(result, list):
        items, more = result, bool(result)
    elif isinstance(result, dict):
        items = (result.get("members") or result.get("items") or result.get("member_ids")
                 or result.get("results") or [])
        if "has_more" in result:
            more = bool(result["has_more"])
        elif "next_page" in result:
            more = result["next_page"] is not None
        elif "pages" in result:
            more = page < int(result["pages"] or 0)
        elif "total" in result and result.get("page_size"):
            more = page * int(result["page_size"]) < int(result["total"] or 0)
        else:
            more = bool(items)
    else:
        items, more = [], False
    ids = [i if isinstance(i, str) else (i.get("member_id") or i.get("id")) for i in items]
    return [i for i in ids if i], more


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
        dispatched = 0
        due = self.store.db.campaigns.find(
            {"$or": [{"status": "sending", "next_dispatch_at": {"$lte": to_iso(moment)}},
                     {"status": "scheduled", "scheduled_at": {"$lte": to_iso(moment)}}]},
            {"_id": 1, "status": 1})
        for camp in list(due):
            if camp["status"] == "scheduled":
                self._launch(camp["_id"], moment)
            else:
                self._dispatch(camp["_id"], moment)
            dispatched += 1
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
        data = load(schemas.Campaign(), campaign)
        if data["segment"] not in self.config.segments:
            raise ValidationFailed.field("segment",
                                         f"Unknown segment; one of {sorted(self.config.segments)}.")
        now = to_iso(utcnow())
        doc = {"_id": new_id("cmp"), **data, "status": "draft", "created_at": now,
               "audience_size": 0, "sent": 0, "spent": 0, "skipped": {}, "next_dispatch_at": None}
        with self.store.transaction() as tx:
            tx.db.campaigns.insert_one(doc, session=tx.session)
        return public(doc)

    @rpc
    def get_campaign(self, campaign_id):
        doc = self.store.db.campaigns.find_one({"_id": campaign_id})
        if doc is None:
            raise NotFound(f"no campaign {campaign_id}", {"campaign_id": campaign_id})
        return public(doc)

    @rpc
    def launch_campaign(self, campaign_id, now=None):
        moment = _now(now)
        camp = self.get_campaign(campaign_id)
        if camp["status"] in ("draft", "scheduled"):
            if camp.get("scheduled_at") and parse_iso(camp["scheduled_at"]) > moment:
                self.store.db.campaigns.update_one({"_id": campaign_id, "status": "draft"},
                                                   {"$set": {"status": "scheduled"}})
            else:
                self._launch(campaign_id, moment)
        return self.get_campaign(campaign_id)

    def _segment_members(self, segment: str) -> list[str]:
        ids: list[str] = []
        for page in range(1, self.config.segment_page_limit + 1):
            try:
                result = self.member.list_segment(segment, page)
            except (NotFound, ValidationFailed):
                raise ValidationFailed.field("segment", "member knows no such segment") from None
            items, more = _page_items(result, page)
            ids.extend(items)
            if not items or not more:
                break
        return list(dict.fromkeys(ids))

    def _launch(self, campaign_id: str, now: datetime) -> None:
        camp = self.store.db.campaigns.find_one({"_id": campaign_id})
        members = self._segment_members(camp["segment"])
        with self.store.transaction() as tx:
            claimed = tx.db.campaigns.find_one_and_update(
                {"_id": campaign_id, "status": {"$in": ["draft", "scheduled"]}},
                {"$set": {"status": "sending", "launched_at": to_iso(now),
                          "next_dispatch_at": to_iso(now)}}, session=tx.session)
            if claimed is None:
                return
            known = {m["_id"]: m for m in tx.db.members.find({"_id": {"$in": members}},
                                                            session=tx.session)}
            eligible = [m for m in members if domain.has_consent(known.get(m), camp["channel"])]
            if eligible:
                tx.db.recipients.insert_many(
                    [{"_id": f"{campaign_id}|{m}", "campaign_id": campaign_id, "member_id": m,
                      "status": "pending"} for m in eligible], session=tx.session)
            no_consent = len(members) - len(eligible)
            tx.db.campaigns.update_one(
                {"_id": campaign_id},
                {"$set": {"audience_size": len(eligible), "segment_size": len(members),
                          "skipped.no_consent": no_consent}}, session=tx.session)
            tx.emit("campaign_launched", {"campaign_id": campaign_id, "channel": camp["channel"],
                                          "segment": camp["segment"],
                                          "audience_size": len(eligible)})
        metrics.CAMPAIGN_SKIPS.labels("no_consent").inc(no_consent)
        self._dispatch(campaign_id, now)

    def _dispatch(self, campaign_id: str, now: datetime) -> None:
        cfg, db = self.config, self.store.db
        camp = db.campaigns.find_one({"_id": campaign_id})
        if camp is None or camp["status"] != "sending":
            return
        if cfg.quiet_hours and cfg.quiet_hours.contains(now, cfg.zone):
            resume = cfg.quiet_hours.ends_after(now, cfg.zone)
            db.campaigns.update_one({"_id": campaign_id, "status": "sending"},
                                    {"$set": {"next_dispatch_at": to_iso(resume)}})
            return
        cost = self.channels.cost(camp["channel"])
        # A bounded batch per round keeps the call short; the timer sends the rest.
        batch = db.recipients.find({"campaign_id": campaign_id, "status": "pending"}).limit(DISPATCH_BATCH)
        for rec in list(batch):
            with self.store.transaction() as tx:
                if tx.db.recipients.find_one_and_update(
                        {"_id": rec["_id"], "status": "pending"}, {"$set": {"status": "sending"}},
                        session=tx.session) is None:
                    continue
                member = tx.db.members.find_one({"_id": rec["member_id"]}, session=tx.session)
                sends = (member or {}).get("marketing_sends") or []
                decision = domain.send_decision(member, camp["channel"], sends, now,
                                                cfg.frequency_cap, cfg.frequency_window)
                if decision == "send":
                    guard = {} if camp.get("budget") is None else {"spent": {"$lte": camp["budget"] - cost}}
                    paid = tx.db.campaigns.update_one({"_id": campaign_id, **guard},
                                                      {"$inc": {"spent": cost, "sent": 1}},
                                                      session=tx.session)
                    if not paid.matched_count:
                        decision = "budget"
                if decision != "send":
                    tx.db.recipients.update_one({"_id": rec["_id"]},
                                                {"$set": {"status": "skipped", "reason": decision}},
                                                session=tx.session)
                    tx.db.campaigns.update_one({"_id": campaign_id},
                                               {"$inc": {f"skipped.{decision}": 1}}, session=tx.session)
                    metrics.CAMPAIGN_SKIPS.labels(decision).inc()
                    continue
                tx.db.members.update_one(
                    {"_id": rec["member_id"]},
                    {"$set": {"marketing_sends": domain.record_send(sends, now, cfg.frequency_window)}},
                    session=tx.session)
                content = domain.render(camp["template"], {"member_id": rec["member_id"],
                                                           "campaign_id": campaign_id})
                message = deliver(tx, self.channels, member_id=rec["member_id"],
                                  channel=camp["channel"], kind="marketing", campaign_id=campaign_id,
                                  content=content, dedupe_key=f"campaign:{campaign_id}:{rec['member_id']}",
                                  now=now)
                tx.db.recipients.update_one(
                    {"_id": rec["_id"]},
                    {"$set": {"status": "sent", "message_id": message and message["id"]}},
                    session=tx.session)
        open_ = {"campaign_id": campaign_id, "status": {"$in": ["pending", "sending"]}}
        if not db.recipients.find_one(open_):
            db.campaigns.update_one({"_id": campaign_id, "status": "sending"},
                                    {"$set": {"status": "completed", "completed_at": to_iso(now),
                                              "next_dispatch_at": None}})

    @rpc
    def list_messages(self, member_id=None, campaign_id=None, kind=None):
        query = {k: v for k, v in (("member_id", member_id), ("campaign_id", campaign_id),
                                   ("kind", kind)) if v is not None}
        return [public(d) for d in self.store.db.messages.find(query).sort("sent_at", 1).limit(1000)]

    @rpc
    def unsubscribe(self, member_id, channel):
        """Withdraw marketing consent through member (the owner); recorded here at once too."""
        data = load(schemas.Unsubscribe(), {"member_id": member_id, "channel": channel})
        self.member.update_consent(data["member_id"], data["channel"], False)
        now = to_iso(utcnow())
        with self.store.transaction() as tx:
            tx.db.members.update_one(
                {"_id": data["member_id"]},
                {"$set": {f"consents.{data['channel']}": {"granted": False, "at": now},
                          f"consents_{data['channel']}_at": now}},
                upsert=True, session=tx.session)
        return {"id": data["member_id"], "channel": data["channel"], "granted": False}

    # --- attribution --------------------------------------------------------------------

    @rpc
    def create_referral_code(self, code):
        data = load(schemas.ReferralCode(), code)
        doc = {"_id": domain.normalize_code(data["code"]), **{k: v for k, v in data.items() if k != "code"},
               "orders": 0, "revenue": 0, "created_at": to_iso(utcnow())}
        try:
            with self.store.transaction() as tx:
                if tx.db.referral_codes.find_one({"_id": doc["_id"]}, session=tx.session):
                    raise Conflict(f"referral code {doc['_id']} exists", {"code": doc["_id"]})
                tx.db.referral_codes.insert_one(doc, session=tx.session)
        except DuplicateKeyError:
            raise Conflict(f"referral code {doc['_id']} exists", {"code": doc["_id"]}) from None
        return {**public(doc), "code": doc["_id"]}

    @rpc
    def get_referral_code(self, code):
        doc = self.store.db.referral_codes.find_one({"_id": domain.normalize_code(str(code))})
        if doc is None:
            raise NotFound(f"no referral code {code}", {"code": code})
        return {**public(doc), "code": doc["_id"]}

    @rpc
    def record_ad_spend(self, spend):
        data = load(schemas.AdSpend(), spend)
        currency = data["currency"] or self.config.currency
        if currency != self.config.currency:
            raise ValidationFailed.field("currency", f"Only {self.config.currency} is accepted.")
        doc = {"_id": f"req:{data['request_id']}" if data["request_id"] else new_id("ads"),
               "channel": data["channel"], "campaign_id": data["campaign_id"],
               "amount": data["amount"], "currency": currency, "date": data["date"],
               "recorded_at": to_iso(utcnow())}
        with self.store.transaction() as tx:
            existing = tx.db.ad_spend.find_one({"_id": doc["_id"]}, session=tx.session)
            if existing:
                return public(existing)
            tx.db.ad_spend.insert_one(doc, session=tx.session)
            tx.emit("ad_spend_recorded", {k: doc[k] for k in ("channel", "campaign_id", "amount",
                                                              "currency", "date")})
        return public(doc)

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

    # --- transactional notifications ---------------------------------------------------

    def _notify(self, tx, template: str, order_id: str, member_id: str | None, values: dict,
                dedupe_key: str) -> None:
        """Send a transactional message once per `dedupe_key`; park it when the order's member is
        not known yet (order_placed not seen), to send when it arrives."""
        if member_id is None:
            order = tx.db.orders.find_one({"_id": order_id}, session=tx.session)
            member_id = order and order.get("member_id")
        if member_id is None:
            tx.db.parked_notifications.update_one(
                {"_id": dedupe_key},
                {"$setOnInsert": {"order_id": order_id, "template": template, "values": values}},
                upsert=True, session=tx.session)
            return
        member = tx.db.members.find_one({"_id": member_id}, {"erased": 1}, session=tx.session)
        if member and member.get("erased"):
            return
        content = domain.render(domain.TRANSACTIONAL[template], {"order_id": order_id, **values})
        deliver(tx, self.channels, member_id=member_id, channel=self.config.transactional_channel,
                kind="transactional", campaign_id=None, content=content, dedupe_key=dedupe_key,
                now=utcnow())

    def _remember_order(self, tx, order_id: str, member_id: str) -> None:
        tx.db.orders.update_one({"_id": order_id}, {"$set": {"member_id": member_id}}, upsert=True,
                                session=tx.session)
        for parked in list(tx.db.parked_notifications.find({"order_id": order_id}, session=tx.session)):
            tx.db.parked_notifications.delete_one({"_id": parked["_id"]}, session=tx.session)
            self._notify(tx, parked["template"], order_id, member_id, parked["values"], parked["_id"])

    # --- order events -------------------------------------------------------------------

    @handles("order", "order_placed")
    def on_order_placed(self, envelope):
        data = envelope["data"]
        with self.store.transaction() as tx:
            self._remember_order(tx, data["order_id"], data["member_id"])
            code = (data.get("attribution") or {}).get("referral_code")
            if code:
                tx.db.referral_codes.update_one(
                    {"_id": domain.normalize_code(code)},
                    {"$inc": {"orders": 1, "revenue": data.get("total", 0)}}, session=tx.session)

    @handles("order", "order_paid")
    def on_order_paid(self, envelope):
        data = envelope["data"]
        now = utcnow()
        with self.store.transaction() as tx:
            self._remember_order(tx, data["order_id"], data["member_id"])
            redeem_reservation(tx, data["order_id"], now)
            self._notify(tx, "order_confirmed", data["order_id"], data["member_id"],
                         {"total": data.get("total")}, f"order_confirmed:{data['order_id']}")
            self._count_purchase(tx, data)

    def _count_purchase(self, tx, data: dict) -> None:
        """Best sellers, co-purchases and the member's purchases, once per order."""
        marker = f"purchase:{data['order_id']}"
        if tx.db.processed.find_one({"_id": marker}, session=tx.session):
            return
        tx.db.processed.insert_one({"_id": marker}, session=tx.session)
        products = []
        for line in data.get("lines") or []:
            pid = line["product_id"]
            if "." in pid or pid.startswith("$"):
                continue
            products.append(pid)
            tx.db.products.update_one(
                {"_id": pid}, {"$inc": {"units": line.get("quantity", 1)},
                               "$setOnInsert": {"category": line.get("category")}},
                upsert=True, session=tx.session)
        products = sorted(set(products))
        for pid in products:
            others = {f"with.{o}": 1 for o in products if o != pid}
            if others:
                tx.db.co_purchases.update_one({"_id": pid}, {"$inc": others}, upsert=True,
                                              session=tx.session)
        if products:
            tx.db.member_purchases.update_one(
                {"_id": data["member_id"]}, {"$addToSet": {"products": {"$each": products}}},
                upsert=True, session=tx.session)

    @handles("order", "order_rejected")
    def on_order_rejected(self, envelope):
        with self.store.transaction() as tx:
            close_order(tx, envelope["data"]["order_id"], "rejected", utcnow())

    @handles("order", "order_cancelled")
    def on_order_cancelled(self, envelope):
        data = envelope["data"]
        with self.store.transaction() as tx:
            close_order(tx, data["order_id"], "cancelled", utcnow())
            self._notify(tx, "order_cancelled", data["order_id"], data.get("member_id"),
                         {"reason": data.get("reason")}, f"order_cancelled:{data['order_id']}")

    @handles("order", "order_completed")
    def on_order_completed(self, envelope):
        data = envelope["data"]
        with self.store.transaction() as tx:
            self._notify(tx, "order_delivered", data["order_id"], data["member_id"], {},
                         f"order_delivered:{data['order_id']}")

    @handles("order", "order_shipped")
    def on_order_shipped(self, envelope):
        data = envelope["data"]
        with self.store.transaction() as tx:
            self._notify(tx, "order_shipped", data["order_id"], None, {},
                         f"order_shipped:{data['order_id']}")

    @handles("order", "order_refunded")
    def on_order_refunded(self, envelope):
        data = envelope["data"]
        with self.store.transaction() as tx:
            self._notify(tx, "order_refunded", data["order_id"], data["member_id"],
                         {"amount": data.get("amount"), "currency": data.get("currency")},
                         f"order_refunded:{data['refund_id']}")

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

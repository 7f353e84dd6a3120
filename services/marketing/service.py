"""The marketing service's entrypoints: validate → domain → one transaction (state + events)."""
from __future__ import annotations

from datetime import datetime

from nameko.timer import timer
from pymongo.errors import DuplicateKeyError

from services.marketing import domain, metrics, pricing, schemas
from services.marketing.channels import Channels
from services.marketing.config import Config, sweep_interval_from_env
from services.marketing.store import (
    INDEXES,
    close_order,
    deliver,
    expired_reservations,
    member_uses,
    public,
    redeem_reservation,
    release_reservation,
    reserve_coupon,
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


def _coupon_error(reason: str) -> ValidationFailed:
    return ValidationFailed(f"coupon_code: {reason}", {"fields": {"coupon_code": [reason]},
                                                       "reason": reason})


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
        req = load(schemas.PriceCart(), {"member_id": member_id, "lines": lines,
                                         "coupon_code": coupon_code, "tier": tier,
                                         "order_id": order_id})
        cfg, db, now = self.config, self.store.db, utcnow()
        tier = req["tier"]
        if tier is None:
            member = db.members.find_one({"_id": req["member_id"]}, {"tier": 1})
            tier = (member or {}).get("tier")
        promotions = [{**d, "id": d["_id"]} for d in db.promotions.find({"status": "active"})]
        coupon = coupon_doc = None
        if req["coupon_code"]:
            code = domain.normalize_code(req["coupon_code"])
            coupon_doc = db.coupons.find_one({"_id": code})
            promo = db.promotions.find_one({"_id": coupon_doc["promotion_id"]}) if coupon_doc else None
            uses = member_uses(db, code, req["member_id"])
            already = req["order_id"] and db.coupon_reservations.find_one(
                {"_id": req["order_id"], "code": code, "status": {"$in": ["reserved", "redeemed"]}})
            if already:  # this order's own reservation is not a use against it
                coupon_doc = {**coupon_doc, "used": coupon_doc.get("used", 1) - 1}
                uses -= 1
            problem = domain.coupon_problem(coupon_doc, promo, uses, now)
            if problem:
                raise _coupon_error(problem)
            coupon = {"code": code, "promotion_id": coupon_doc["promotion_id"]}
        priced = pricing.price(req["lines"], promotions, now=now, currency=cfg.currency, tier=tier,
                               tier_percent_bp=self._tier_discount_bp(db, tier),
                               coupon=coupon, cap_bp=cfg.cap_bp)
        if coupon and not priced["coupon_applied"]:
            raise _coupon_error(priced["coupon_reason"])
        priced["member_id"] = req["member_id"]
        priced["order_id"] = req["order_id"]
        priced["coupon_reservation"] = None
        if req["order_id"]:
            with self.store.transaction() as tx:
                if coupon:
                    res = reserve_coupon(tx, order_id=req["order_id"], coupon=coupon_doc,
                                         member_id=req["member_id"],
                                         discount=priced["coupon_discount"], now=now,
                                         ttl=cfg.reservation_ttl)
                    priced["coupon_reservation"] = {"status": res["status"],
                                                    "expires_at": to_iso(res["expires_at"])}
                else:
                    release_reservation(tx, req["order_id"], "repriced", now)
        metrics.CARTS_PRICED.labels("discounted" if priced["discount"] else "full_price").inc()
        return priced

    # --- promotions ---------------------------------------------------------------------

    @rpc
    def create_promotion(self, promotion):
        data = load(schemas.Promotion(), promotion)
        now = utcnow()
        doc = {"_id": new_id("prm"), **data, "status": "active", "created_at": to_iso(now),
               "percent_bp": pricing.percent_to_bp(data["percent"]) if data.get("percent") else None}
        with self.store.transaction() as tx:
            tx.db.promotions.insert_one(doc, session=tx.session)
            tx.emit("promotion_created", {"promotion_id": doc["_id"], "kind": doc["kind"],
                                          "starts_at": doc["starts_at"], "ends_at": doc["ends_at"]})
        return public(doc)

    @rpc
    def get_promotion(self, promotion_id):
        doc = self.store.db.promotions.find_one({"_id": promotion_id})
        if doc is None:
            raise NotFound(f"no promotion {promotion_id}", {"promotion_id": promotion_id})
        return public(doc)

    @rpc
    def list_promotions(self, status=None):
        query = {} if status is None else {"status": status}
        return [public(d) for d in self.store.db.promotions.find(query).sort("created_at", 1)]

    @rpc
    def end_promotion(self, promotion_id, now=None):
        moment = _now(now)
        self.get_promotion(promotion_id)
        with self.store.transaction() as tx:
            before = tx.db.promotions.find_one_and_update(
                {"_id": promotion_id, "status": "active"},
                {"$set": {"status": "ended", "ended_at": to_iso(moment)}}, session=tx.session)
            if before is not None:
                ends = before.get("ends_at")
                if ends is None or parse_iso(ends) > moment:
                    ends = to_iso(moment)
                tx.db.promotions.update_one({"_id": promotion_id}, {"$set": {"ends_at": ends}},
                                            session=tx.session)
                tx.emit("promotion_ended", {"promotion_id": promotion_id, "kind": before["kind"],
                                            "starts_at": before["starts_at"], "ends_at": ends})
        return self.get_promotion(promotion_id)

    # --- coupons ------------------------------------------------------------------------

    @rpc
    def create_coupons(self, batch):
        data = load(schemas.CouponBatch(), batch)
        promo = self.store.db.promotions.find_one({"_id": data["promotion_id"]})
        if promo is None:
            raise NotFound(f"no promotion {data['promotion_id']}", {"promotion_id": data["promotion_id"]})
        if promo.get("trigger") != "coupon":
            raise ValidationFailed.field("promotion_id", "The promotion is automatic, not coupon-only.")
        if data["code"]:
            codes = [domain.normalize_code(data["code"])]
        else:
            codes = domain.generate_codes(domain.normalize_code(data["prefix"]), data["count"])
        now = to_iso(utcnow())
        docs = [{"_id": code, "promotion_id": data["promotion_id"],
                 "max_redemptions": data["max_redemptions"],
                 "per_member_limit": data["per_member_limit"], "starts_at": data["starts_at"],
                 "ends_at": data["ends_at"], "used": 0, "redeemed": 0, "created_at": now}
                for code in codes]
        try:
            with self.store.transaction() as tx:
                taken = tx.db.coupons.find_one({"_id": {"$in": codes}}, session=tx.session)
                if taken:
                    raise Conflict(f"coupon code {taken['_id']} exists", {"code": taken["_id"]})
                tx.db.coupons.insert_many(docs, session=tx.session)
        except DuplicateKeyError:
            raise Conflict("a coupon code exists already", {"codes": codes[:10]}) from None
        return {"id": data["promotion_id"], "promotion_id": data["promotion_id"],
                "codes": codes, "count": len(codes)}

    @rpc
    def get_coupon(self, code):
        doc = self.store.db.coupons.find_one({"_id": domain.normalize_code(str(code))})
        if doc is None:
            raise NotFound(f"no coupon {code}", {"code": code})
        return public(doc)

    @rpc
    def validate_coupon(self, code, member_id, subtotal):
        data = load(schemas.ValidateCoupon(), {"code": code, "member_id": member_id,
                                               "subtotal": subtotal})
        db, code = self.store.db, domain.normalize_code(data["code"])
        coupon = db.coupons.find_one({"_id": code})
        promo = db.promotions.find_one({"_id": coupon["promotion_id"]}) if coupon else None
        uses = member_uses(db, code, data["member_id"])
        reason = domain.coupon_problem(coupon, promo, uses, utcnow(), data["subtotal"])
        out = {"id": code, "code": code, "valid": reason is None, "reason": reason}
        if coupon:
            limit = coupon.get("max_redemptions")
            out.update({"promotion_id": coupon["promotion_id"], "kind": promo and promo["kind"],
                        "remaining": None if limit is None else max(0, limit - coupon.get("used", 0)),
                        "member_uses": uses, "ends_at": coupon.get("ends_at")})
            if promo and reason is None:
                out["estimated_discount"] = pricing.rule_amount(
                    {**promo, "scope": {}}, data["subtotal"])
        return out

    @rpc
    def get_coupon_reservation(self, order_id):
        doc = self.store.db.coupon_reservations.find_one({"_id": order_id})
        if doc is None:
            raise NotFound(f"no coupon reservation for order {order_id}", {"order_id": order_id})
        return public(doc)

    @rpc
    def run_expiry(self, now=None):
        """Release coupon reservations past their TTL and send campaign messages that are due.
        The timer calls it; tests call it with an explicit `now`."""
        moment = _now(now)
        released = 0
        for order_id in expired_reservations(self.store.db, moment):
            with self.store.transaction() as tx:
                if release_reservation(tx, order_id, "expired", moment, only_expired=True):
                    released += 1
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

    def _tier_discount_bp(self, db, tier) -> int:
        """Member owns each tier's benefits and announces its discount percent in
        its events; the configured table only covers tiers not yet heard of."""
        if not tier:
            return 0
        learned = db.tier_benefits.find_one({"_id": tier})
        if learned is not None:
            return learned["discount_bp"]
        return self.config.tier_discounts.get(tier, 0)

    @staticmethod
    def _learn_tier_benefit(tx, tier, percent, at) -> None:
        """Keep the newest discount percent member announced for `tier` (inside the
        transaction a read then write is safe: a concurrent writer conflicts)."""
        if not tier or percent is None:
            return
        known = tx.db.tier_benefits.find_one({"_id": tier}, session=tx.session)
        if known is not None and known["at"] > at:
            return
        tx.db.tier_benefits.replace_one(
            {"_id": tier}, {"discount_bp": int(round(float(percent) * 100)), "at": at},
            upsert=True, session=tx.session)

    @handles("member", "member_registered")
    def on_member_registered(self, envelope):
        data, at = envelope["data"], envelope["occurred_at"]
        with self.store.transaction() as tx:
            self._learn_tier_benefit(tx, data.get("tier"), data.get("tier_discount_percent"), at)
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
            self._learn_tier_benefit(tx, data["new_tier"], data.get("tier_discount_percent"), at)
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

"""The catalog service's entrypoints: validate, one transaction, plain dicts."""
from __future__ import annotations

from nameko.timer import timer

from services.catalog import domain, schemas, search
from services.catalog import metrics as m
from services.catalog.store import INDEXES, CatalogStore, get_or_404
from services.catalog.usecases import commands, inventory
from services.catalog.views import (
    ledger_dict,
    merchant_dict,
    product_dict,
    reservation_dict,
    review_dict,
    stock_dict,
)
from shared.clock import parse_iso, to_iso, utcnow
from shared.config import env_float, env_int
from shared.errors import ValidationFailed
from shared.messaging.rpc import rpc
from shared.messaging.subscriptions import handles
from shared.observability.logs import get_logger
from shared.security.guard import Id, Int, Items, Page, PageSize, Payload, Text, When
from shared.service import ShopService
from shared.validation import load

log = get_logger(__name__)

# Read at import: a timer's interval is fixed when the class is defined.
EXPIRY_INTERVAL = env_float("CATALOG_EXPIRY_INTERVAL", 60.0)


def reservation_ttl() -> int:
    return env_int("CATALOG_RESERVATION_TTL", 86400)


def default_threshold() -> int:
    return env_int("CATALOG_LOW_STOCK_THRESHOLD", 5)


def _now(now: str | None):
    if now is None:
        return utcnow()
    try:
        return parse_iso(now)
    except ValueError:
        raise ValidationFailed.field("now", "not an ISO 8601 timestamp") from None


def _count_low(fired: list[str]) -> None:
    for event in fired:
        if event == "stock_ran_low":
            m.STOCK_RAN_LOW.inc()


class CatalogService(ShopService):
    name = "catalog"
    store = CatalogStore(indexes=INDEXES)

    @property
    def currency(self) -> str:
        return self._shop_settings.currency

    # Products ---------------------------------------------------------------
    @rpc(schema={"product": Payload()})
    def create_product(self, product):
        payload = load(schemas.NewProduct(), product)
        currency = domain.check_currency(payload["currency"], self.currency)
        with self.store.transaction() as tx:
            doc = commands.create_product(tx, payload, currency, default_threshold(), utcnow())
        log.info("product_created", product_id=doc["_id"])
        return product_dict(doc)

    @rpc(schema={"product_id": Id()})
    def get_product(self, product_id):
        ref = load(schemas.ProductRef(), {"product_id": product_id})
        return product_dict(get_or_404(self.store.db, "products", ref["product_id"], "product_id"))

    @rpc(schema={"product_ids": Items(Id(), max=500)})
    def get_products(self, product_ids):
        """Several products at once (unknown ids are left out)."""
        if not isinstance(product_ids, list) or not all(isinstance(p, str) for p in product_ids):
            raise ValidationFailed.field("product_ids", "must be a list of ids")
        return [product_dict(d) for d in self.store.db.products.find({"_id": {"$in": product_ids}})]

    @rpc(schema={"product_id": Id(), "changes": Payload()})
    def update_product(self, product_id, changes):
        payload = load(schemas.UpdateProduct(), {"product_id": product_id, "changes": changes})
        with self.store.transaction() as tx:
            doc = commands.update_product(tx, payload["product_id"], payload["changes"], utcnow())
        return product_dict(doc)

    @rpc(schema={"product_id": Id()})
    def publish_product(self, product_id):
        ref = load(schemas.ProductRef(), {"product_id": product_id})
        with self.store.transaction() as tx:
            doc = commands.publish_product(tx, ref["product_id"], utcnow())
        return product_dict(doc)

    @rpc(schema={"product_id": Id()})
    def unpublish_product(self, product_id):
        ref = load(schemas.ProductRef(), {"product_id": product_id})
        with self.store.transaction() as tx:
            doc = commands.unpublish_product(tx, ref["product_id"], utcnow())
        return product_dict(doc)

    @rpc(schema={"product_id": Id(), "price": Int(0), "currency": Text(3), "changed_by": Text(200, min=0)})
    def set_price(self, product_id, price, currency=None, changed_by=None):
        change = load(schemas.SetPrice(), {"product_id": product_id, "price": price,
                                           "currency": currency, "changed_by": changed_by})
        domain.check_currency(change["currency"], self.currency)
        with self.store.transaction() as tx:
            doc = commands.set_price(tx, change["product_id"], change["price"], change["changed_by"],
                                     utcnow())
        return product_dict(doc)

    @rpc(schema={"product_id": Id()})
    def get_price_history(self, product_id):
        ref = load(schemas.ProductRef(), {"product_id": product_id})
        get_or_404(self.store.db, "products", ref["product_id"], "product_id")
        rows = self.store.db.price_history.find({"product_id": ref["product_id"]}).sort("at", -1)
        return [{"at": to_iso(r["at"]), "old_price": r["old_price"],
                 "new_price": r["new_price"], "by": r.get("by")} for r in rows]

    @rpc(schema={"query": Text(200, min=0), "category": Text(100), "sort": Text(32),
                 "page": Page(), "page_size": PageSize()})
    def search_products(self, query=None, category=None, sort="relevance", page=1, page_size=20):
        args = load(schemas.Search(), {"query": query, "category": category, "sort": sort,
                                       "page": page, "page_size": page_size})
        result = next(self.store.db.products.aggregate(search.pipeline(**args)))
        total = result["total"][0]["n"] if result["total"] else 0
        items = []
        for doc in result["items"]:
            item = product_dict(doc)
            item["score"] = doc.get("score", 0)
            items.append(item)
        return {"items": items, "total": total, "page": args["page"], "page_size": args["page_size"]}

    # Inventory ----------------------------------------------------------------
    @rpc(schema={"product_id": Id(), "delta": Int(-10**9, 10**9), "reason": Text(200)})
    def adjust_stock(self, product_id, delta, reason):
        change = load(schemas.AdjustStock(), {"product_id": product_id, "delta": delta, "reason": reason})
        with self.store.transaction() as tx:
            doc, fired = inventory.adjust(tx, change["product_id"], change["delta"], change["reason"],
                                          utcnow())
        _count_low([fired] if fired else [])
        return stock_dict(doc)

    @rpc(schema={"product_id": Id()})
    def get_stock(self, product_id):
        ref = load(schemas.ProductRef(), {"product_id": product_id})
        return stock_dict(get_or_404(self.store.db, "products", ref["product_id"], "product_id"))

    @rpc(schema={"product_id": Id(), "limit": Int(1, 1000)})
    def get_stock_ledger(self, product_id, limit=100):
        ref = load(schemas.ProductRef(), {"product_id": product_id})
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise ValidationFailed.field("limit", "must be an integer from 1 to 1000")
        rows = self.store.db.stock_ledger.find({"product_id": ref["product_id"]}).sort(
            [("at", -1), ("_id", -1)]).limit(limit)
        return [ledger_dict(r) for r in rows]

    @rpc(schema={"order_id": Id()})
    def get_reservation(self, order_id):
        if not isinstance(order_id, str) or not order_id:
            raise ValidationFailed.field("order_id", "must be a non-empty string")
        return reservation_dict(get_or_404(self.store.db, "reservations", order_id, "order_id"))

    @rpc(schema={"now": When()})
    def run_reservation_expiry(self, now=None):
        """Release reservations past their TTL whose order was never paid (the
        timer calls this; tests pass `now`). Returns how many were released."""
        moment = _now(now)
        released = 0
        for order_id in inventory.expiry_candidates(self.store.db, moment):
            with self.store.transaction() as tx:
                done = inventory.expire(tx, order_id, moment)
            if done:
                released += 1
                m.RESERVATIONS_EXPIRED.inc()
                m.RELEASES.labels("reservation_expired").inc()
                log.info("reservation_expired", order_id=order_id)
        m.LOW_STOCK_PRODUCTS.set(self.store.db.products.count_documents({"stock.low": True}))
        return {"released": released}

    @timer(interval=EXPIRY_INTERVAL)
    def expire_reservations(self):
        self.run_reservation_expiry()

    # Merchants ----------------------------------------------------------------
    @rpc(schema={"merchant": Payload()})
    def apply_merchant(self, merchant):
        payload = load(schemas.NewMerchant(), merchant)
        with self.store.transaction() as tx:
            doc = commands.apply_merchant(tx, payload, utcnow())
        return merchant_dict(doc)

    @rpc(schema={"merchant_id": Id()})
    def get_merchant(self, merchant_id):
        args = load(schemas.MerchantAction(), {"merchant_id": merchant_id})
        return merchant_dict(get_or_404(self.store.db, "merchants", args["merchant_id"], "merchant_id"))

    def _merchant_action(self, schema, action, merchant_id, reason):
        args = load(schema, {"merchant_id": merchant_id, "reason": reason})
        with self.store.transaction() as tx:
            doc = commands.change_merchant(tx, args["merchant_id"], action, args["reason"], utcnow())
        return merchant_dict(doc)

    @rpc(schema={"merchant_id": Id(), "reason": Text(500, min=0)})
    def approve_merchant(self, merchant_id, reason=None):
        return self._merchant_action(schemas.MerchantAction(), "approve", merchant_id, reason)

    @rpc(schema={"merchant_id": Id(), "reason": Text(500)})
    def reject_merchant(self, merchant_id, reason):
        return self._merchant_action(schemas.MerchantActionWithReason(), "reject", merchant_id, reason)

    @rpc(schema={"merchant_id": Id(), "reason": Text(500)})
    def suspend_merchant(self, merchant_id, reason):
        return self._merchant_action(schemas.MerchantActionWithReason(), "suspend", merchant_id, reason)

    @rpc(schema={"merchant_id": Id(), "kind": Text(64), "reason": Text(500), "amount": Int(0)})
    def penalize_merchant(self, merchant_id, kind, reason, amount=0):
        payload = load(schemas.Penalty(), {"merchant_id": merchant_id, "kind": kind, "reason": reason,
                                           "amount": amount})
        with self.store.transaction() as tx:
            doc = commands.penalize_merchant(tx, payload, utcnow())
        return merchant_dict(doc)

    # Reviews ------------------------------------------------------------------
    @rpc(schema={"product_id": Id(), "member_id": Id(), "rating": Int(-100, 100), "text": Text(5000, min=0)})
    def add_review(self, product_id, member_id, rating, text=""):
        payload = load(schemas.NewReview(), {"product_id": product_id, "member_id": member_id,
                                             "rating": rating, "text": text})
        with self.store.transaction() as tx:
            doc = commands.add_review(tx, payload, utcnow())
        m.REVIEWS.labels("added").inc()
        return review_dict(doc)

    @rpc(schema={"review_id": Id(), "status": Text(32), "note": Text(500, min=0)})
    def moderate_review(self, review_id, status, note=None):
        payload = load(schemas.Moderate(), {"review_id": review_id, "status": status, "note": note})
        with self.store.transaction() as tx:
            doc = commands.moderate_review(tx, payload["review_id"], payload["status"], payload["note"],
                                           utcnow())
        m.REVIEWS.labels(payload["status"]).inc()
        return review_dict(doc)

    @rpc(schema={"product_id": Id(), "status": Text(32), "page": Page(), "page_size": PageSize()})
    def list_reviews(self, product_id=None, status="approved", page=1, page_size=20):
        args = load(schemas.ListReviews(), {"product_id": product_id, "status": status, "page": page,
                                            "page_size": page_size})
        query: dict = {"status": args["status"]}
        if args["product_id"]:
            get_or_404(self.store.db, "products", args["product_id"], "product_id")
            query["product_id"] = args["product_id"]
        cursor = self.store.db.reviews.find(query).sort([("created_at", -1), ("_id", -1)]).skip(
            (args["page"] - 1) * args["page_size"]).limit(args["page_size"])
        return {"items": [review_dict(r) for r in cursor],
                "total": self.store.db.reviews.count_documents(query),
                "page": args["page"], "page_size": args["page_size"]}

    # Events -------------------------------------------------------------------
    @handles("order", "order_placed", one_at_a_time=domain.stock_keys)
    def on_order_placed(self, envelope):
        data = envelope["data"]
        with self.store.transaction() as tx:
            outcome, fired = inventory.reserve_order(tx, data["order_id"], data["lines"], utcnow(),
                                                     reservation_ttl(), data.get("member_id"))
        if outcome != "duplicate":
            m.RESERVATIONS.labels(outcome).inc()
        _count_low(fired)
        log.info("order_reservation", order_id=data["order_id"], outcome=outcome)

    @handles("order", "order_cancelled")
    def on_order_cancelled(self, envelope):
        order_id = envelope["data"]["order_id"]
        with self.store.transaction() as tx:
            outcome, _ = inventory.cancel_order(tx, order_id, utcnow())
        if outcome == "released":
            m.RELEASES.labels("order_cancelled").inc()
        log.info("order_cancellation", order_id=order_id, outcome=outcome)

    @handles("order", "order_paid", one_at_a_time=domain.stock_keys)
    def on_order_paid(self, envelope):
        data = envelope["data"]
        with self.store.transaction() as tx:
            inventory.record_paid(tx, data["order_id"], data["lines"], utcnow())

    @handles("fulfillment", "shipment_dispatched", one_at_a_time=domain.stock_keys)
    def on_shipment_dispatched(self, envelope):
        data = envelope["data"]
        with self.store.transaction() as tx:
            outcome = inventory.commit_shipment(tx, data["order_id"], data.get("lines", []), utcnow())
        log.info("reservation_commit", order_id=data["order_id"], outcome=outcome)

    @handles("fulfillment", "return_received", one_at_a_time=domain.stock_keys)
    def on_return_received(self, envelope):
        data = envelope["data"]
        with self.store.transaction() as tx:
            inventory.restock_return(tx, data["return_id"], data["order_id"], data["lines"], utcnow())

    @handles("member", "member_erased")
    def on_member_erased(self, envelope):
        member_id = envelope["data"]["member_id"]
        with self.store.transaction() as tx:
            count = commands.erase_member(tx, member_id, utcnow())
        log.info("member_reviews_anonymised", member_id=member_id, reviews=count)


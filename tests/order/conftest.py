"""Stand-ins for the services order talks to (real nameko services on the real broker,
named as the real ones) and a helper that injects events as their producers publish them."""
from __future__ import annotations

import pytest
from nameko.amqp.publish import Publisher
from pymongo import IndexModel, ReturnDocument

from shared.errors import Conflict, NotFound, ValidationFailed
from shared.messaging.outbox import build_envelope
from shared.messaging.rpc import rpc
from shared.messaging.subscriptions import handles
from shared.messaging.topology import event_exchange
from shared.security.guard import Bool, Id, Objects, Payload, Text
from shared.service import ShopService
from shared.storage.store import Store

ADDRESS = {"name": "Li Wei", "line1": "88 Century Avenue", "city": "Shanghai", "region": "Shanghai",
           "postal_code": "200120", "phone": "+8613800138000", "country": "CN"}


class FakeCatalog(ShopService):
    """Plays catalog: products with stock, reserves on order_placed, releases on order_cancelled."""

    name = "catalog"
    store = Store(indexes={"products": [IndexModel("sku")]})

    @rpc(schema={"product": Payload(), "published": Bool(), "announce": Bool()})
    def add_product(self, product, published=True, announce=True):
        """Created (version 1) and, if `published`, published (version 2), like catalog."""
        listing = {"product_id": product["id"], "sku": product["id"], "title": "t",
                   "category": product["category"], "price": product["price"], "currency": "CNY"}
        with self.store.transaction() as tx:
            tx.db.products.insert_one({"_id": product["id"], **product,
                                       "status": "published" if published else "draft",
                                       "version": 2 if published else 1},
                                      session=tx.session)
            if announce:
                tx.emit("product_created", {**listing, "merchant_id": None, "status": "draft",
                                            "version": 1})
                if published:
                    tx.emit("product_published", {**listing, "status": "published", "version": 2})
        return {"id": product["id"]}

    @rpc(schema={"product_id": Id(), "changes": Payload()})
    def set_product(self, product_id, changes):
        """Change the product here without an event (as if the event were still on its way);
        its version moves like catalog's. Returns the new version."""
        doc = self.store.db.products.find_one_and_update(
            {"_id": product_id}, {"$set": changes, "$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER)
        return doc["version"]


    @rpc(schema={"product_id": Id()})
    def get_product(self, product_id):
        doc = self.store.db.products.find_one({"_id": product_id})
        if doc is None:
            raise NotFound("no product", {"product_id": product_id})
        return {"id": doc["_id"], "category": doc["category"], "price": doc["price"],
                "currency": "CNY", "status": doc["status"], "version": doc["version"]}

    @rpc(schema={"order_id": Id()})
    def reservation_of(self, order_id):
        doc = self.store.db.reservations.find_one({"_id": order_id})
        return doc and {"state": doc["state"]}

    @handles("order", "order_placed")
    def on_order_placed(self, envelope):
        data = envelope["data"]
        with self.store.transaction() as tx:
            short = []
            for line in data["lines"]:
                doc = tx.db.products.find_one({"_id": line["product_id"]}, session=tx.session) or {}
                if doc.get("stock", 0) < line["quantity"]:
                    short.append({"product_id": line["product_id"], "requested": line["quantity"],
                                  "available": doc.get("stock", 0)})
            if short:
                tx.emit("stock_reservation_failed", {"order_id": data["order_id"], "short_lines": short})
                return
            for line in data["lines"]:
                tx.db.products.update_one({"_id": line["product_id"]}, {"$inc": {"stock": -line["quantity"]}},
                                          session=tx.session)
            tx.db.reservations.insert_one({"_id": data["order_id"], "state": "reserved",
                                           "lines": data["lines"]}, session=tx.session)
            tx.emit("stock_reserved", {"order_id": data["order_id"],
                                       "lines": [{"product_id": x["product_id"], "quantity": x["quantity"]}
                                                 for x in data["lines"]]})

    @handles("order", "order_cancelled")
    def on_order_cancelled(self, envelope):
        with self.store.transaction() as tx:
            tx.db.reservations.update_one({"_id": envelope["data"]["order_id"], "state": "reserved"},
                                          {"$set": {"state": "released"}}, session=tx.session)


class FakeMember(ShopService):
    name = "member"
    tiers: dict = {}

    @rpc(schema={"member_id": Id()})
    def get_member(self, member_id):
        if member_id not in self.tiers:
            raise NotFound("no member", {"member_id": member_id})
        return {"id": member_id, "tier": self.tiers[member_id], "version": 1}


class FakeMarketing(ShopService):
    """Plays marketing's price_cart: gold tier 10% off each line; coupon SAVE10 = 10.00 off the
    cart (cart-level, split by order); coupon FREESHIP waives shipping; others do not apply."""

    name = "marketing"
    store = Store()
    gates: list = []  # eventlet Events: the next calls of price_cart each wait for one

    @rpc(schema={"member_id": Id(), "lines": Objects(), "coupon_code": Id(), "tier": Text(64),
                 "order_id": Id()})
    def price_cart(self, member_id, lines, coupon_code=None, tier=None, order_id=None):
        if self.gates:
            self.gates.pop(0).wait()
        if coupon_code and order_id and (self.store.db.coupons.find_one({"_id": order_id}) or {}).get(
                "state") == "released":  # as marketing answers for a closed order's coupon
            raise Conflict(f"order {order_id} is already closed", {"order_id": order_id})
        if coupon_code not in (None, "SAVE10", "FREESHIP"):
            raise ValidationFailed.field("coupon_code", "coupon does not exist or has expired")
        priced, discount = [], 0
        for line in lines:
            off = line["unit_price"] * line["quantity"] // 10 if tier == "gold" else 0
            discount += off
            priced.append({**line, "discount": off, "discounts": [
                {"promotion_id": "prm_gold", "rule": "tier_gold_10pct", "amount": off,
                 "reason": "gold members save 10%"}] if off else []})
        explained = []
        if coupon_code == "SAVE10":
            discount += 1000
            explained.append({"promotion_id": "prm_save10", "rule": "coupon", "amount": 1000,
                              "reason": "coupon SAVE10: 10.00 off"})
        subtotal = sum(x["unit_price"] * x["quantity"] for x in lines)
        answer = {"lines": priced, "subtotal": subtotal, "discount": discount, "discounts": explained,
                  "total": subtotal - discount}
        if coupon_code == "FREESHIP":
            answer["shipping_fee"] = 0
        if coupon_code and order_id:
            with self.store.transaction() as tx:
                tx.db.coupons.update_one({"_id": order_id}, {"$setOnInsert": {"code": coupon_code,
                                                                             "state": "reserved"}},
                                         upsert=True, session=tx.session)
        return answer

    @rpc(schema={"order_id": Id()})
    def coupon_of(self, order_id):
        doc = self.store.db.coupons.find_one({"_id": order_id})
        return doc and {"state": doc["state"], "code": doc["code"]}

    @handles("order", "order_cancelled")
    def on_order_cancelled(self, envelope):
        self._release(envelope)

    @handles("order", "order_rejected")
    def on_order_rejected(self, envelope):
        self._release(envelope)

    def _release(self, envelope):
        with self.store.transaction() as tx:
            tx.db.coupons.update_one({"_id": envelope["data"]["order_id"], "state": "reserved"},
                                     {"$set": {"state": "released"}}, session=tx.session)


def publish(amqp_uri: str, source: str, event_type: str, data: dict, envelope: dict | None = None) -> dict:
    """Publish an event exactly as its producer's outbox relay would; pass `envelope` to redeliver."""
    envelope = envelope or build_envelope(source, event_type, data)
    exchange = event_exchange(envelope["source"])
    Publisher(amqp_uri, use_confirms=True, mandatory=True, serializer="json").publish(
        envelope, exchange=exchange, routing_key=envelope["event_type"], declare=[exchange])
    return envelope


@pytest.fixture
def stack(start_service):
    """Order with its stand-ins; timers off so tests drive the clock."""
    from services.order.service import OrderService

    def start(**extra):
        FakeMember.tiers.clear()
        FakeMember.tiers.update({"mem_1": "bronze", "mem_e": "bronze", "mem_keep": "silver"})
        catalog = start_service(FakeCatalog)
        start_service(FakeMember)
        marketing = start_service(FakeMarketing)
        order = start_service(OrderService, extra={"timers_enabled": 0, **extra})
        return {"order": order, "catalog": catalog, "marketing": marketing}

    return start

"""A small example pair of services built only from chassis parts.

They play catalog's and analytics' roles in the event catalog (in the test's
own virtual host and databases), so they publish and consume real contract
events: `stock_adjusted` (catalog → analytics) and `order_placed` (order →
catalog)."""
from __future__ import annotations

import eventlet
from marshmallow import Schema, fields, validate
from pymongo import ASCENDING, IndexModel
from pymongo.errors import AutoReconnect

from shared.errors import NotFound, ValidationFailed
from shared.messaging.rpc import RpcClient, rpc
from shared.messaging.subscriptions import handles, handles_batch
from shared.observability.context import get_correlation_id
from shared.observability.logs import get_logger
from shared.security.guard import Id, Int, Text
from shared.service import ShopService
from shared.storage.store import Store
from shared.validation import load
from shared.web.http import http, json_response

log = get_logger(__name__)


class AdjustStock(Schema):
    product_id = fields.Str(required=True, validate=validate.Length(min=1))
    delta = fields.Int(required=True, strict=True)
    reason = fields.Str(required=True, validate=validate.Length(min=1, max=200))


class ExampleInventory(ShopService):
    name = "catalog"
    store = Store(indexes={"stock": [IndexModel([("updated_at", ASCENDING)])]})
    analytics = RpcClient("analytics", timeout=1.5)

    @rpc(schema={"product_id": Id(), "delta": Int(), "reason": Text(200)})
    def adjust_stock(self, product_id, delta, reason):
        change = load(AdjustStock(), {"product_id": product_id, "delta": delta, "reason": reason})
        with self.store.transaction() as tx:
            doc = tx.db.stock.find_one({"_id": change["product_id"]}, session=tx.session) or {
                "_id": change["product_id"], "on_hand": 0, "reserved": 0}
            on_hand = doc["on_hand"] + change["delta"]
            if on_hand < 0:
                raise ValidationFailed.field("delta", "would make stock negative")
            version = doc.get("version", 0) + 1  # the aggregate's version (shared/storage/readmodel.py)
            tx.db.stock.update_one({"_id": change["product_id"]},
                                   {"$set": {"on_hand": on_hand, "reserved": doc["reserved"],
                                             "version": version}},
                                   upsert=True, session=tx.session)
            tx.emit("stock_adjusted", {"product_id": change["product_id"], "delta": change["delta"],
                                       "reason": change["reason"], "on_hand": on_hand,
                                       "available": on_hand - doc["reserved"], "version": version})
        log.info("stock_adjusted", product_id=change["product_id"], on_hand=on_hand)
        return {"id": change["product_id"], "on_hand": on_hand, "reserved": doc["reserved"]}

    @rpc(schema={"product_id": Id()})
    def get_stock(self, product_id):
        doc = self.store.db.stock.find_one({"_id": product_id})
        if doc is None:
            raise NotFound(f"no stock for product {product_id}", {"product_id": product_id})
        return {"id": doc["_id"], "on_hand": doc["on_hand"], "reserved": doc["reserved"]}

    @http("GET", "/stock/<product_id>")
    def http_stock(self, request, product_id):
        return json_response(self.get_stock(product_id))

    @rpc(schema={})
    def ask_analytics(self):
        return self.analytics.echo_correlation()

    @handles("order", "order_placed")
    def on_order_placed(self, envelope):
        data = envelope["data"]
        if data["order_id"].startswith("slow"):
            eventlet.sleep(2)  # long enough to be in flight when SIGTERM arrives
        if data["order_id"].startswith("poison"):
            flag = self.store.db.flags.find_one({"_id": "cure"})
            if not flag:
                raise RuntimeError("cannot handle this order yet")
        with self.store.transaction() as tx:
            for line in data["lines"]:
                tx.db.stock.update_one({"_id": line["product_id"]},
                                       {"$inc": {"reserved": line["quantity"]}},
                                       upsert=True, session=tx.session)
            tx.db.applied.insert_one({"order_id": data["order_id"]}, session=tx.session)
            tx.emit("stock_reserved", {"order_id": data["order_id"],
                                       "lines": [{"product_id": line["product_id"],
                                                  "quantity": line["quantity"]}
                                                 for line in data["lines"]]})


    @handles("order", "order_cancelled", steps=True)
    def on_order_cancelled(self, envelope):
        """Two steps, as a saga's confirm-then-capture: each applies once however often
        the handler re-runs. A `fail_second_step_once` flag makes step two fail once
        with a transient store error after step one committed."""
        order_id = envelope["data"]["order_id"]
        with self.store.transaction() as tx:
            tx.db.steps.update_one({"_id": order_id}, {"$inc": {"first": 1}}, upsert=True,
                                   session=tx.session)
        if self.store.db.flags.find_one_and_delete({"_id": "fail_second_step_once"}):
            raise AutoReconnect("mongod went away between the steps")
        with self.store.transaction() as tx:
            tx.db.steps.update_one({"_id": order_id}, {"$inc": {"second": 1}}, upsert=True,
                                   session=tx.session)


class ExampleAnalytics(ShopService):
    name = "analytics"
    store = Store()

    @handles_batch(max_size=50, max_wait=0.05)
    def on_event_batch(self, envelopes):
        """Every other event analytics consumes, folded a batch per transaction."""
        if any(e["data"].get("order_id", "").startswith("poison") for e in envelopes):
            raise RuntimeError("a poison event in the batch")
        with self.store.transaction() as tx:
            if tx.fresh:
                tx.db.batched.insert_many([{"event_id": e["event_id"], "event_type": e["event_type"],
                                            "batch_size": len(envelopes)} for e in tx.fresh],
                                          session=tx.session)

    @handles("catalog", "stock_adjusted")
    def on_stock_adjusted(self, envelope):
        with self.store.transaction() as tx:
            tx.db.seen.insert_one({"event_id": envelope["event_id"],
                                   "product_id": envelope["data"]["product_id"],
                                   "correlation_id": get_correlation_id()}, session=tx.session)
        log.info("stock_adjusted_seen", product_id=envelope["data"]["product_id"])

    @rpc(schema={})
    def echo_correlation(self):
        log.info("echo_called")
        return get_correlation_id()

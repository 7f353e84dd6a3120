"""The order service's nameko entrypoints: thin; the work is in `usecases` and `domain`."""
from __future__ import annotations

from datetime import datetime

from nameko.timer import timer

from services.order import schemas
from services.order.config import (
    CATALOG_TIMEOUT,
    MARKETING_TIMEOUT,
    MEMBER_TIMEOUT,
    TIMER_INTERVAL,
    OrderSettings,
)
from services.order.payments import build_provider
from services.order.readmodels import apply, product_changes
from services.order.store import INDEXES
from services.order.usecases import OrderWorkflow
from shared.clock import utcnow
from shared.messaging.rpc import RpcClient, rpc
from shared.messaging.subscriptions import handles
from shared.observability.logs import get_logger
from shared.security.guard import Id, Objects, Page, PageSize, Payload, Text, When
from shared.service import ShopService
from shared.storage.readmodel import version_of
from shared.storage.store import Store
from shared.validation import load

log = get_logger(__name__)


class OrderService(ShopService):
    name = "order"
    store = Store(indexes=INDEXES)
    catalog = RpcClient("catalog", timeout=CATALOG_TIMEOUT)
    member = RpcClient("member", timeout=MEMBER_TIMEOUT)
    marketing = RpcClient("marketing", timeout=MARKETING_TIMEOUT)

    def _flow(self) -> OrderWorkflow:
        settings = self._shop_settings
        return OrderWorkflow(self.store, catalog=self.catalog, member=self.member,
                             marketing=self.marketing,
                             provider=build_provider(OrderSettings.load(settings).payment_provider,
                                                     self.store.db),
                             settings=OrderSettings.load(settings), currency=settings.currency)

    @staticmethod
    def _now(now) -> datetime:
        return load(schemas.Now(), {"now": now})["now"] or utcnow()

    # -- RPC --------------------------------------------------------------------------
    @rpc(schema={"member_id": Id(), "lines": Objects(max=200), "coupon_code": Id()})
    def quote(self, member_id, lines, coupon_code=None):
        return self._flow().quote({"member_id": member_id, "lines": lines, "coupon_code": coupon_code},
                                  utcnow())

    @rpc(schema={"member_id": Id(), "lines": Objects(max=200), "shipping_address": Payload(),
                 "payment": Payload(), "coupon_code": Id(), "idempotency_key": Id(),
                 "attribution": Payload()})
    def place_order(self, member_id, lines, shipping_address, payment, coupon_code=None,
                    idempotency_key=None, attribution=None):
        return self._flow().place_order(
            {"member_id": member_id, "lines": lines, "shipping_address": shipping_address,
             "payment": payment, "coupon_code": coupon_code, "idempotency_key": idempotency_key,
             "attribution": attribution}, utcnow())

    @rpc(schema={"order_id": Id()})
    def get_order(self, order_id):
        return self._flow().get_order(order_id)

    @rpc(schema={"member_id": Id(), "status": Text(32), "since": When(), "until": When(), "page": Page(),
                 "page_size": PageSize()})
    def list_orders(self, member_id=None, status=None, since=None, until=None, page=1, page_size=20):
        return self._flow().list_orders({"member_id": member_id, "status": status, "since": since,
                                         "until": until, "page": page, "page_size": page_size})

    @rpc(schema={"order_id": Id(), "reason": Text(200)})
    def cancel_order(self, order_id, reason):
        return self._flow().cancel_order({"order_id": order_id, "reason": reason}, utcnow())

    @rpc(schema={"order_id": Id(), "lines": Objects(max=200), "reason": Text(200)})
    def request_return(self, order_id, lines, reason):
        return self._flow().request_return({"order_id": order_id, "lines": lines, "reason": reason},
                                           utcnow())

    @rpc(schema={"now": When()})
    def run_expiry(self, now=None):
        """Cancel (reason `expired`) orders still pending/confirmed after ORDER_EXPIRY_SECONDS."""
        return {"expired": self._flow().run_expiry(self._now(now))}

    @rpc(schema={"now": When()})
    def run_payment_retries(self, now=None):
        """Attempt every capture due at `now`; returns the count per outcome."""
        return self._flow().run_payment_retries(self._now(now))

    @rpc(schema={"now": When()})
    def run_refunds(self, now=None):
        """Pay back every refund still pending at `now` (a crash left it, or the provider failed)."""
        return {"refunded": self._flow().run_refunds(self._now(now))}

    # -- timers (safe on many replicas: each unit of work is claimed conditionally) ---
    @timer(interval=TIMER_INTERVAL)
    def tick(self):
        if not OrderSettings.load(self._shop_settings).timers_enabled:
            return
        flow, now = self._flow(), utcnow()
        for job in (flow.run_payment_retries, flow.run_refunds, flow.run_expiry):
            try:
                job(now)
            except Exception as exc:  # one failing job must not starve the others
                log.warning("order_timer_job_failed", job=job.__name__, error=type(exc).__name__)

    # -- events -----------------------------------------------------------------------
    # Two steps: the confirm, then the capture's record (payments never run inside a
    # transaction); each is keyed in the inbox so a re-run skips only what happened.
    @handles("catalog", "stock_reserved", steps=True)
    def on_stock_reserved(self, envelope):
        self._flow().on_stock_reserved(envelope["data"], utcnow())

    @handles("catalog", "stock_reservation_failed")
    def on_stock_reservation_failed(self, envelope):
        self._flow().on_stock_reservation_failed(envelope["data"], utcnow())

    @handles("fulfillment", "shipment_created")
    def on_shipment_created(self, envelope):
        self._flow().on_shipment("shipment_created", envelope["data"], utcnow())

    @handles("fulfillment", "shipment_dispatched")
    def on_shipment_dispatched(self, envelope):
        self._flow().on_shipment("shipment_dispatched", envelope["data"], utcnow())

    @handles("fulfillment", "shipment_delivered")
    def on_shipment_delivered(self, envelope):
        self._flow().on_shipment("shipment_delivered", envelope["data"], utcnow())

    @handles("fulfillment", "return_received", steps=True)  # the return, then the refund's record
    def on_return_received(self, envelope):
        self._flow().on_return_received(envelope["data"], utcnow())

    @handles("catalog", "product_created")
    def on_product_created(self, envelope):
        self._product_event(envelope)

    @handles("catalog", "product_published")
    def on_product_published(self, envelope):
        self._product_event(envelope)

    @handles("catalog", "product_unpublished")
    def on_product_unpublished(self, envelope):
        self._product_event(envelope)

    @handles("catalog", "price_changed")
    def on_price_changed(self, envelope):
        self._product_event(envelope)

    @handles("member", "member_registered")
    def on_member_registered(self, envelope):
        self._member_tier(envelope["data"]["member_id"], envelope["data"]["tier"], envelope)

    @handles("member", "tier_changed")
    def on_tier_changed(self, envelope):
        self._member_tier(envelope["data"]["member_id"], envelope["data"]["new_tier"], envelope)

    @handles("member", "member_erased")
    def on_member_erased(self, envelope):
        self._flow().on_member_erased(envelope["data"], utcnow())

    def _product_event(self, envelope):
        data = envelope["data"]
        with self.store.transaction() as tx:
            apply(tx.db.products, tx.session, data["product_id"],
                  product_changes(envelope["event_type"], data), version_of(data))

    def _member_tier(self, member_id, tier, envelope):
        with self.store.transaction() as tx:
            apply(tx.db.members, tx.session, member_id, {"tier": tier}, version_of(envelope["data"]))

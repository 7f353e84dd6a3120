"""The fulfillment nameko service: entrypoints only; the use cases are in usecases.py."""
from __future__ import annotations

from nameko.timer import timer

from services.fulfillment import schemas, usecases
from services.fulfillment.config import SLA_CHECK_INTERVAL, Config
from services.fulfillment.store import INDEXES
from shared.clock import parse_iso, utcnow
from shared.messaging.rpc import rpc
from shared.messaging.subscriptions import handles
from shared.observability.logs import get_logger
from shared.security.guard import Bool, Id, Objects, Page, PageSize, Payload, Text, When
from shared.service import ShopService
from shared.storage.store import Store
from shared.validation import load

log = get_logger(__name__)


class FulfillmentService(ShopService):
    name = "fulfillment"
    store = Store(indexes=INDEXES)
    config = Config()

    # --- warehouses ---------------------------------------------------------------------------
    @rpc(schema={"warehouse": Payload()})
    def create_warehouse(self, warehouse):
        return usecases.create_warehouse(self.store, warehouse, utcnow())

    @rpc(schema={"warehouse_id": Id(), "changes": Payload()})
    def update_warehouse(self, warehouse_id, changes):
        return usecases.update_warehouse(self.store, warehouse_id, changes, utcnow())

    @rpc(schema={"warehouse_id": Id()})
    def get_warehouse(self, warehouse_id):
        return usecases.get_warehouse(self.store, warehouse_id)

    @rpc(schema={"region": Text(100), "active": Bool(), "page": Page(), "page_size": PageSize()})
    def list_warehouses(self, region=None, active=None, page=1, page_size=20):
        return usecases.list_warehouses(self.store, region=region, active=active, page=page,
                                   page_size=page_size)

    # --- shipments ----------------------------------------------------------------------------
    @rpc(schema={"shipment_id": Id()})
    def get_shipment(self, shipment_id):
        return usecases.get_shipment(self.store, shipment_id)

    @rpc(schema={"order_id": Id()})
    def get_shipment_for_order(self, order_id):
        return usecases.get_shipment_for_order(self.store, order_id)

    @rpc(schema={"status": Text(32), "warehouse_id": Id(), "page": Page(), "page_size": PageSize()})
    def list_shipments(self, status=None, warehouse_id=None, page=1, page_size=20):
        return usecases.list_shipments(self.store, status=status, warehouse_id=warehouse_id,
                                  page=page, page_size=page_size)

    @rpc(schema={"shipment_id": Id(), "carrier": Text(100), "tracking_number": Text(100)})
    def dispatch_shipment(self, shipment_id, carrier=None, tracking_number=None):
        return usecases.dispatch_shipment(self.store, self.config, utcnow(), shipment_id=shipment_id,
                                     carrier=carrier, tracking_number=tracking_number)

    @rpc(schema={"shipment_id": Id(), "event": Payload()})
    def add_tracking_event(self, shipment_id, event):
        return usecases.add_tracking_event(self.store, utcnow(), shipment_id=shipment_id, event=event)

    @rpc(schema={"shipment_id": Id()})
    def confirm_delivery(self, shipment_id):
        return usecases.confirm_delivery(self.store, utcnow(), shipment_id=shipment_id)

    @rpc(schema={"page": Page(), "page_size": PageSize(), "include_dispatched": Bool()})
    def list_late_shipments(self, page=1, page_size=20, include_dispatched=False):
        return usecases.list_late_shipments(self.store, page=page, page_size=page_size,
                                       include_dispatched=include_dispatched)

    # --- SLA ----------------------------------------------------------------------------------
    @rpc(schema={"now": When()})
    def run_sla_check(self, now=None):
        """What the timer does, on demand; `now` (ISO) lets tests and operators
        choose the clock."""
        args = load(schemas.SlaCheck(), {"now": now})
        return usecases.run_sla_check(self.store, parse_iso(args["now"]) if args["now"] else utcnow())

    @timer(interval=SLA_CHECK_INTERVAL)
    def sla_timer(self):
        try:
            result = usecases.run_sla_check(self.store, utcnow())
        except Exception as exc:  # next tick tries again
            log.warning("sla_check_failed", error=type(exc).__name__)
            return
        if any(result.values()):
            log.info("sla_check", **result)

    # --- returns ------------------------------------------------------------------------------
    @rpc(schema={"return_id": Id(), "lines": Objects(max=200)})
    def receive_return(self, return_id, lines=None):
        return usecases.receive_return(self.store, utcnow(), return_id=return_id, lines=lines)

    @rpc(schema={"return_id": Id()})
    def get_return(self, return_id):
        return usecases.get_return(self.store, return_id)

    # --- tickets ------------------------------------------------------------------------------
    @rpc(schema={"member_id": Id(), "order_id": Id(), "category": Text(64), "message": Text(5000)})
    def open_ticket(self, member_id, order_id, category, message):
        return usecases.open_ticket(self.store, self.config, utcnow(), member_id=member_id,
                               order_id=order_id, category=category, message=message)

    @rpc(schema={"ticket_id": Id(), "message": Text(5000)})
    def reply_ticket(self, ticket_id, message):
        return usecases.reply_ticket(self.store, utcnow(), ticket_id=ticket_id, message=message)

    @rpc(schema={"ticket_id": Id(), "resolution": Text(5000)})
    def resolve_ticket(self, ticket_id, resolution):
        return usecases.resolve_ticket(self.store, utcnow(), ticket_id=ticket_id, resolution=resolution)

    @rpc(schema={"ticket_id": Id()})
    def get_ticket(self, ticket_id):
        return usecases.get_ticket(self.store, ticket_id)

    @rpc(schema={"status": Text(32), "member_id": Id(), "breached": Bool(),
                 "page": Page(), "page_size": PageSize()})
    def list_tickets(self, status=None, member_id=None, breached=None, page=1, page_size=20):
        return usecases.list_tickets(self.store, status=status, member_id=member_id, breached=breached,
                                page=page, page_size=page_size)

    # --- events -------------------------------------------------------------------------------
    @handles("order", "order_paid")
    def on_order_paid(self, envelope):
        usecases.on_order_paid(self.store, self.config, envelope, utcnow())

    @handles("order", "order_cancelled")
    def on_order_cancelled(self, envelope):
        usecases.on_order_cancelled(self.store, envelope, utcnow())

    @handles("order", "return_requested")
    def on_return_requested(self, envelope):
        usecases.on_return_requested(self.store, envelope, utcnow())

    @handles("member", "member_erased")
    def on_member_erased(self, envelope):
        usecases.on_member_erased(self.store, envelope, utcnow())

"""The service layer: each use case validates its input, runs the domain rule
in ONE transaction (state + outbox), and returns a plain dict. The nameko
entrypoints in service.py only call these; tests may call them with a chosen
`now`. Metrics are counted after commit, so a rolled-back attempt counts nothing."""
from __future__ import annotations

from datetime import datetime

from pymongo.errors import DuplicateKeyError, PyMongoError

from services.fulfillment import metrics, schemas, views
from services.fulfillment.config import FulfillmentConfig
from services.fulfillment.domain import allocation
from services.fulfillment.domain import returns as ret
from services.fulfillment.domain import shipments as shp
from services.fulfillment.domain import tickets as tkt
from services.fulfillment.store import Repo, page_of
from shared.clock import as_utc, parse_iso
from shared.errors import Conflict, NotFound, ValidationFailed
from shared.ids import new_id
from shared.observability.logs import get_logger
from shared.validation import load

log = get_logger(__name__)

SLA_BATCH = 500


def _emit_all(tx, events) -> None:
    for event_type, data in events:
        tx.emit(event_type, data)


# --- warehouses --------------------------------------------------------------------------

def create_warehouse(store, warehouse: dict, now: datetime) -> dict:
    data = load(schemas.Warehouse(), warehouse)
    doc = {"_id": new_id("wh"), **data, "created_at": now, "updated_at": now}
    try:
        with store.transaction() as tx:
            Repo(tx.db, tx.session).insert_warehouse(doc)
    except DuplicateKeyError:
        raise Conflict(f"a warehouse with code {data['code']} exists", {"code": data["code"]}) from None
    log.info("warehouse_created", warehouse_id=doc["_id"], region=data["region"])
    return views.warehouse(doc)


def update_warehouse(store, warehouse_id: str, changes: dict, now: datetime) -> dict:
    args = load(schemas.UpdateWarehouse(), {"warehouse_id": warehouse_id, "changes": changes})
    if not args["changes"]:
        raise ValidationFailed.field("changes", "name at least one field to change")
    with store.transaction() as tx:
        doc = Repo(tx.db, tx.session).update_warehouse(
            args["warehouse_id"], {**args["changes"], "updated_at": now})
    return views.warehouse(doc)


def get_warehouse(store, warehouse_id: str) -> dict:
    return views.warehouse(Repo(store.db).get_warehouse(warehouse_id))


def list_warehouses(store, **kwargs) -> dict:
    args = load(schemas.ListWarehouses(), kwargs)
    cursor, count = Repo(store.db).list_warehouses(args["region"], args["active"], args["page"],
                                                   args["page_size"])
    return page_of(cursor, count, args["page"], args["page_size"], views.warehouse)


# --- shipments from order events -----------------------------------------------------------

def on_order_paid(store, config: FulfillmentConfig, envelope: dict, now: datetime) -> str:
    """Exactly one shipment per order: a redelivery (inbox), a second `order_paid`
    (existing shipment) or a racing replica (unique index) changes nothing."""
    order = envelope["data"]
    paid_at = _event_time(envelope, now)
    try:
        with store.transaction() as tx:
            repo = Repo(tx.db, tx.session)
            if repo.shipment_for_order(order["order_id"]) is not None:
                outcome = "exists"
            else:
                erased = repo.is_erased(order["member_id"])
                tombstone = repo.cancellation_of(order["order_id"])
                if tombstone is not None:
                    doc, events = shp.cancelled_before_paid(
                        new_id("shp"), order, reason=tombstone.get("reason"), paid_at=paid_at,
                        now=now, member_erased=erased)
                    outcome = "cancelled_before_paid"
                else:
                    chosen = allocation.allocate(config.strategy, repo.active_warehouses(),
                                                 order.get("shipping_address") or {},
                                                 config.fallback_warehouse_id)
                    doc, events = shp.new_shipment(new_id("shp"), order, chosen, paid_at=paid_at,
                                                   now=now, dispatch_sla=config.dispatch_sla,
                                                   member_erased=erased)
                    outcome = "created"
                repo.insert_shipment(doc)
                _emit_all(tx, events)
    except DuplicateKeyError:
        return "exists"  # another replica created it in the meantime
    if outcome == "created":
        metrics.SHIPMENTS.labels("created", doc["allocation_rule"]).inc()
        log.info("shipment_created", shipment_id=doc["_id"], order_id=order["order_id"],
                 warehouse_id=doc["warehouse_id"], rule=doc["allocation_rule"])
    elif outcome == "cancelled_before_paid":
        metrics.SHIPMENTS.labels("cancelled", "").inc()
        log.info("shipment_cancelled_before_paid", shipment_id=doc["_id"],
                 order_id=order["order_id"])
    return outcome


def on_order_cancelled(store, envelope: dict, now: datetime) -> str:
    """Cancel the undispatched shipment; with none yet, leave a tombstone so a
    late `order_paid` creates no live shipment."""
    data = envelope["data"]
    reason = data.get("reason")
    with store.transaction() as tx:
        repo = Repo(tx.db, tx.session)
        shipment = repo.shipment_for_order(data["order_id"])
        if shipment is None:
            repo.record_cancellation(data["order_id"], reason, now)
            outcome = "tombstone"
        else:
            decided = shp.cancel(shipment, reason, now)
            if decided is None:
                outcome = f"ignored_{shipment['status']}"
            else:
                changes, events = decided
                if repo.transition_shipment(shipment, {**changes},
                                            push={"history": {"status": shp.CANCELLED, "at": now}}) is None:
                    raise Conflict("shipment changed concurrently", {"shipment_id": shipment["_id"]})
                _emit_all(tx, events)
                outcome = "cancelled"
    if outcome == "cancelled":
        metrics.SHIPMENTS.labels("cancelled", "").inc()
    log.info("order_cancelled_applied", order_id=data["order_id"], outcome=outcome)
    return outcome


def _event_time(envelope: dict, fallback: datetime) -> datetime:
    try:
        return parse_iso(envelope["occurred_at"])
    except (KeyError, ValueError):
        return fallback


# --- shipments over RPC -----------------------------------------------------------------------

def dispatch_shipment(store, config: FulfillmentConfig, now: datetime, **kwargs) -> dict:
    args = load(schemas.Dispatch(), kwargs)
    carrier = args["carrier"] or config.default_carrier
    with store.transaction() as tx:
        repo = Repo(tx.db, tx.session)
        shipment = repo.get_shipment(args["shipment_id"])
        tracking_number = args["tracking_number"] or shipment["_id"].upper()
        changes, events = shp.dispatch(shipment, carrier, tracking_number, now)
        doc = repo.transition_shipment(shipment, changes,
                                       push={"history": {"status": shp.DISPATCHED, "at": now}})
        if doc is None:
            raise Conflict("shipment changed concurrently", {"shipment_id": shipment["_id"]})
        _emit_all(tx, events)
    metrics.SHIPMENTS.labels("dispatched", "").inc()
    metrics.DISPATCH_SECONDS.observe(max(0.0, (now - as_utc(shipment["paid_at"])).total_seconds()))
    if doc["late"] and not shipment.get("late"):
        metrics.SHIPMENTS_LATE.labels("dispatch").inc()
    log.info("shipment_dispatched", shipment_id=doc["_id"], order_id=doc["order_id"],
             late=doc["late"])
    return views.shipment(doc)


def add_tracking_event(store, now: datetime, **kwargs) -> dict:
    args = load(schemas.AddTracking(), kwargs)
    event = dict(args["event"])
    if event.get("occurred_at"):
        event["occurred_at"] = parse_iso(event["occurred_at"])
    with store.transaction() as tx:
        repo = Repo(tx.db, tx.session)
        shipment = repo.get_shipment(args["shipment_id"])
        entry = shp.tracking_entry(shipment, event, now)
        doc = repo.add_tracking(shipment["_id"], entry, now) or shipment  # a repeat: kept once
    return views.shipment(doc)


def confirm_delivery(store, now: datetime, **kwargs) -> dict:
    args = load(schemas.ShipmentRef(), kwargs)
    with store.transaction() as tx:
        repo = Repo(tx.db, tx.session)
        shipment = repo.get_shipment(args["shipment_id"])
        changes, events = shp.deliver(shipment, now)
        doc = repo.transition_shipment(shipment, changes,
                                       push={"history": {"status": shp.DELIVERED, "at": now}})
        if doc is None:
            raise Conflict("shipment changed concurrently", {"shipment_id": shipment["_id"]})
        _emit_all(tx, events)
    metrics.SHIPMENTS.labels("delivered", "").inc()
    metrics.DELIVERY_SECONDS.observe(
        max(0.0, (now - as_utc(shipment["dispatched_at"])).total_seconds()))
    return views.shipment(doc)


def get_shipment(store, shipment_id) -> dict:
    args = load(schemas.ShipmentRef(), {"shipment_id": shipment_id})
    return views.shipment(Repo(store.db).get_shipment(args["shipment_id"]))


def get_shipment_for_order(store, order_id) -> dict:
    args = load(schemas.OrderRef(), {"order_id": order_id})
    doc = Repo(store.db).shipment_for_order(args["order_id"])
    if doc is None:
        raise NotFound(f"no shipment for order {args['order_id']}", {"order_id": args["order_id"]})
    return views.shipment(doc)


def list_shipments(store, **kwargs) -> dict:
    args = load(schemas.ListShipments(), kwargs)
    query = {k: args[k] for k in ("status", "warehouse_id") if args[k] is not None}
    cursor, count = Repo(store.db).list_shipments(query, "created_at")
    return page_of(cursor, count, args["page"], args["page_size"], views.shipment)


def list_late_shipments(store, **kwargs) -> dict:
    """Shipments flagged late, oldest deadline first; by default only those
    still waiting for dispatch (the ones operations can act on)."""
    args = load(schemas.ListLate(), kwargs)
    query: dict = {"late": True}
    if not args["include_dispatched"]:
        query["status"] = shp.CREATED
    cursor, count = Repo(store.db).list_shipments(query, "dispatch_due_at")
    return page_of(cursor, count, args["page"], args["page_size"], views.shipment)


# --- SLA timer ----------------------------------------------------------------------------------

def run_sla_check(store, now: datetime) -> dict:
    """Flag late shipments and breached ticket deadlines, each once. Safe on
    many replicas: every flag is a conditional update in its own transaction;
    a replica that loses the race (no match, or a write conflict) skips it."""
    late = 0
    for shipment_id in Repo(store.db).overdue_shipment_ids(now, SLA_BATCH):
        try:
            with store.transaction() as tx:
                repo = Repo(tx.db, tx.session)
                shipment = repo.get_shipment(shipment_id)
                decided = shp.flag_late(shipment, now)
                if decided is None:
                    continue
                changes, events = decided
                if repo.transition_shipment(shipment, changes) is None:
                    continue
                _emit_all(tx, events)
            late += 1
            metrics.SHIPMENTS_LATE.labels("timer").inc()
            log.info("shipment_late", shipment_id=shipment_id, order_id=shipment["order_id"])
        except PyMongoError as exc:
            if not exc.has_error_label("TransientTransactionError"):
                raise
    breaches = {"first_response": 0, "resolution": 0}
    for ticket in Repo(store.db).tickets_past_deadline(now, SLA_BATCH):
        changes = tkt.breaches_due(ticket, now)
        if not changes:
            continue
        try:
            with store.transaction() as tx:
                if Repo(tx.db, tx.session).update_ticket(ticket, {**changes}) is None:
                    continue
        except PyMongoError as exc:
            if not exc.has_error_label("TransientTransactionError"):
                raise
            continue
        if changes.get("first_response_breached"):
            breaches["first_response"] += 1
            metrics.TICKET_SLA_BREACHES.labels("first_response").inc()
        if changes.get("resolution_breached"):
            breaches["resolution"] += 1
            metrics.TICKET_SLA_BREACHES.labels("resolution").inc()
    return {"late_shipments_flagged": late,
            "ticket_first_response_breaches": breaches["first_response"],
            "ticket_resolution_breaches": breaches["resolution"]}


# --- returns --------------------------------------------------------------------------------

def on_return_requested(store, envelope: dict, now: datetime) -> str:
    data = envelope["data"]
    with store.transaction() as tx:
        repo = Repo(tx.db, tx.session)
        expected = ret.expected_return(data, now)
        if repo.is_erased(expected["member_id"]):
            expected["reason"] = "[redacted]"
        recorded = repo.expect_return(expected)
    return "expected" if recorded else "exists"


def receive_return(store, now: datetime, **kwargs) -> dict:
    args = load(schemas.ReceiveReturn(), kwargs)
    with store.transaction() as tx:
        repo = Repo(tx.db, tx.session)
        record = repo.get_return(args["return_id"])  # NotFound before return_requested: no write
        changes, events = ret.receive(record, args["lines"], now)
        doc = repo.transition_return(record, changes)
        if doc is None:
            raise Conflict(f"return {record['_id']} was already received",
                           {"return_id": record["_id"]})
        _emit_all(tx, events)
    for line in doc["received_lines"]:
        metrics.RETURNED_UNITS.labels(line["condition"]).inc(line["quantity"])
    log.info("return_received", return_id=doc["_id"], order_id=doc["order_id"])
    return views.return_record(doc)


def get_return(store, return_id) -> dict:
    args = load(schemas.ReturnRef(), {"return_id": return_id})
    return views.return_record(Repo(store.db).get_return(args["return_id"]))


# --- tickets -------------------------------------------------------------------------------------

def open_ticket(store, config: FulfillmentConfig, now: datetime, **kwargs) -> dict:
    args = load(schemas.OpenTicket(), kwargs)
    with store.transaction() as tx:
        repo = Repo(tx.db, tx.session)
        if repo.is_erased(args["member_id"]):
            raise Conflict("the member was erased", {"member_id": args["member_id"]})
        doc, events = tkt.open_ticket(new_id("tkt"), args["member_id"], args["order_id"],
                                      args["category"], args["message"], new_id("msg"),
                                      config.ticket_sla, now)
        repo.insert_ticket(doc)
        _emit_all(tx, events)
    metrics.TICKETS.labels("opened", doc["category"]).inc()
    log.info("ticket_opened", ticket_id=doc["_id"], category=doc["category"])
    return views.ticket(doc)


def reply_ticket(store, now: datetime, **kwargs) -> dict:
    args = load(schemas.ReplyTicket(), kwargs)
    with store.transaction() as tx:
        repo = Repo(tx.db, tx.session)
        ticket = repo.get_ticket(args["ticket_id"])
        changes, entry, events = tkt.reply(ticket, args["message"], new_id("msg"), now)
        doc = repo.update_ticket(ticket, changes, push={"messages": entry})
        if doc is None:
            raise Conflict("ticket changed concurrently", {"ticket_id": ticket["_id"]})
        _emit_all(tx, events)
    metrics.TICKETS.labels("replied", doc["category"]).inc()
    if ticket.get("first_response_at") is None:
        metrics.TICKET_FIRST_RESPONSE_SECONDS.observe(doc["first_response_seconds"])
        if doc["first_response_breached"] and not ticket.get("first_response_breached"):
            metrics.TICKET_SLA_BREACHES.labels("first_response").inc()
    return views.ticket(doc)


def resolve_ticket(store, now: datetime, **kwargs) -> dict:
    args = load(schemas.ResolveTicket(), kwargs)
    with store.transaction() as tx:
        repo = Repo(tx.db, tx.session)
        ticket = repo.get_ticket(args["ticket_id"])
        changes, events = tkt.resolve(ticket, args["resolution"], now)
        doc = repo.update_ticket(ticket, changes)
        if doc is None:
            raise Conflict("ticket changed concurrently", {"ticket_id": ticket["_id"]})
        _emit_all(tx, events)
    metrics.TICKETS.labels("resolved", doc["category"]).inc()
    metrics.TICKET_RESOLUTION_SECONDS.observe(doc["resolution_seconds"])
    if doc["resolution_breached"] and not ticket.get("resolution_breached"):
        metrics.TICKET_SLA_BREACHES.labels("resolution").inc()
    if ticket.get("first_response_at") is None:
        metrics.TICKET_FIRST_RESPONSE_SECONDS.observe(doc["first_response_seconds"])
        if doc["first_response_breached"] and not ticket.get("first_response_breached"):
            metrics.TICKET_SLA_BREACHES.labels("first_response").inc()
    return views.ticket(doc)


def get_ticket(store, ticket_id) -> dict:
    args = load(schemas.TicketRef(), {"ticket_id": ticket_id})
    return views.ticket(Repo(store.db).get_ticket(args["ticket_id"]))


def list_tickets(store, **kwargs) -> dict:
    args = load(schemas.ListTickets(), kwargs)
    query: dict = {k: args[k] for k in ("status", "member_id") if args[k] is not None}
    if args["breached"] is True:
        query["$or"] = [{"first_response_breached": True}, {"resolution_breached": True}]
    elif args["breached"] is False:
        query["first_response_breached"] = {"$ne": True}
        query["resolution_breached"] = {"$ne": True}
    cursor, count = Repo(store.db).list_tickets(query)
    return page_of(cursor, count, args["page"], args["page_size"], views.ticket)


# --- privacy ---------------------------------------------------------------------------------------

def on_member_erased(store, envelope: dict, now: datetime) -> dict:
    """Redact the member's ticket texts and shipping addresses; remember the
    erasure so a late `order_paid` stores no address and no new ticket opens."""
    member_id = envelope["data"]["member_id"]
    with store.transaction() as tx:
        repo = Repo(tx.db, tx.session)
        repo.record_erasure(member_id, now)
        tickets = repo.redact_tickets_of(member_id, now)
        shipments = repo.redact_shipments_of(member_id, shp.redact_address, now)
        repo.redact_returns_of(member_id, now)
    log.info("member_erased_redacted", member_id=member_id, tickets=tickets, shipments=shipments)
    return {"tickets": tickets, "shipments": shipments}

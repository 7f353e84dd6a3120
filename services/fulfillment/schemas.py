"""Marshmallow schemas of fulfillment's RPC payloads: validated at the edge,
before any transaction, so bad input writes nothing."""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

from services.fulfillment.domain import returns, shipments, tickets
from shared.events.fields import IsoTime

NOT_BLANK = validate.Regexp(r"\S", error="Must not be blank.")


def _id(**kwargs) -> fields.Str:
    return fields.Str(validate=validate.Length(min=1, max=100), **kwargs)


def _text(max_length: int, **kwargs) -> fields.Str:
    return fields.Str(validate=[validate.Length(min=1, max=max_length), NOT_BLANK], **kwargs)


class Strict(Schema):
    class Meta:
        unknown = RAISE


class Page(Strict):
    page = fields.Int(strict=True, load_default=1, validate=validate.Range(min=1))
    page_size = fields.Int(strict=True, load_default=20, validate=validate.Range(min=1, max=100))


class Warehouse(Strict):
    code = fields.Str(required=True, validate=[validate.Length(min=1, max=32), validate.Regexp(
        r"^[A-Za-z0-9_-]+$", error="Letters, digits, '-' and '_' only.")])
    name = _text(200, required=True)
    region = _text(100, required=True)
    address = _text(500, required=True)
    priority = fields.Int(strict=True, load_default=100, validate=validate.Range(min=0, max=10000))
    active = fields.Bool(load_default=True)


class WarehouseChanges(Strict):
    name = _text(200)
    region = _text(100)
    address = _text(500)
    priority = fields.Int(strict=True, validate=validate.Range(min=0, max=10000))
    active = fields.Bool()


class UpdateWarehouse(Strict):
    warehouse_id = _id(required=True)
    changes = fields.Nested(WarehouseChanges, required=True)


class ListWarehouses(Page):
    region = _text(100, load_default=None, allow_none=True)
    active = fields.Bool(load_default=None, allow_none=True)


class ShipmentRef(Strict):
    shipment_id = _id(required=True)


class OrderRef(Strict):
    order_id = _id(required=True)


class Dispatch(Strict):
    shipment_id = _id(required=True)
    carrier = _text(100, load_default=None, allow_none=True)
    tracking_number = _text(100, load_default=None, allow_none=True)


class TrackingEvent(Strict):
    status = fields.Str(required=True, validate=[validate.Length(min=1, max=50), validate.Regexp(
        r"^[a-z][a-z0-9_]*$", error="A snake_case status code, e.g. in_transit.")])
    location = _text(200, load_default=None, allow_none=True)
    description = _text(500, load_default=None, allow_none=True)
    occurred_at = IsoTime(load_default=None, allow_none=True)


class AddTracking(Strict):
    shipment_id = _id(required=True)
    event = fields.Nested(TrackingEvent, required=True)


class ListShipments(Page):
    status = fields.Str(load_default=None, allow_none=True,
                        validate=validate.OneOf(shipments.STATUSES))
    warehouse_id = _id(load_default=None, allow_none=True)


class ListLate(Page):
    include_dispatched = fields.Bool(load_default=False)


class ReceivedLine(Strict):
    product_id = _id(required=True)
    quantity = fields.Int(strict=True, required=True, validate=validate.Range(min=1))
    condition = fields.Str(load_default=returns.RESELLABLE,
                           validate=validate.OneOf(returns.CONDITIONS))


class ReceiveReturn(Strict):
    return_id = _id(required=True)
    lines = fields.List(fields.Nested(ReceivedLine), load_default=None, allow_none=True,
                        validate=validate.Length(min=1))


class ReturnRef(Strict):
    return_id = _id(required=True)


class OpenTicket(Strict):
    member_id = _id(required=True)
    order_id = _id(required=True, allow_none=True)
    category = fields.Str(required=True, validate=validate.OneOf(tickets.CATEGORIES))
    message = _text(5000, required=True)


class ReplyTicket(Strict):
    ticket_id = _id(required=True)
    message = _text(5000, required=True)


class ResolveTicket(Strict):
    ticket_id = _id(required=True)
    resolution = _text(5000, required=True)


class TicketRef(Strict):
    ticket_id = _id(required=True)


class ListTickets(Page):
    status = fields.Str(load_default=None, allow_none=True,
                        validate=validate.OneOf(tickets.STATUSES))
    member_id = _id(load_default=None, allow_none=True)
    breached = fields.Bool(load_default=None, allow_none=True)


class SlaCheck(Strict):
    now = IsoTime(load_default=None, allow_none=True)

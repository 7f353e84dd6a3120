"""Events published by the fulfillment service: shipments, returns received, service tickets."""
from __future__ import annotations

from marshmallow import fields

from shared.events.base import EventData, event
from shared.events.fields import Choice, Count, Id, IsoTime, Part, ProductQuantity, Text, lines_of

SOURCE = "fulfillment"

RETURN_CONDITIONS = ("resellable", "damaged")

SHIPMENT_ID = "shp_01JD9B3C5D7E9F1G3H5J7K9M1N"
ORDER_ID = "ord_01JD8Z6R9M4T5VQ2W3X7Y8K1PA"
MEMBER_ID = "mem_01JD7Q4W2E6R8T0Y1U3I5O7P9A"
PRODUCT_A = "prd_01JD8Y2K5V7MZ3QF6R9T1W4XAB"
PRODUCT_B = "prd_01JD8Y3M7N9P1Q3R5S7T9V1W3X"
TICKET_ID = "tkt_01JDA2B4C6D8E0F2G4H6J8K0M2"


@event(SOURCE, "shipment_created", consumers=["order", "analytics"], example={
    "shipment_id": SHIPMENT_ID, "order_id": ORDER_ID, "warehouse_id": "wh_shanghai_01",
})
class ShipmentCreated(EventData):
    """A paid order was allocated to a warehouse (order moves to `fulfilling`)."""

    shipment_id = Id(required=True)
    order_id = Id(required=True)
    warehouse_id = Id(required=True)
    member_id = Id(metadata={"description": "optional: the order's member"})
    region = Text(metadata={"description": "optional: the shipping region"})
    dispatch_due_at = IsoTime(metadata={"description": "optional: the dispatch SLA deadline"})
    lines = lines_of(ProductQuantity, metadata={"description": "optional: what is shipped"})


@event(SOURCE, "shipment_dispatched", consumers=["order", "catalog", "analytics"], example={
    "shipment_id": SHIPMENT_ID, "order_id": ORDER_ID, "carrier": "SF Express",
    "tracking_number": "SF1403598271634",
    "lines": [{"product_id": PRODUCT_A, "quantity": 2}, {"product_id": PRODUCT_B, "quantity": 1}],
})
class ShipmentDispatched(EventData):
    """The shipment left the warehouse; catalog commits the reservation of its lines."""

    shipment_id = Id(required=True)
    order_id = Id(required=True)
    carrier = Text(required=True)
    tracking_number = Text(required=True)
    lines = lines_of(ProductQuantity, required=True)
    warehouse_id = Id(metadata={"description": "optional: the dispatching warehouse"})
    late = fields.Bool(metadata={"description": "optional: dispatched after its SLA deadline"})


class ShipmentRef(EventData):
    """Something happened to a shipment; the ids are all it carries."""

    shipment_id = Id(required=True)
    order_id = Id(required=True)


@event(SOURCE, "shipment_delivered", consumers=["order", "analytics"], example={
    "shipment_id": SHIPMENT_ID, "order_id": ORDER_ID,
})
class ShipmentDelivered(ShipmentRef):
    """The carrier delivered the shipment (the order then completes)."""


@event(SOURCE, "shipment_late", consumers=["analytics"], example={
    "shipment_id": SHIPMENT_ID, "order_id": ORDER_ID,
})
class ShipmentLate(ShipmentRef):
    """The shipment missed its expected dispatch or delivery time."""

    dispatch_due_at = IsoTime(metadata={"description": "optional: the deadline it missed"})
    warehouse_id = Id(metadata={"description": "optional: the allocated warehouse"})


@event(SOURCE, "shipment_cancelled", consumers=["analytics"], example={
    "shipment_id": SHIPMENT_ID, "order_id": ORDER_ID,
})
class ShipmentCancelled(ShipmentRef):
    """An undispatched shipment was cancelled with its order."""

    reason = Text(metadata={"description": "optional: the order's cancellation reason"})


class ReturnedLine(Part):
    """A line received back, with the condition it arrived in."""

    product_id = Id(required=True)
    quantity = Count(required=True, minimum=1)
    condition = Choice(RETURN_CONDITIONS, required=True)


@event(SOURCE, "return_received", consumers=["order", "catalog", "analytics"], example={
    "return_id": "ret_01JDB4C6D8E0F2G4H6J8K0M2N4", "order_id": ORDER_ID,
    "lines": [{"product_id": PRODUCT_A, "quantity": 1, "condition": "resellable"}],
})
class ReturnReceived(EventData):
    """Returned goods arrived; catalog restocks the resellable ones, order refunds."""

    return_id = Id(required=True)
    order_id = Id(required=True)
    lines = lines_of(ReturnedLine, required=True)


class TicketEvent(EventData):
    """A customer-service ticket changed; the messages stay in fulfillment (free text)."""

    ticket_id = Id(required=True)
    member_id = Id(required=True)
    order_id = Id(required=True, allow_none=True,
                  metadata={"description": "null when the ticket concerns no order"})
    category = Text(required=True)


@event(SOURCE, "ticket_opened", consumers=["analytics"], example={
    "ticket_id": TICKET_ID, "member_id": MEMBER_ID, "order_id": ORDER_ID,
    "category": "late_delivery",
})
class TicketOpened(TicketEvent):
    """A member opened a ticket (a complaint); its response-time SLA starts."""

    first_response_due_at = IsoTime(metadata={"description": "optional: first-response deadline"})
    resolution_due_at = IsoTime(metadata={"description": "optional: resolution deadline"})


@event(SOURCE, "ticket_replied", consumers=["analytics"], example={
    "ticket_id": TICKET_ID, "member_id": MEMBER_ID, "order_id": ORDER_ID,
    "category": "late_delivery",
})
class TicketReplied(TicketEvent):
    """Customer service replied to a ticket."""

    first_response = fields.Bool(metadata={"description": "optional: the ticket's first reply"})
    response_seconds = Count(metadata={"description": "optional: opened → first reply"})
    sla_breached = fields.Bool(metadata={"description": "optional: first reply after its deadline"})


@event(SOURCE, "ticket_resolved", consumers=["analytics"], example={
    "ticket_id": TICKET_ID, "member_id": MEMBER_ID, "order_id": None,
    "category": "account",
})
class TicketResolved(TicketEvent):
    """A ticket was resolved (the resolution text stays in fulfillment)."""

    resolution_seconds = Count(metadata={"description": "optional: opened → resolved"})
    sla_breached = fields.Bool(metadata={"description": "optional: resolved after its deadline"})

"""Fulfillment's business metrics (labels are bounded sets, never ids)."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

from shared.observability.metrics import REGISTRY

_HOURS = (60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 12 * 3600, 24 * 3600,
          48 * 3600, 72 * 3600, 7 * 24 * 3600)

SHIPMENTS = Counter(
    "shop_shipments_total", "Shipment transitions, by event (created, dispatched, delivered, "
    "cancelled) and, for created, the allocation rule.",
    ["event", "rule"], registry=REGISTRY)
SHIPMENTS_LATE = Counter(
    "shop_shipments_late_total", "Shipments flagged late (missed the dispatch SLA), once each.",
    ["flagged_by"], registry=REGISTRY)
DISPATCH_SECONDS = Histogram(
    "shop_shipment_dispatch_seconds", "Payment → dispatch.", registry=REGISTRY, buckets=_HOURS)
DELIVERY_SECONDS = Histogram(
    "shop_shipment_delivery_seconds", "Dispatch → delivery.", registry=REGISTRY, buckets=_HOURS)
RETURNED_UNITS = Counter(
    "shop_return_units_received_total", "Returned units received, by condition.",
    ["condition"], registry=REGISTRY)
TICKETS = Counter(
    "shop_tickets_total", "Ticket events (opened, replied, resolved) by category.",
    ["event", "category"], registry=REGISTRY)
TICKET_FIRST_RESPONSE_SECONDS = Histogram(
    "shop_ticket_first_response_seconds", "Ticket opened → first customer-service reply.",
    registry=REGISTRY, buckets=_HOURS)
TICKET_RESOLUTION_SECONDS = Histogram(
    "shop_ticket_resolution_seconds", "Ticket opened → resolved.", registry=REGISTRY,
    buckets=_HOURS)
TICKET_SLA_BREACHES = Counter(
    "shop_ticket_sla_breaches_total", "Ticket SLA deadlines missed, once each, by kind "
    "(first_response, resolution).", ["kind"], registry=REGISTRY)

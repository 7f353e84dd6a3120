"""Catalog business metrics (labels are bounded: never ids)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge

from shared.observability.metrics import REGISTRY

RESERVATIONS = Counter(
    "shop_stock_reservations_total",
    "Order reservations decided, by outcome (reserved, failed, skipped_cancelled).",
    ["outcome"], registry=REGISTRY)
RELEASES = Counter(
    "shop_stock_releases_total", "Reservations given back, by reason (order_cancelled, reservation_expired).",
    ["reason"], registry=REGISTRY)
RESERVATIONS_EXPIRED = Counter(
    "shop_stock_reservations_expired_total",
    "Reservations released by the TTL backstop (their order never reached a verdict).",
    registry=REGISTRY)
STOCK_RAN_LOW = Counter(
    "shop_stock_ran_low_total", "Low-stock crossings (stock_ran_low emitted).", registry=REGISTRY)
LOW_STOCK_PRODUCTS = Gauge(
    "shop_stock_low_products", "Products at or below their low-stock threshold (refreshed by a timer).",
    registry=REGISTRY)
REVIEWS = Counter(
    "shop_reviews_total", "Reviews added and moderated, by outcome (added, approved, rejected).",
    ["outcome"], registry=REGISTRY)

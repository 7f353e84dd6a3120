"""Business metrics of the order service (bounded labels, never ids)."""
from __future__ import annotations

from prometheus_client import Counter

from shared.observability.metrics import REGISTRY

ORDERS_PLACED = Counter("shop_orders_placed_total", "Orders placed (stored pending).", registry=REGISTRY)
TRANSITIONS = Counter("shop_order_transitions_total", "Order saga events emitted, by event type.",
                      ["event_type"], registry=REGISTRY)
ORDERS_CANCELLED = Counter("shop_orders_cancelled_total", "Orders cancelled by member, operator or expiry.",
                           ["reason"], registry=REGISTRY)
PAYMENT_ATTEMPTS = Counter("shop_payment_attempts_total", "Capture attempts, by outcome.",
                           ["outcome"], registry=REGISTRY)
REFUNDS = Counter("shop_refunds_total", "Refunds paid back, by reason.", ["reason"], registry=REGISTRY)
RETURNS_REQUESTED = Counter("shop_returns_requested_total", "Returns requested.", registry=REGISTRY)
PLACE_ORDER_REPEATS = Counter(
    "shop_place_order_repeats_total",
    "place_order calls that failed or collided while another run of the same idempotency key "
    "placed the order, answered with that order.", registry=REGISTRY)

"""Marketing's business metrics (labels are bounded sets, never ids)."""
from __future__ import annotations

from prometheus_client import Counter

from shared.observability.metrics import REGISTRY

COUPON_RESERVATIONS = Counter(
    "shop_coupon_reservations_total", "Coupon reservation attempts by price_cart, by outcome.",
    ["outcome"], registry=REGISTRY)
COUPON_OUTCOMES = Counter(
    "shop_coupon_outcomes_total", "Coupon reservations redeemed or released.",
    ["outcome"], registry=REGISTRY)
MESSAGES = Counter(
    "shop_marketing_messages_total", "Messages by channel, kind and outcome (sent, duplicate).",
    ["channel", "kind", "outcome"], registry=REGISTRY)
CAMPAIGN_SKIPS = Counter(
    "shop_campaign_skips_total", "Campaign recipients not sent to, by reason.",
    ["reason"], registry=REGISTRY)
CARTS_PRICED = Counter(
    "shop_carts_priced_total", "price_cart calls, by whether a discount applied.",
    ["outcome"], registry=REGISTRY)
EXPOSURES = Counter(
    "shop_experiment_exposures_total", "First exposures of subjects to experiments.",
    [], registry=REGISTRY)

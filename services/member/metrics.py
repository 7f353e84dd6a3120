"""Business metrics of the member service (bounded labels, never ids)."""
from __future__ import annotations

from prometheus_client import Counter

from shared.observability.metrics import REGISTRY

REGISTRATIONS = Counter("shop_member_registrations_total", "Members registered.", registry=REGISTRY)
ERASURES = Counter("shop_member_erasures_total", "Members erased on a data-protection request.",
                   registry=REGISTRY)
CONSENT_CHANGES = Counter("shop_member_consent_changes_total", "Consent changes by channel and outcome.",
                          ["channel", "granted"], registry=REGISTRY)
POINTS = Counter("shop_member_points_total", "Points moved, by kind (earn, redeem, expire, reverse).",
                 ["kind"], registry=REGISTRY)
TIER_CHANGES = Counter("shop_member_tier_changes_total", "Tier changes by direction.",
                       ["direction"], registry=REGISTRY)

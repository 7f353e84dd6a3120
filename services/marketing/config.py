"""Marketing's business settings: environment variables (README.md lists every one with its
default), overridable per container through `Settings.extra` (tests)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from zoneinfo import ZoneInfo

from nameko.extensions import DependencyProvider

from services.marketing.domain import QuietHours, parse_tier_discounts
from shared.config import settings_of

DEFAULTS = {
    "MARKETING_TIER_DISCOUNTS": "bronze:0,silver:3,gold:5,platinum:8",
    "MARKETING_DISCOUNT_CAP_PERCENT": "100",
    "MARKETING_COUPON_RESERVATION_TTL": "7200",
    "MARKETING_SWEEP_INTERVAL": "30",
    "MARKETING_QUIET_HOURS": "21:00-09:00",
    "MARKETING_FREQUENCY_CAP": "3",
    "MARKETING_FREQUENCY_WINDOW_HOURS": "168",
    "MARKETING_SEGMENTS": "new,active,at_risk,dormant,churned",
    "MARKETING_TRANSACTIONAL_CHANNEL": "email",
    "MARKETING_SEGMENT_PAGE_LIMIT": "1000",
}


@dataclass(frozen=True)
class MarketingConfig:
    currency: str
    zone: ZoneInfo
    tier_discounts: dict[str, int]
    cap_bp: int
    reservation_ttl: timedelta
    sweep_interval: float
    quiet_hours: QuietHours | None
    frequency_cap: int
    frequency_window: timedelta
    segments: frozenset[str]
    transactional_channel: str
    segment_page_limit: int

    @classmethod
    def build(cls, currency: str, timezone: str, values: dict) -> "MarketingConfig":
        def get(name: str) -> str:
            if name in values:
                return str(values[name])
            return os.environ.get(name) or DEFAULTS[name]

        return cls(
            currency=currency,
            zone=ZoneInfo(timezone),
            tier_discounts=parse_tier_discounts(get("MARKETING_TIER_DISCOUNTS")),
            cap_bp=int(round(float(get("MARKETING_DISCOUNT_CAP_PERCENT")) * 100)),
            reservation_ttl=timedelta(seconds=float(get("MARKETING_COUPON_RESERVATION_TTL"))),
            sweep_interval=float(get("MARKETING_SWEEP_INTERVAL")),
            quiet_hours=QuietHours.parse(get("MARKETING_QUIET_HOURS")),
            frequency_cap=int(get("MARKETING_FREQUENCY_CAP")),
            frequency_window=timedelta(hours=float(get("MARKETING_FREQUENCY_WINDOW_HOURS"))),
            segments=frozenset(s.strip() for s in get("MARKETING_SEGMENTS").split(",") if s.strip()),
            transactional_channel=get("MARKETING_TRANSACTIONAL_CHANNEL"),
            segment_page_limit=int(get("MARKETING_SEGMENT_PAGE_LIMIT")),
        )


def sweep_interval_from_env() -> float:
    """The timer interval is fixed when the class is defined, so it comes from the environment."""
    return float(os.environ.get("MARKETING_SWEEP_INTERVAL") or DEFAULTS["MARKETING_SWEEP_INTERVAL"])


class Config(DependencyProvider):
    def setup(self):
        settings = settings_of(self.container)
        self.config = MarketingConfig.build(settings.currency, settings.timezone, settings.extra or {})

    def get_dependency(self, worker_ctx) -> MarketingConfig:
        return self.config

"""The member service's business settings (environment variables, README lists them).

Tests override them through `Settings.extra` (`start_service(..., extra={...})`)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from nameko.extensions import DependencyProvider

from services.member.domain import PointsPolicy, RfmPolicy, SegmentPolicy, TierPolicy
from shared.config import settings_of

DEFAULTS = {
    "MEMBER_TIER_THRESHOLDS": "silver:200000,gold:800000,platinum:2000000",
    "MEMBER_TIER_MULTIPLIERS": "bronze:1,silver:1.25,gold:1.5,platinum:2",
    "MEMBER_TIER_DISCOUNTS": "bronze:0,silver:3,gold:5,platinum:8",
    "MEMBER_TIER_WINDOW_DAYS": "365",
    "MEMBER_POINTS_PER_UNIT": "1",
    "MEMBER_MINOR_PER_UNIT": "100",
    "MEMBER_POINTS_EXPIRY_DAYS": "365",
    "MEMBER_NEW_DAYS": "30",
    "MEMBER_ACTIVE_DAYS": "90",
    "MEMBER_AT_RISK_DAYS": "180",
    "MEMBER_DORMANT_DAYS": "365",
    "MEMBER_RFM_RECENCY_DAYS": "30,60,90,180",
    "MEMBER_RFM_FREQUENCY": "2,3,5,10",
    "MEMBER_RFM_MONETARY": "50000,100000,300000,1000000",
    "MEMBER_MAINTENANCE_BATCH": "500",
}


def _int(values: dict, key: str) -> int:
    try:
        return int(values[key])
    except ValueError:
        raise ValueError(f"{key} must be an integer, got {values[key]!r}") from None


@dataclass(frozen=True)
class MemberConfig:
    tiers: TierPolicy
    points: PointsPolicy
    segments: SegmentPolicy
    rfm: RfmPolicy
    batch: int

    @classmethod
    def from_values(cls, overrides: dict | None = None) -> "MemberConfig":
        values = {key: os.environ.get(key) or default for key, default in DEFAULTS.items()}
        values.update({k: str(v) for k, v in (overrides or {}).items() if k in DEFAULTS})
        return cls(
            tiers=TierPolicy.parse(values["MEMBER_TIER_THRESHOLDS"], values["MEMBER_TIER_MULTIPLIERS"],
                                   values["MEMBER_TIER_DISCOUNTS"], _int(values, "MEMBER_TIER_WINDOW_DAYS")),
            points=PointsPolicy.parse(values["MEMBER_POINTS_PER_UNIT"], _int(values, "MEMBER_MINOR_PER_UNIT"),
                                      _int(values, "MEMBER_POINTS_EXPIRY_DAYS")),
            segments=SegmentPolicy(_int(values, "MEMBER_NEW_DAYS"), _int(values, "MEMBER_ACTIVE_DAYS"),
                                   _int(values, "MEMBER_AT_RISK_DAYS"), _int(values, "MEMBER_DORMANT_DAYS")),
            rfm=RfmPolicy.parse(values["MEMBER_RFM_RECENCY_DAYS"], values["MEMBER_RFM_FREQUENCY"],
                                values["MEMBER_RFM_MONETARY"]),
            batch=max(1, _int(values, "MEMBER_MAINTENANCE_BATCH")),
        )


class Config(DependencyProvider):
    """Parses the settings once per container (a bad setting fails start-up)."""

    def setup(self):
        self.config = MemberConfig.from_values(settings_of(self.container).extra)

    def get_dependency(self, worker_ctx) -> MemberConfig:
        return self.config

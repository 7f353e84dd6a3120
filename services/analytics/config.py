"""Analytics' settings: `ANALYTICS_<NAME>` variables (or `Settings.extra` in tests) read
through the chassis settings, with their defaults in one place (README, "Settings")."""
from __future__ import annotations

from zoneinfo import ZoneInfo

from services.analytics import domain, views

DEFAULT_SHARDS = domain.DEFAULT_COUNTER_SHARDS


def option(settings, name: str, default, kind=int):
    """A business setting: Settings.extra (tests) first, then ANALYTICS_<NAME>."""
    return settings.option(name, default, kind)


def timezone(settings) -> ZoneInfo:
    """SHOP_TIMEZONE: local hours and days of the buckets."""
    return ZoneInfo(settings.timezone)


def counter_shards(settings) -> int:
    """ANALYTICS_COUNTER_SHARDS (settings.option `counter_shards`), at least 1."""
    shards = settings.option("counter_shards", DEFAULT_SHARDS, int)
    if shards < 1:
        raise ValueError(f"ANALYTICS_COUNTER_SHARDS must be at least 1, got {shards}")
    return shards


def attribution_window_days(settings) -> int:
    return option(settings, "attribution_window_days", 7)


def experiment_alpha(settings) -> float:
    return option(settings, "experiment_alpha", 0.05, float)


def experiment_min_exposures(settings) -> int:
    return option(settings, "experiment_min_exposures", 30)


def track_max_batch(settings) -> int:
    """ANALYTICS_TRACK_MAX_BATCH: events per `/track` request (one transaction)."""
    return option(settings, "track_max_batch", 500)


def dashboard_options(settings) -> views.DashboardOptions:
    return views.DashboardOptions(
        currency=settings.currency,
        locale=option(settings, "locale", "zh-CN", str),
        attribution_window_days=attribution_window_days(settings),
        experiment_alpha=experiment_alpha(settings),
        experiment_min_exposures=experiment_min_exposures(settings),
        refresh_seconds=option(settings, "dashboard_refresh_seconds", 60))

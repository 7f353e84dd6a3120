"""Business gauges computed from the store at scrape time, so every replica
reports the same numbers (nothing is kept in process memory)."""
from __future__ import annotations

from datetime import timedelta

from kombu import Connection
from nameko.extensions import DependencyProvider
from prometheus_client.core import GaugeMetricFamily

from services.analytics import domain, views
from shared.clock import utcnow
from shared.config import settings_of
from shared.messaging.topology import consuming_services, dead_letter_queue_name
from shared.observability import metrics
from shared.observability.logs import get_logger

log = get_logger(__name__)


def windows(now, tz) -> dict[str, domain.TimeRange]:
    """`today`: local midnight to now; `hour`: the current clock hour so far."""
    today = domain.TimeRange(domain.local_day_start(now, tz), domain.hour_ceil(now))
    hour = domain.TimeRange(domain.hour_floor(now), domain.hour_floor(now) + timedelta(hours=1))
    return {"today": today, "hour": hour}


class KpiCollector:
    """Registered once per process on shared.observability.metrics.REGISTRY; reads the store of
    the analytics container running in this process."""

    def __init__(self):
        self.sources: list = []  # (db, tz, amqp_uri)

    def describe(self):
        return []

    def collect(self):
        if not self.sources:
            return
        db, tz, amqp_uri = self.sources[-1]
        now = utcnow()
        gmv = GaugeMetricFamily("shop_kpi_gmv", "GMV (paid minus refunded), minor units.", labels=["window"])
        orders = GaugeMetricFamily("shop_kpi_orders", "Orders that reached paid.", labels=["window"])
        conv = GaugeMetricFamily("shop_kpi_conversion_ratio", "Converted sessions / sessions.",
                                 labels=["window"])
        aov = GaugeMetricFamily("shop_kpi_aov", "Average order value, minor units.", labels=["window"])
        try:
            for name, rng in windows(now, tz).items():
                k = views.get_kpis(db, tz, rng)
                gmv.add_metric([name], k["gmv"])
                orders.add_metric([name], k["orders"])
                conv.add_metric([name], k["conversion_rate"])
                aov.add_metric([name], k["aov"])
            low = GaugeMetricFamily("shop_low_stock_products", "Products at or below their threshold.",
                                    value=views.low_stock_count(db))
            unknown = GaugeMetricFamily("shop_analytics_unfolded_events",
                                        "Events kept but not folded (unknown type or invalid).",
                                        labels=["status"])
            totals: dict[str, int] = {"unknown": 0, "invalid": 0}
            for row in views.unfolded_counts(db):
                totals[row["status"]] = totals.get(row["status"], 0) + row["count"]
            for status, count in totals.items():
                unknown.add_metric([status], count)
        except Exception as exc:  # the store is away: report nothing rather than fail /metrics
            log.warning("kpi_gauges_unavailable", error=type(exc).__name__)
            return
        yield from (gmv, orders, conv, aov, low, unknown)
        dead = GaugeMetricFamily("shop_dead_lettered_events",
                                 "Messages in each service's dead-letter queue.", labels=["queue_service"])
        try:
            with Connection(amqp_uri, connect_timeout=2) as conn:
                channel = conn.default_channel
                for service in sorted(consuming_services()):
                    try:
                        _, count, _ = channel.queue_declare(dead_letter_queue_name(service), passive=True)
                    except Exception:
                        channel = conn.channel()
                        count = 0
                    dead.add_metric([service], count)
            yield dead
        except Exception as exc:
            log.warning("dead_letter_gauge_unavailable", error=type(exc).__name__)


COLLECTOR = KpiCollector()
metrics.REGISTRY.register(COLLECTOR)


class Gauges(DependencyProvider):
    """Points the process-wide collector at this container's store."""

    def __init__(self, store_attr: str = "store"):
        self.store_attr = store_attr
        self.source = None

    def start(self):
        from shared.storage.store import Store

        store = next(d for d in self.container.dependencies if isinstance(d, Store))
        settings = settings_of(self.container)
        self.source = (store.db, domain_zone(settings.timezone), settings.amqp_uri)
        COLLECTOR.sources.append(self.source)

    def stop(self):
        if self.source in COLLECTOR.sources:
            COLLECTOR.sources.remove(self.source)

    def kill(self):
        self.stop()


def domain_zone(name: str):
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)

"""Fulfillment's business settings: environment variables with defaults; in
tests, `Settings.extra` (lower-case keys) overrides them."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from nameko.extensions import DependencyProvider

from services.fulfillment.domain.allocation import Strategy, strategy_named
from services.fulfillment.domain.tickets import TicketSla
from shared.config import Settings, env_float, settings_of

# The timer's interval is fixed when the class is defined, so it is read at import.
SLA_CHECK_INTERVAL = env_float("FULFILLMENT_SLA_CHECK_INTERVAL", 60.0)


@dataclass(frozen=True)
class FulfillmentConfig:
    dispatch_sla: timedelta
    ticket_sla: TicketSla
    allocation_strategy: str
    fallback_warehouse_id: str
    default_carrier: str

    @property
    def strategy(self) -> Strategy:
        return strategy_named(self.allocation_strategy)

    @classmethod
    def from_settings(cls, settings: Settings) -> "FulfillmentConfig":
        config = cls(
            dispatch_sla=timedelta(hours=settings.option("dispatch_sla_hours", 48.0)),
            ticket_sla=TicketSla(
                first_response=timedelta(hours=settings.option("ticket_response_sla_hours", 4.0)),
                resolution=timedelta(hours=settings.option("ticket_resolution_sla_hours", 72.0))),
            allocation_strategy=settings.option("allocation_strategy", "region_then_priority"),
            fallback_warehouse_id=settings.option("fallback_warehouse", "wh_unassigned"),
            default_carrier=settings.option("default_carrier", "in_house"),
        )
        strategy_named(config.allocation_strategy)  # an unknown name fails at start
        return config


class Config(DependencyProvider):
    """`config = Config()` on the service: the FulfillmentConfig, read once at start."""

    def setup(self):
        self.value = FulfillmentConfig.from_settings(settings_of(self.container))

    def get_dependency(self, worker_ctx) -> FulfillmentConfig:
        return self.value

"""The order service's business settings: environment variables, overridable per container
through `Settings.extra` (tests pass `extra={...}` to `start_service`)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from services.order.domain.payment import RetryPolicy
from services.order.domain.pricing import ShippingPolicy
from shared.config import Settings, env_float

# Timers and RPC clients are declared at import: these are process-wide.
TIMER_INTERVAL = env_float("ORDER_TIMER_INTERVAL", 5.0)
CATALOG_TIMEOUT = env_float("ORDER_CATALOG_TIMEOUT", 3.0)
MEMBER_TIMEOUT = env_float("ORDER_MEMBER_TIMEOUT", 3.0)
MARKETING_TIMEOUT = env_float("ORDER_MARKETING_TIMEOUT", 5.0)


@dataclass(frozen=True)
class OrderSettings:
    shipping_fee: int
    free_shipping_threshold: int
    expiry_seconds: int
    return_window_days: int
    payment_max_attempts: int
    payment_retry_base_seconds: float
    payment_retry_max_seconds: float
    payment_lease_seconds: float
    payment_provider: str
    timers_enabled: bool

    @classmethod
    def load(cls, settings: Settings) -> "OrderSettings":
        return cls(
            shipping_fee=settings.option("shipping_fee", 1000),
            free_shipping_threshold=settings.option("free_shipping_threshold", 9900),
            expiry_seconds=settings.option("expiry_seconds", 1800),
            return_window_days=settings.option("return_window_days", 7),
            payment_max_attempts=settings.option("payment_max_attempts", 5),
            payment_retry_base_seconds=settings.option("payment_retry_base_seconds", 2.0),
            payment_retry_max_seconds=settings.option("payment_retry_max_seconds", 60.0),
            payment_lease_seconds=settings.option("payment_lease_seconds", 30.0),
            payment_provider=settings.option("payment_provider", "sandbox"),
            timers_enabled=bool(settings.option("timers_enabled", 1)),
        )

    @property
    def shipping(self) -> ShippingPolicy:
        return ShippingPolicy(self.shipping_fee, self.free_shipping_threshold)

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.payment_max_attempts, self.payment_retry_base_seconds,
                           self.payment_retry_max_seconds)

    @property
    def expiry(self) -> timedelta:
        return timedelta(seconds=self.expiry_seconds)

    @property
    def return_window(self) -> timedelta:
        return timedelta(days=self.return_window_days)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.payment_lease_seconds)

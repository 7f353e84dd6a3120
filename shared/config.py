"""Configuration from environment variables, with DESIGN.md's defaults.

Nothing secret has a default here: credentials arrive through the
environment (a Kubernetes Secret in production)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_PORTS = {
    "catalog": 8001, "order": 8002, "fulfillment": 8003,
    "member": 8004, "marketing": 8005, "analytics": 8006,
}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be a number, got {raw!r}") from None


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(name) or default
    if raw not in choices:
        raise ValueError(f"environment variable {name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    """The chassis settings of one service process."""

    service: str
    amqp_uri: str
    mongo_uri: str
    database: str
    http_host: str
    http_port: int
    log_level: str
    currency: str
    timezone: str
    rpc_timeout: float
    max_workers: int
    delivery_limit: int
    transient_retries: int
    transient_backoff: float
    transient_backoff_max: float
    outbox_sweep_interval: float
    outbox_sweep_grace: float
    outbox_window: int = 200
    outbox_max_attempts: int = 10
    confirm_timeout: float = 5.0
    amqp_heartbeat: int = 30
    event_max_failures: int = 5
    event_prefetch: int = 0
    topology_declare_all: bool = True
    topology_check_interval: float = 30.0
    consumer_check_interval: float = 15.0
    transient_conflict_backoff: float = 0.01
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, service: str) -> "Settings":
        upper = service.upper()
        return cls(
            service=service,
            amqp_uri=env_str("AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/"),
            mongo_uri=env_str("MONGO_URI", "mongodb://127.0.0.1:27017/?replicaSet=rs0"),
            database=env_str(f"{upper}_DB", f"shop_{service}"),
            # Loopback by default: nothing listens beyond what it needs. The
            # Kubernetes manifests set 0.0.0.0 so the kubelet can probe.
            http_host=env_str("HTTP_HOST", "127.0.0.1"),
            http_port=env_int(f"{upper}_HTTP_PORT", env_int("HTTP_PORT", DEFAULT_PORTS.get(service, 8000))),
            log_level=env_str("LOG_LEVEL", "INFO").upper(),
            currency=env_str("SHOP_CURRENCY", "CNY").upper(),
            timezone=env_str("SHOP_TIMEZONE", "Asia/Shanghai"),
            rpc_timeout=env_float("RPC_TIMEOUT", 10.0),
            max_workers=env_int("MAX_WORKERS", 10),
            # A far backstop only: the broker counts crashes and restarts too, and a
            # crash-looping pod must not dead-letter the healthy events it held.
            # Real handler failures are counted by the application (EVENT_MAX_FAILURES).
            delivery_limit=env_int("EVENT_DELIVERY_LIMIT", 50),
            # About 30 s of retries per delivery (0.2 s doubling, capped at 5 s):
            # long enough to outlast a mongod failover, and, times the delivery
            # limit, longer than a killed client's open transaction can hold a
            # lock (MongoDB's transactionLifetimeLimitSeconds, 60 s by default).
            transient_retries=env_int("TRANSIENT_RETRIES", 10),
            transient_backoff=env_float("TRANSIENT_BACKOFF", 0.2),
            transient_backoff_max=env_float("TRANSIENT_BACKOFF_MAX", 5.0),
            # A write conflict's first wait (see shared.retry.Backoff).
            transient_conflict_backoff=env_float("TRANSIENT_CONFLICT_BACKOFF", 0.01),
            outbox_sweep_interval=env_float("OUTBOX_SWEEP_INTERVAL", 2.0),
            outbox_sweep_grace=env_float("OUTBOX_SWEEP_GRACE", 5.0),
            outbox_window=env_int("OUTBOX_WINDOW", 200),
            outbox_max_attempts=env_int("OUTBOX_MAX_ATTEMPTS", 10),
            confirm_timeout=env_float("PUBLISH_CONFIRM_TIMEOUT", 5.0),
            amqp_heartbeat=env_int("AMQP_HEARTBEAT", 30),
            event_max_failures=env_int("EVENT_MAX_FAILURES", 5),
            # 0: max_workers for one-by-one handlers, twice the batch size for batch handlers.
            event_prefetch=env_int("EVENT_PREFETCH", 0),
            # "all": this process may declare every consumer's queue (local and test
            # stacks); "own": least privilege, each service declares only its own.
            topology_declare_all=env_choice("TOPOLOGY_DECLARE", "all", ("all", "own")) == "all",
            topology_check_interval=env_float("TOPOLOGY_CHECK_INTERVAL", 30.0),
            consumer_check_interval=env_float("CONSUMER_CHECK_INTERVAL", 15.0),
        )

    def option(self, key: str, default, cast=None):
        """A business setting of this service: `extra[key]` (tests inject it),
        else the environment variable `<SERVICE>_<KEY>`, else `default`;
        converted with `cast` (default: the type of `default`)."""
        cast = cast or type(default)
        if key in self.extra:
            return cast(self.extra[key])
        raw = os.environ.get(f"{self.service.upper()}_{key.upper()}")
        if raw is None or raw == "":
            return default
        try:
            return cast(raw)
        except ValueError:
            raise ValueError(f"environment variable {self.service.upper()}_{key.upper()} "
                             f"must be a {cast.__name__}, got {raw!r}") from None

    def nameko_config(self) -> dict:
        """The nameko container config derived from these settings."""
        return {
            "AMQP_URI": self.amqp_uri,
            "WEB_SERVER_ADDRESS": f"{self.http_host}:{self.http_port}",
            "max_workers": self.max_workers,
            "SHOP_SETTINGS": self,
        }


def settings_of(container) -> Settings:
    """The Settings a running container was started with (tests may inject)."""
    settings = container.config.get("SHOP_SETTINGS")
    if settings is None:
        settings = Settings.from_env(container.service_name)
        container.config["SHOP_SETTINGS"] = settings
    return settings

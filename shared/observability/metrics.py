"""Prometheus metrics every service exposes. Labels are bounded sets
(service, method, kind, event_type, outcome): never ids."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "shop_requests_total", "Entrypoint invocations (RED: rate and errors).",
    ["service", "kind", "method", "outcome"], registry=REGISTRY)
REQUEST_SECONDS = Histogram(
    "shop_request_seconds", "Entrypoint duration (RED: duration).",
    ["service", "kind", "method"], registry=REGISTRY,
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
IN_FLIGHT = Gauge(
    "shop_requests_in_flight", "Entrypoint workers running now.",
    ["service", "kind"], registry=REGISTRY)

EVENTS_PUBLISHED = Counter(
    "shop_events_published_total", "Events published to the broker (confirmed).",
    ["service", "event_type"], registry=REGISTRY)
PUBLISH_FAILURES = Counter(
    "shop_events_publish_failures_total", "Publishes that failed and were left to the sweep.",
    ["service", "event_type"], registry=REGISTRY)
EVENTS_CONSUMED = Counter(
    "shop_events_consumed_total", "Events handled, by outcome (ok, duplicate, error, retried).",
    ["service", "event_type", "outcome"], registry=REGISTRY)
EVENTS_DUPLICATE = Counter(
    "shop_events_duplicate_total", "Redelivered events skipped by the inbox.",
    ["service", "event_type"], registry=REGISTRY)
EVENTS_DEAD_LETTERED = Counter(
    "shop_events_dead_lettered_total",
    "Events this process sent to the dead-letter queue, by reason "
    "(malformed, undecodable, unhandled, handler_failed).",
    ["service", "reason"], registry=REGISTRY)
DEAD_LETTER_DEPTH = Gauge(
    "shop_dead_letter_messages", "Messages waiting in this service's dead-letter queue.",
    ["service"], registry=REGISTRY)
TRANSIENT_RETRIES = Counter(
    "shop_transient_retries_total", "In-process retries after a transient store/broker error.",
    ["service", "kind", "method"], registry=REGISTRY)

OUTBOX_PENDING = Gauge(
    "shop_outbox_pending", "Outbox events committed but not yet published.",
    ["service"], registry=REGISTRY)
OUTBOX_OLDEST_SECONDS = Gauge(
    "shop_outbox_oldest_pending_seconds", "Age of the oldest unpublished outbox event.",
    ["service"], registry=REGISTRY)
OUTBOX_PARKED = Gauge(
    "shop_outbox_parked", "Outbox events parked after too many failed publishes (shop outbox retry).",
    ["service"], registry=REGISTRY)
OUTBOX_PARKED_TOTAL = Counter(
    "shop_outbox_parked_events_total", "Outbox events parked by this process.",
    ["service", "event_type"], registry=REGISTRY)
OUTBOX_RELAY_SECONDS = Histogram(
    "shop_outbox_relay_seconds", "From commit to the broker's confirm, for the committing process's events.",
    ["service"], registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
TOPOLOGY_MISSING = Gauge(
    "shop_topology_missing_queue", "1 while a consumer queue the event catalog expects is missing.",
    ["service", "queue"], registry=REGISTRY)
TOPOLOGY_REPAIRS = Counter(
    "shop_topology_repairs_total", "Queues found missing and declared again.",
    ["service", "queue"], registry=REGISTRY)
CONSUMER_RESTARTS = Counter(
    "shop_consumer_restarts_total",
    "Queue consumers (events, RPC requests, RPC replies) the broker had dropped, found and reconnected.",
    ["service", "queue"], registry=REGISTRY)
IDEMPOTENT_REPLAYS = Counter(
    "shop_rpc_request_replays_total", "RPC calls answered from an earlier call with the same request_id.",
    ["service", "method"], registry=REGISTRY)
OUTBOX_SWEPT = Counter(
    "shop_outbox_swept_total", "Events re-published by the outbox sweep.",
    ["service"], registry=REGISTRY)

RPC_CLIENT_CALLS = Counter(
    "shop_rpc_client_calls_total", "Outgoing RPC calls, by outcome (ok, error, timeout, unavailable).",
    ["service", "target", "method", "outcome"], registry=REGISTRY)

AUTH_REFUSED = Counter(
    "shop_auth_refused_total", "HTTP requests refused for want of a valid credential (401), by reason.",
    ["service", "endpoint", "reason"], registry=REGISTRY)
TRACK_RATE_LIMITED = Counter(
    "shop_track_rate_limited_total", "POST /track requests over their key's rate limit (429).",
    ["service"], registry=REGISTRY)


def exposition() -> bytes:
    return generate_latest(REGISTRY)

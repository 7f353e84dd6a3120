"""Who may post to `/track`, how often, and what they may claim.

- A key per site or app (`ANALYTICS_TRACK_KEYS="web:<secret>,backend:<secret>"`,
  from a Kubernetes Secret): the body is signed with it (shared.security.auth), 401 otherwise.
- A rate limit per key (`ANALYTICS_TRACK_RATE_PER_MINUTE` requests), counted in
  MongoDB so every replica shares it: 429 with Retry-After beyond it.
- `member_id` only from a server-side key (`ANALYTICS_TRACK_SERVER_KEYS`) or with
  a `member_token` the site's backend minted for that session
  (`ANALYTICS_SESSION_SECRET`); otherwise the event is refused naming the field.
- `occurred_at` clamped: never after now; for browser keys never before now minus
  `ANALYTICS_TRACK_MAX_AGE_SECONDS` (server-side keys may backfill)."""
from __future__ import annotations

from datetime import datetime, timedelta

from pymongo import ASCENDING, IndexModel, ReturnDocument

from shared.clock import parse_iso, to_iso
from shared.errors import RateLimited, Unauthorized, ValidationFailed
from shared.observability import metrics
from shared.observability.logs import get_logger
from shared.security import auth

log = get_logger(__name__)

INDEXES = {"track_rate": [IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0)]}


def authenticate(headers, body: bytes, settings) -> auth.TrackKey:
    keys = auth.parse_keys(settings.option("track_keys", ""), settings.option("track_server_keys", ""))
    key, why = auth.verify_track(headers, body, keys)
    if key is None:
        metrics.AUTH_REFUSED.labels("analytics", "/track", why).inc()
        log.warning("track_unauthorized", reason=why)
        raise Unauthorized("A valid tracking key and body signature are required.", {"reason": why})
    return key


def limit_rate(db, key: auth.TrackKey, settings, now: datetime) -> None:
    """Count this request in the key's minute; refuse past the limit."""
    limit = settings.option("track_rate_per_minute", 6000)
    minute = int(now.timestamp() // 60)
    window = db.track_rate.find_one_and_update(
        {"_id": f"{key.key_id}:{minute}"},
        {"$inc": {"n": 1}, "$setOnInsert": {"expires_at": now + timedelta(minutes=2)}},
        upsert=True, return_document=ReturnDocument.AFTER)
    if window["n"] > limit:
        metrics.TRACK_RATE_LIMITED.labels("analytics").inc()
        log.warning("track_rate_limited", key_id=key.key_id, limit=limit)
        raise RateLimited(f"At most {limit} requests a minute for this key.",
                          {"retry_after_s": 60 - int(now.timestamp()) % 60, "limit": limit})


def items_of(body) -> tuple[list, str]:
    """The event objects of a body and their field prefix (the shapes tracking accepts)."""
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        return body["events"], "events."
    if isinstance(body, list):
        return body, "events."
    return ([body], "") if isinstance(body, dict) else ([], "")


def identify(body, key: auth.TrackKey, settings, now: datetime):
    """Resolve `member_token`s into `member_id`s; refuse a `member_id` a browser key
    cannot vouch for. Returns the body to validate (tokens removed)."""
    secret = settings.option("session_secret", "")
    items, prefix = items_of(body)
    errors = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        where = f"{prefix}{index}." if prefix else ""
        token = item.pop("member_token", None)
        if token is not None:
            member = auth.member_of_token(secret, token, item.get("session_id"), now.timestamp())
            if member is None or item.get("member_id") not in (None, member):
                errors[f"{where}member_token"] = ["Not a valid member token for this session."]
                continue
            item["member_id"] = member
        elif item.get("member_id") is not None and not key.server:
            errors[f"{where}member_id"] = ["Needs a member_token (or a server-side key)."]
    if errors:
        raise ValidationFailed.fields(errors, "Invalid tracking event(s).")
    return body


def clamp(envelopes: list[dict], key: auth.TrackKey, settings, now: datetime) -> None:
    """Keep every event's time inside [now - max age, now] (max age: browser keys only)."""
    oldest = None if key.server else now - timedelta(seconds=settings.option("track_max_age_seconds",
                                                                              86400))
    for envelope in envelopes:
        at = parse_iso(envelope["occurred_at"])
        kept = min(at, now) if oldest is None else min(max(at, oldest), now)
        if kept != at:
            envelope["occurred_at"] = envelope["data"]["occurred_at"] = to_iso(kept)

"""Who may call an HTTP endpoint: bearer tokens, signed request bodies and
signed member-session tokens. Keys come from the environment (a Kubernetes
Secret in production, `.run/secrets.json` for `make up`); none is in the repo.

- Operators' endpoints (`/kpis`, `/dashboard`, ...): when a service listens
  beyond loopback, `Authorization: Bearer $HTTP_TOKEN` or 401 (no token
  configured then means every request is refused: fail closed).
  `/health/*` and `/metrics` stay open (the NetworkPolicy limits who reaches them).
- `POST /track`: `X-Track-Key: <key id>` and `X-Track-Signature: <hex
  HMAC-SHA256 of the body>` with one of `ANALYTICS_TRACK_KEYS`.
- A browser may attach `member_id` only with `member_token`, minted by the
  site's backend with `member_token(secret, member_id, session_id, expires)`."""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import time
from dataclasses import dataclass

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_token(settings) -> str:
    """The operators' bearer token: `extra["http_token"]` (tests), else $HTTP_TOKEN."""
    if "http_token" in settings.extra:
        return str(settings.extra["http_token"] or "")
    return os.environ.get("HTTP_TOKEN", "")


def bearer_of(headers) -> str:
    value = headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def http_refusal(headers, settings) -> str | None:
    """Why an operators' request is refused (None: allowed)."""
    if is_loopback(settings.http_host):
        return None
    expected = http_token(settings)
    if not expected:
        return "no_token_configured"
    given = bearer_of(headers)
    if not given:
        return "missing"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return "wrong"
    return None


# -- tracking keys ------------------------------------------------------------------------

@dataclass(frozen=True)
class TrackKey:
    key_id: str
    secret: str
    server: bool  # a server-side caller: may name member_id and backfill


def parse_keys(keys: str, server_ids: str = "") -> dict[str, TrackKey]:
    """`"web:s3cret,backend:0ther"` and `"backend"` -> {key id: TrackKey}."""
    servers = {s.strip() for s in server_ids.split(",") if s.strip()}
    parsed = {}
    for item in keys.split(","):
        key_id, sep, secret = item.strip().partition(":")
        if sep and key_id and secret:
            parsed[key_id] = TrackKey(key_id, secret, key_id in servers)
    return parsed


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def track_headers(key_id: str, secret: str, body: bytes) -> dict:
    """The headers a client sends with a `POST /track` body."""
    return {"X-Track-Key": key_id, "X-Track-Signature": sign(secret, body)}


def verify_track(headers, body: bytes, keys: dict[str, TrackKey]) -> tuple[TrackKey | None, str]:
    """(the caller's key, "") or (None, why refused)."""
    key_id = headers.get("X-Track-Key", "")
    signature = headers.get("X-Track-Signature", "")
    if not key_id or not signature:
        return None, "missing"
    key = keys.get(key_id)
    if key is None:
        return None, "unknown_key"
    if not hmac.compare_digest(signature.encode(), sign(key.secret, body).encode()):
        return None, "bad_signature"
    return key, ""


# -- member session tokens ----------------------------------------------------------------

def member_token(secret: str, member_id: str, session_id: str, expires_at: float) -> str:
    """A token binding `member_id` to `session_id` until `expires_at` (epoch seconds)."""
    claim = f"{member_id}|{session_id}|{int(expires_at)}"
    encoded = base64.urlsafe_b64encode(claim.encode()).decode().rstrip("=")
    return f"{encoded}.{sign(secret, claim.encode())}"


def member_of_token(secret: str, token, session_id: str, now: float | None = None) -> str | None:
    """The member a valid, unexpired token names for this session, else None."""
    if not secret or not isinstance(token, str) or token.count(".") != 1 or len(token) > 1000:
        return None
    encoded, signature = token.split(".")
    try:
        claim = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        member_id, token_session, expires = claim.split("|")
        expires_at = int(expires)
    except (ValueError, UnicodeDecodeError):
        return None
    if not hmac.compare_digest(signature.encode(), sign(secret, claim.encode()).encode()):
        return None
    if token_session != session_id or expires_at < (now if now is not None else time.time()):
        return None
    return member_id

"""HTTP entrypoints with the same guarantees as RPC ones: transient store or
broker errors re-run the handler with backoff, and typed errors become JSON
responses with a fitting status (400 naming the fields, 404, 409, 504, …).
Beyond loopback every endpoint but health and metrics needs a credential
(shared.security.auth): 401 otherwise."""
from __future__ import annotations

import json

from nameko.web.handlers import HttpRequestHandler
from werkzeug.wrappers import Response

from shared.config import settings_of
from shared.errors import (
    Conflict,
    NotFound,
    PaymentDeclined,
    RateLimited,
    ServiceTimeout,
    ServiceUnavailable,
    ShopError,
    Unauthorized,
    ValidationFailed,
)
from shared.observability import metrics
from shared.observability.logs import get_logger
from shared.retry import retrying
from shared.security import auth

log = get_logger(__name__)

STATUS = [(ValidationFailed, 400), (NotFound, 404), (Conflict, 409), (PaymentDeclined, 402),
          (ServiceTimeout, 504), (ServiceUnavailable, 503), (Unauthorized, 401), (RateLimited, 429)]


def json_response(payload, status: int = 200) -> Response:
    return Response(json.dumps(payload, default=str, ensure_ascii=False), status=status,
                    mimetype="application/json")


def unauthorized(service: str, endpoint: str, reason: str) -> Response:
    """401, counted and logged (reason only: never the token)."""
    metrics.AUTH_REFUSED.labels(service, endpoint, reason).inc()
    log.warning("http_unauthorized", endpoint=endpoint, reason=reason)
    response = json_response({"error": "Unauthorized", "code": "unauthorized",
                              "message": "A valid credential is required.", "details": {"reason": reason}},
                             401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="shop"'
    return response


def error_response(exc: ShopError) -> Response:
    status = next((code for kind, code in STATUS if isinstance(exc, kind)), 400)
    response = json_response(exc.to_dict(), status)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.details.get("retry_after_s", 60))
    return response


class HttpEntrypoint(HttpRequestHandler):
    """`access`: "operator" (the default: a bearer token when listening beyond
    loopback, see shared.security.auth), "open" (health and metrics) or "own" (the
    handler authenticates, as `/track` does with its signed bodies)."""

    def __init__(self, method, url, access: str = "operator", openapi: dict | None = None, **kwargs):
        if access not in ("operator", "open", "own"):
            raise ValueError(f"unknown access {access!r} for {method} {url}")
        self.access = access
        self.openapi = openapi  # this operation's part of docs/openapi.json (tools.openapi)
        super().__init__(method, url, **kwargs)

    def handle_request(self, request):
        if self.access == "operator":
            why = auth.http_refusal(request.headers, settings_of(self.container))
            if why is not None:
                return unauthorized(self.container.service_name, self.url, why)
        return super().handle_request(request)

    def response_from_exception(self, exc):
        if isinstance(exc, ShopError):
            return error_response(exc)
        return json_response({"error": "InternalError", "code": "internal",
                              "message": "The request failed; see the service log."}, 500)


def http(method: str, url: str, access: str = "operator", openapi: dict | None = None, **kwargs):
    """`@http("GET", "/kpis")` on a service method taking the werkzeug request;
    `access` as HttpEntrypoint says; `openapi` documents parameters and responses."""

    def decorate(fn):
        return HttpEntrypoint.decorator(method, url, access=access, openapi=openapi,
                                        expected_exceptions=(ShopError,), **kwargs)(
            retrying(fn, kind="http"))

    return decorate

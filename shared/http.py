"""HTTP entrypoints with the same guarantees as RPC ones: transient store or
broker errors re-run the handler with backoff, and typed errors become JSON
responses with a fitting status (400 naming the fields, 404, 409, 504, …)."""
from __future__ import annotations

import json

from nameko.web.handlers import HttpRequestHandler
from werkzeug.wrappers import Response

from shared.errors import (
    Conflict,
    NotFound,
    PaymentDeclined,
    ServiceTimeout,
    ServiceUnavailable,
    ShopError,
    ValidationFailed,
)
from shared.retry import retrying

STATUS = [(ValidationFailed, 400), (NotFound, 404), (Conflict, 409), (PaymentDeclined, 402),
          (ServiceTimeout, 504), (ServiceUnavailable, 503)]


def json_response(payload, status: int = 200) -> Response:
    return Response(json.dumps(payload, default=str, ensure_ascii=False), status=status,
                    mimetype="application/json")


def error_response(exc: ShopError) -> Response:
    status = next((code for kind, code in STATUS if isinstance(exc, kind)), 400)
    return json_response(exc.to_dict(), status)


class HttpEntrypoint(HttpRequestHandler):
    def response_from_exception(self, exc):
        if isinstance(exc, ShopError):
            return error_response(exc)
        return json_response({"error": "InternalError", "code": "internal",
                              "message": "The request failed; see the service log."}, 500)


def http(method: str, url: str, **kwargs):
    """`@http("POST", "/track")` on a service method taking the werkzeug request."""

    def decorate(fn):
        return HttpEntrypoint.decorator(method, url, expected_exceptions=(ShopError,), **kwargs)(
            retrying(fn, kind="http"))

    return decorate

"""Typed errors that cross RPC with their type, message and field details.

Each is registered with nameko's `deserialize_to_instance`, so a caller gets
the same class back (built from `args`), not a generic RemoteError."""
from __future__ import annotations

from nameko.exceptions import deserialize_to_instance


class ShopError(Exception):
    """Base of every expected, typed error. `details` is JSON-safe."""

    code = "error"

    def __init__(self, message: str = "", details: dict | None = None):
        super().__init__(message, details or {})
        self.message = message
        self.details = details or {}

    def __str__(self) -> str:
        if self.details:
            return f"{self.message} {self.details}"
        return self.message

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "code": self.code,
                "message": self.message, "details": self.details}


@deserialize_to_instance
class NotFound(ShopError):
    code = "not_found"


@deserialize_to_instance
class ValidationFailed(ShopError):
    """Bad input. `details["fields"]` maps each field to its messages."""

    code = "validation_failed"

    @classmethod
    def fields(cls, fields: dict, message: str = "Invalid input.") -> "ValidationFailed":
        return cls(message, {"fields": fields})

    @classmethod
    def field(cls, name: str, problem: str) -> "ValidationFailed":
        return cls(f"{name}: {problem}", {"fields": {name: [problem]}})

    @property
    def field_errors(self) -> dict:
        return self.details.get("fields", {})


@deserialize_to_instance
class Conflict(ShopError):
    code = "conflict"


@deserialize_to_instance
class InsufficientStock(Conflict):
    code = "insufficient_stock"


@deserialize_to_instance
class PaymentDeclined(ShopError):
    code = "payment_declined"


@deserialize_to_instance
class ServiceTimeout(ShopError):
    """An RPC call did not answer within its timeout (service stopped or slow)."""

    code = "timeout"


@deserialize_to_instance
class ServiceUnavailable(ShopError):
    """A dependency (store, broker, another service) is unreachable."""

    code = "unavailable"


@deserialize_to_instance
class Unauthorized(ShopError):
    """No valid credential (HTTP 401)."""

    code = "unauthorized"


@deserialize_to_instance
class RateLimited(ShopError):
    """Too many requests for this credential (HTTP 429); `details["retry_after_s"]`."""

    code = "rate_limited"


EXPECTED_ERRORS: tuple[type[Exception], ...] = (ShopError,)

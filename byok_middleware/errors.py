"""One exception tree for everything the gateway can refuse or fail at.

Every error a client can see is a :class:`BYOKError`: it carries its HTTP status and OpenAI error
``type`` and renders itself in OpenAI's shape. Its message is written for the client, so it never
holds ``str()`` of a foreign exception, a header or a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "AuthenticationFailed",
    "BYOKError",
    "ConfigurationError",
    "InvalidRequest",
    "NoProviderKey",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "UnprocessableEntity",
    "UnsupportedEndpoint",
    "UpstreamError",
    "UpstreamUnavailable",
]


class ConfigurationError(RuntimeError):
    """The operator's configuration is missing or malformed; raised at start-up only."""


class BYOKError(Exception):
    """Base of every client-visible error; rendered as ``{"error": {...}}``."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers: dict[str, str] = dict(headers or {})
        if status_code is not None:
            # Instances may refine the class status (e.g. an upstream 503 vs 502).
            self.status_code = status_code  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI error object (the body is ``{"error": to_dict()}``)."""
        return {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }


class InvalidRequest(BYOKError):
    """The request itself is wrong (malformed JSON, wrong types, unknown model or provider)."""

    status_code = 400
    error_type = "invalid_request_error"


class UnprocessableEntity(InvalidRequest):
    """The body parsed but failed validation."""

    status_code = 422


class UnsupportedEndpoint(InvalidRequest):
    """The provider does not offer this endpoint (refused before any upstream call)."""

    default_code = "unsupported_endpoint"


class NoProviderKey(InvalidRequest):
    """Neither a tenant key nor a platform key can serve the request."""

    default_code = "no_provider_key"


class PayloadTooLarge(InvalidRequest):
    """The body exceeds the configured limit."""

    status_code = 413
    default_code = "payload_too_large"


class AuthenticationFailed(BYOKError):
    """No tenant could be identified; says nothing about which tenants exist."""

    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class NotFound(BYOKError):
    """Unknown route or a record the caller cannot see (another tenant's ids are 404, never 403)."""

    status_code = 404
    error_type = "not_found_error"
    default_code = "not_found"


class RateLimited(BYOKError):
    """Every candidate key is at a limit or cooling down."""

    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(BYOKError):
    """The provider answered with an error; the status is the (mapped) upstream one."""

    status_code = 502
    error_type = "upstream_error"

    def __init__(self, message: str, *, error_type: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        if error_type is not None:
            self.error_type = error_type  # type: ignore[misc]


class UpstreamUnavailable(BYOKError):
    """The provider could not be reached or timed out."""

    status_code = 502
    error_type = "upstream_unavailable"
    default_code = "upstream_unavailable"


class ClientDisconnected(BYOKError):
    """The client left before the answer began; the upstream call was cancelled (ledger: 499)."""

    status_code = 499
    error_type = "client_disconnected"
    default_code = "client_disconnected"

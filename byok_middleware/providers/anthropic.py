"""Anthropic through its native Messages API: the sans-I/O translation to and from OpenAI's wire.

Plain synchronous functions and one small stateful stream translator; no network, no event loop.
The translation itself lives in ``anthropic_messages`` (chat messages), ``anthropic_request``,
``anthropic_response`` and ``anthropic_stream``; this module re-exports it and adds the HTTP-edge
helpers: error bodies, rate-limit headers and the model list.

``response_format`` JSON is emulated with a forced ``json_response`` tool. The response side has to
know, so the caller passes ``json_mode=uses_json_tool(openai_request)`` to
:func:`to_chat_completion` and :class:`StreamTranslator`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from byok_middleware.errors import UpstreamError
from byok_middleware.providers.anthropic_messages import JSON_TOOL_NAME
from byok_middleware.providers.anthropic_request import (
    DEFAULT_MAX_TOKENS,
    REASONING_BUDGETS,
    to_messages_request,
    uses_json_tool,
)
from byok_middleware.providers.anthropic_response import (
    openai_error,
    to_chat_completion,
    to_openai_usage,
)
from byok_middleware.providers.anthropic_stream import StreamTranslator

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "ERROR_TYPE_BY_STATUS",
    "JSON_TOOL_NAME",
    "REASONING_BUDGETS",
    "StreamTranslator",
    "map_error",
    "openai_model_list",
    "openai_rate_limit_headers",
    "to_chat_completion",
    "to_messages_request",
    "to_openai_usage",
    "upstream_error",
    "uses_json_tool",
]

ANTHROPIC_VERSION = "2023-06-01"

# Used when the body names no error type (HTML from a load balancer, an empty body).
ERROR_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_KEY_REJECTED = "The provider rejected the API key (Anthropic: authentication_error)."


def map_error(status: int, body: bytes) -> tuple[int, dict[str, Any]]:
    """Map an Anthropic error response to ``(client status, OpenAI error object)``.

    529 (overloaded) is not an HTTP status OpenAI clients know: it becomes 503. A body that is not
    Anthropic's JSON error is not echoed (it may be a proxy's HTML page); a 401's message is
    replaced by our own, so no upstream text about keys reaches the client.
    """
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    error = error if isinstance(error, dict) else {}
    error_type = error.get("type") if isinstance(error.get("type"), str) else None
    error_type = error_type or ERROR_TYPE_BY_STATUS.get(
        status, "api_error" if status >= 500 else None
    )
    message = error.get("message") if isinstance(error.get("message"), str) else None
    if status == 401:
        message = _KEY_REJECTED
    message = message or f"Anthropic returned HTTP {status}."
    return (503 if status == 529 else status), openai_error(error_type, message, status=status)


def upstream_error(status: int, body: bytes) -> UpstreamError:
    """:func:`map_error` as the project's exception, ready to raise."""
    client_status, error = map_error(status, body)
    return UpstreamError(
        error["message"],
        error_type=error["type"],
        code=error["code"],
        param=error["param"],
        status_code=client_status,
    )


def openai_rate_limit_headers(
    headers: Mapping[str, str], *, now: datetime | None = None
) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` from Anthropic's
    ``anthropic-ratelimit-*`` headers. Resets turn from RFC 3339 instants into durations from
    ``now`` (default: the current UTC time) in OpenAI's style (``"12s"``, ``"1m30s"``,
    ``"450ms"``); unparseable values are left out."""
    lowered = {name.lower(): value for name, value in headers.items()}
    out: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        for field in ("limit", "remaining"):
            value = lowered.get(f"anthropic-ratelimit-{kind}-{field}")
            if value is not None:
                out[f"x-ratelimit-{field}-{kind}"] = value
        reset = _parse_instant(lowered.get(f"anthropic-ratelimit-{kind}-reset"))
        if reset is not None:
            start = now or datetime.now(UTC)
            start = start if start.tzinfo else start.replace(tzinfo=UTC)
            out[f"x-ratelimit-reset-{kind}"] = _duration((reset - start).total_seconds())
    return out


def _parse_instant(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        return None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def _duration(seconds: float) -> str:
    """A Go-style duration, as OpenAI writes its resets: ``450ms``, ``12s``, ``1.5s``, ``6m0s``."""
    millis = max(0, math.ceil(seconds * 1000))
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs


def openai_model_list(anthropic_models: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``data`` entries of OpenAI's ``/v1/models`` from Anthropic's ``GET /v1/models`` body.

    Ids are returned as Anthropic names them (no ``anthropic/`` prefix); ``created`` is the epoch
    of ``created_at`` (0 when missing or unparseable).
    """
    models = []
    for entry in anthropic_models.get("data") or []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str):
            continue
        created = _parse_instant(entry.get("created_at"))
        models.append(
            {
                "id": entry["id"],
                "object": "model",
                "created": int(created.timestamp()) if created else 0,
                "owned_by": "anthropic",
            }
        )
    return models

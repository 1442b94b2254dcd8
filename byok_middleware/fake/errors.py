"""The providers' real error shapes and key echoes (providers.md §1.4, §2.5, §4, §5, §6.1, §7).

Every function here is pure: it returns an :class:`ErrorAnswer` and never logs (the key echoes
carry key material on purpose, so the gateway's redaction can be tested against them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

from byok_middleware.fake.providers import OPENAI_ERROR_SHAPE, check_provider

#: request_id used in Anthropic error bodies built ahead of time (scripts).
SCRIPTED_REQUEST_ID: Final = "req_fake_scripted"

_OPENAI_TYPES: Final = {401: "invalid_request_error", 403: "permission_error", 429: "requests"}
_OPENAI_CODES: Final = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
_ANTHROPIC_TYPES: Final = {
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_GOOGLE_STATUSES: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_OPENAI_KEY_HELP: Final = (
    "You can find your API key at https://platform.openai.com/account/api-keys."
)
_GOOGLE_BAD_KEY: Final = "API key not valid. Please pass a valid API key."


@dataclass(frozen=True)
class ErrorAnswer:
    """An error response: HTTP `status`, JSON `body` (object or array) and extra `headers`."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def status_phrase(status: int) -> str:
    """The HTTP reason phrase for `status` ("Overloaded" for Anthropic's 529)."""
    if status == 529:
        return "Overloaded"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def openai_key_echo(key: str) -> str:
    """How OpenAI echoes a rejected key: 8-char prefix, stars, last 4; short keys in full."""
    if len(key) < 20:
        return key
    return key[:8] + "*" * (len(key) - 12) + key[-4:]


def error_body(
    provider: str,
    status: int,
    message: str | None = None,
    code: str | None = None,
    error_type: str | None = None,
    request_id: str = SCRIPTED_REQUEST_ID,
) -> Any:
    """The JSON body `provider` sends for an error of `status` (see module docstring)."""
    check_provider(provider)
    text = message if message is not None else status_phrase(status)
    if provider in OPENAI_ERROR_SHAPE:
        default_type = "server_error" if status >= 500 else "invalid_request_error"
        kind = error_type or _OPENAI_TYPES.get(status, default_type)
        code = code if code is not None else _OPENAI_CODES.get(status)
        return {"error": {"message": text, "type": kind, "param": None, "code": code}}
    if provider == "anthropic":
        default_type = "api_error" if status >= 500 else "invalid_request_error"
        kind = error_type or _ANTHROPIC_TYPES.get(status, default_type)
        return {"type": "error", "error": {"type": kind, "message": text}, "request_id": request_id}
    if provider == "google":
        details = [_google_error_info(code)] if code else []
        return [_google_error(status, text, details, error_type)]
    return {"status": status, "title": status_phrase(status), "detail": text}


def missing_key(provider: str) -> ErrorAnswer:
    """What `provider` answers to a request that carries no API key at all."""
    if provider == "openai":
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). "
            + _OPENAI_KEY_HELP
        )
        return ErrorAnswer(401, error_body(provider, 401, message, None))
    if provider == "anthropic":
        return ErrorAnswer(401, error_body(provider, 401, "x-api-key header is required"))
    if provider == "google":
        message = "Method doesn't allow unregistered callers. Please use an API key."
        return ErrorAnswer(403, error_body(provider, 403, message))
    if provider == "nvidia":
        return ErrorAnswer(
            401, error_body(provider, 401, "Header of type 'authorization' was missing")
        )
    message = {
        "groq": "Invalid API Key",
        "deepseek": "Authentication Fails (auth header format should be Bearer sk-...)",
    }[provider]
    return ErrorAnswer(401, error_body(provider, 401, message, "invalid_api_key"))


def invalid_key(provider: str, key: str | None) -> ErrorAnswer:
    """What `provider` answers when it rejects `key`, echoing it exactly as the real one does."""
    check_provider(provider)
    if key is None:
        return missing_key(provider)
    if provider == "openai":
        message = f"Incorrect API key provided: {openai_key_echo(key)}. {_OPENAI_KEY_HELP}"
        return ErrorAnswer(401, error_body(provider, 401, message, "invalid_api_key"))
    if provider == "deepseek":
        message = f"Authentication Fails, Your api key: ****{key[-4:]} is invalid"
        body = error_body(provider, 401, message, "invalid_request_error", "authentication_error")
        return ErrorAnswer(401, body)
    if provider == "google":
        return ErrorAnswer(400, [_google_invalid_key(key)])
    if provider == "nvidia":
        return ErrorAnswer(401, error_body(provider, 401, "Authorization failed"))
    if provider == "anthropic":
        return ErrorAnswer(401, error_body(provider, 401, "invalid x-api-key"))
    return ErrorAnswer(401, error_body(provider, 401, "Invalid API Key", "invalid_api_key"))


def rate_limited(provider: str, retry_after: float) -> ErrorAnswer:
    """A 429 in `provider`'s shape; `retry-after` header, except Google (RetryInfo in the body)."""
    check_provider(provider)
    seconds = _seconds_text(retry_after)
    headers = {"retry-after": seconds}
    if provider == "google":
        details = [
            _google_error_info("RATE_LIMIT_EXCEEDED"),
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{seconds}s"},
        ]
        message = "You exceeded your current quota, please check your plan and billing details."
        return ErrorAnswer(429, [_google_error(429, message, details)])
    if provider in {"openai", "groq"}:
        headers["retry-after-ms"] = str(round(retry_after * 1000))
        headers["x-ratelimit-remaining-requests"] = "0"
    message = {
        "openai": "Rate limit reached for requests. Please try again later.",
        "groq": "Rate limit reached for requests per minute (RPM). Please try again later.",
        "deepseek": "Rate Limit Reached",
        "anthropic": "Number of requests has exceeded your per-minute rate limit.",
        "nvidia": "Too many requests",
    }[provider]
    return ErrorAnswer(429, error_body(provider, 429, message, "rate_limit_exceeded"), headers)


def overloaded() -> ErrorAnswer:
    """Anthropic's 529 `overloaded_error`."""
    return ErrorAnswer(529, error_body("anthropic", 529, "Overloaded"))


def server_error(provider: str) -> ErrorAnswer:
    """A 500 in `provider`'s shape."""
    message = {
        "openai": "The server had an error while processing your request. Sorry about that!",
        "anthropic": "Internal server error",
        "google": "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting",
    }.get(check_provider(provider), "Internal Server Error")
    return ErrorAnswer(500, error_body(provider, 500, message))


def _seconds_text(seconds: float) -> str:
    if seconds < 0:
        raise ValueError("retry_after must be >= 0")
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def _google_error(
    status: int, message: str, details: list[dict[str, Any]], state: str | None = None
) -> dict[str, Any]:
    state = state or _GOOGLE_STATUSES.get(status, "UNKNOWN")
    return {"error": {"code": status, "message": message, "status": state, "details": details}}


def _google_error_info(reason: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }


def _google_invalid_key(key: str) -> dict[str, Any]:
    details = [
        _google_error_info("API_KEY_INVALID"),
        {
            "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
            "locale": "en-US",
            "message": _GOOGLE_BAD_KEY,
        },
        {
            "@type": "type.googleapis.com/google.rpc.DebugInfo",
            "stackEntries": [],
            "detail": f"Invalid API key: {key}",
        },
    ]
    return _google_error(400, _GOOGLE_BAD_KEY, details)

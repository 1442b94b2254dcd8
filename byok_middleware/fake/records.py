"""The fake upstream's public value types: what it recorded, and what a test scripts it to say."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from byok_middleware.fake import errors
from byok_middleware.fake.multipart import FormPart, header_params, parse_multipart
from byok_middleware.fake.providers import check_provider


@dataclass(frozen=True, repr=False)
class RecordedRequest:
    """One request as the fake received it.

    `provider` is the provider whose URL prefix matched ("unknown" when none did); `path` is the
    part after that prefix (e.g. "/chat/completions", "/v1/messages"); `query` is the raw query
    string; `headers` maps lower-case names to values (repeated headers joined with ", ");
    `json` is the parsed body, or None when the body is not JSON. The `repr` leaves out headers
    and body, which hold API keys.
    """

    provider: str
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    json: Any = None

    @property
    def api_key(self) -> str | None:
        """The key from `Authorization: Bearer X`, else `x-api-key`, else `x-goog-api-key`."""
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return self.headers.get("x-api-key") or self.headers.get("x-goog-api-key") or None

    @property
    def content_type(self) -> str:
        """The body's media type, lower-case, without parameters ("" when absent)."""
        media_type, _ = header_params(self.headers.get("content-type", ""))
        return media_type

    @property
    def form(self) -> dict[str, list[FormPart]]:
        """A multipart body's parts by field name (in order); {} for any other body."""
        fields: dict[str, list[FormPart]] = {}
        for part in parse_multipart(self.headers.get("content-type", ""), self.body):
            fields.setdefault(part.name, []).append(part)
        return fields

    def form_value(self, name: str) -> str | None:
        """The first multipart text field called `name`, or None."""
        parts = self.form.get(name)
        return parts[0].text if parts else None

    def __repr__(self) -> str:
        return (
            f"RecordedRequest(provider={self.provider!r}, method={self.method!r}, "
            f"path={self.path!r}, body=<{len(self.body)} bytes>)"
        )


def parse_json_body(body: bytes) -> Any:
    """The JSON value of `body`, or None when it is empty or not JSON."""
    if not body:
        return None
    try:
        return jsonlib.loads(body)
    except ValueError:
        return None


@dataclass(frozen=True)
class Scripted:
    """One scripted answer, queued with `FakeUpstream.script(provider, ...)`.

    With `json` or `body` set, exactly that is sent with `status` and `headers`. Without either,
    a `status` >= 400 sends the provider's generic error shape for that status, and anything else
    sends the normal default answer for the request, with `headers` added and these tweaks:
    `stream` forces (True) or forbids (False) streaming (None: as the request asks);
    `cut_after` sends that many content chunks of a stream, then drops the connection without
    ending the body; `chunk_delay` overrides the fake's spacing for this stream;
    `anthropic_error_after` sends an Anthropic `event: error` (overloaded_error) after that
    many text deltas of a 200 stream. `delay` (seconds) is waited before answering in every case.
    `invalid_key_for` (set by :meth:`invalid_key`) renders that provider's invalid-key answer
    at answer time, echoing the key the request carried.
    """

    status: int = 200
    json: Any = None
    body: bytes | str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    stream: bool | None = None
    cut_after: int | None = None
    chunk_delay: float | None = None
    anthropic_error_after: int | None = None
    invalid_key_for: str | None = None

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {self.status}")
        if self.json is not None and self.body is not None:
            raise ValueError("give either json or body, not both")
        for name in ("delay", "chunk_delay", "cut_after", "anthropic_error_after"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.invalid_key_for is not None:
            check_provider(self.invalid_key_for)

    @classmethod
    def error(
        cls,
        provider: str,
        status: int,
        message: str | None = None,
        code: str | None = None,
        *,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Scripted:
        """An error of `status` in `provider`'s real shape (OpenAI, Anthropic, Google array,
        NVIDIA problem details); `code` is OpenAI's `code` or Google's ErrorInfo `reason`."""
        body = errors.error_body(provider, status, message, code, error_type)
        return cls(status=status, json=body, headers=dict(headers or {}))

    @classmethod
    def invalid_key(cls, provider: str) -> Scripted:
        """`provider`'s answer to a rejected key, echoing the request's key like the real one:
        OpenAI prefix+last 4 (short keys in full), DeepSeek last 4, Google the full key in a
        DebugInfo detail (status 400); NVIDIA and Anthropic 401 without echo."""
        return cls(status=401, invalid_key_for=check_provider(provider))

    @classmethod
    def rate_limited(cls, provider: str, retry_after: float = 1.0) -> Scripted:
        """A 429 in `provider`'s shape with a `retry-after` header (Google: `retryDelay` in the
        body's RetryInfo instead, as Google sends no header)."""
        return cls._from_answer(errors.rate_limited(provider, retry_after))

    @classmethod
    def overloaded(cls) -> Scripted:
        """Anthropic's 529 `overloaded_error`."""
        return cls._from_answer(errors.overloaded())

    @classmethod
    def server_error(cls, provider: str) -> Scripted:
        """A 500 in `provider`'s shape."""
        return cls._from_answer(errors.server_error(provider))

    @classmethod
    def _from_answer(cls, answer: errors.ErrorAnswer) -> Scripted:
        return cls(status=answer.status, json=answer.body, headers=answer.headers)

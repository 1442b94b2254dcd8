"""The sans-I/O reply model: a request in (:class:`Call`), a :class:`Reply` out.

Builders of default answers are pure functions `Call -> Reply`; the async shell in
:mod:`byok_middleware.fake.app` only sends what they describe.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from byok_middleware.fake import errors
from byok_middleware.fake.records import RecordedRequest

_ANTHROPIC_LIMITS: Final = (
    ("requests", 4000),
    ("tokens", 400_000),
    ("input-tokens", 400_000),
    ("output-tokens", 80_000),
)


@dataclass(frozen=True)
class Frame:
    """One piece of a streamed body; `counted` pieces are the content chunks that
    `chunk_delay` spaces and `cut_after` counts."""

    data: bytes
    counted: bool = False


@dataclass(frozen=True)
class Reply:
    """A complete answer: a `body`, or `frames` to stream (then `body` is unused)."""

    status: int = 200
    body: bytes = b""
    media_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    frames: tuple[Frame, ...] | None = None
    cut_after: int | None = None
    chunk_delay: float | None = None


@dataclass(frozen=True)
class Call:
    """Everything a builder may look at: the request and a snapshot of the fake's settings."""

    provider: str
    path: str
    request: RecordedRequest
    seq: int
    created: int
    usage: Mapping[str, int]
    anthropic_usage: Mapping[str, int]
    stream_chunks: int
    stream_override: bool | None = None
    error_after: int | None = None

    @property
    def request_id(self) -> str:
        """A deterministic per-request id (the request's arrival number)."""
        return f"req_fake_{self.seq:06d}"

    def body_object(self) -> dict[str, Any] | None:
        """The request's JSON body when it is an object, else None."""
        value = self.request.json
        return value if isinstance(value, dict) else None


def dumps(value: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(value, separators=(",", ":")).encode()


def sse_data(value: Any) -> bytes:
    """An OpenAI-style SSE event: `data: <json>` and a blank line."""
    return b"data: " + dumps(value) + b"\n\n"


def sse_event(name: str, value: Any) -> bytes:
    """An Anthropic-style SSE event with an `event:` line."""
    return b"event: " + name.encode() + b"\ndata: " + dumps(value) + b"\n\n"


def split_text(text: str, parts: int) -> list[str]:
    """`text` cut into `parts` (at least 1) consecutive pieces of near-equal length."""
    count = max(1, parts)
    size, extra = divmod(len(text), count)
    pieces: list[str] = []
    start = 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append(text[start:end])
        start = end
    return pieces


def word_count(value: Any) -> int:
    """Whitespace-separated words in a string, a list of strings, or token lists (one per int)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(1 if isinstance(item, int) else word_count(item) for item in value)
    return 0


def identity_headers(call: Call) -> dict[str, str]:
    """The request-id header each provider sends on every answer."""
    if call.provider == "anthropic":
        return {"request-id": call.request_id}
    if call.provider in {"openai", "groq"}:
        return {"x-request-id": call.request_id}
    return {}


def success_headers(call: Call) -> dict[str, str]:
    """Identity plus rate-limit headers in the provider's dialect (providers.md §8)."""
    headers = identity_headers(call)
    if call.provider in {"openai", "groq"}:
        headers |= {
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-limit-tokens": "30000000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-remaining-tokens": "29999000",
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-reset-tokens": "2ms",
        }
    elif call.provider == "anthropic":
        reset = (datetime.fromtimestamp(call.created, UTC) + timedelta(seconds=60)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        for kind, limit in _ANTHROPIC_LIMITS:
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(limit - 1000)
            headers[f"anthropic-ratelimit-{kind}-reset"] = reset
    return headers


def json_reply(call: Call, value: Any, status: int = 200) -> Reply:
    """A JSON answer with the success headers."""
    return Reply(status=status, body=dumps(value), headers=success_headers(call))


def error_reply(
    call: Call, status: int, message: str, code: str | None = None, error_type: str | None = None
) -> Reply:
    """An error in the provider's shape for this call."""
    body = errors.error_body(call.provider, status, message, code, error_type, call.request_id)
    return Reply(status=status, body=dumps(body), headers=identity_headers(call))


def answer_reply(call: Call, answer: errors.ErrorAnswer) -> Reply:
    """A prepared :class:`errors.ErrorAnswer` as a reply."""
    headers = identity_headers(call) | answer.headers
    return Reply(status=answer.status, body=dumps(answer.body), headers=headers)


def stream_reply(call: Call, frames: list[Frame]) -> Reply:
    """An SSE answer made of `frames`."""
    headers = success_headers(call) | {"cache-control": "no-cache"}
    return Reply(frames=tuple(frames), media_type="text/event-stream", headers=headers)

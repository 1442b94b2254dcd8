"""The ``Observer`` seam: what the engine tells telemetry, and nothing it could leak.

The engine calls three methods per gateway request (``request_started`` at arrival,
``attempt_finished`` after each upstream attempt, ``request_finished`` once at the end) and
``key_event`` when a key's health changes, the platform key stands in for a tenant's failed
keys, or a budget crosses a threshold. The facts are frozen dataclasses holding ids, names,
counts, times and money only: no provider key, no prompt or answer text, no header but the
W3C trace context. With no observer configured the engine skips the calls (the cost of "off"
is one ``is None`` check per call site); ``Observers`` fans out to several.

An observer may say what it needs with an optional ``needs()`` method, asked at each request's
start, returning a mask of ``NEEDS_*`` flags; the engine then builds only the facts someone
reads. ``request_started`` comes at arrival for ``NEEDS_START`` and otherwise just before the
observer's first other call of that request (the same facts, later), or never when it needs
nothing of the request. An observer without ``needs`` gets every call (``NEEDS_ALL``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol, runtime_checkable

__all__ = [
    "KEY_EVENTS",
    "NEEDS_ALL",
    "NEEDS_ATTEMPTS",
    "NEEDS_END",
    "NEEDS_FAILURES",
    "NEEDS_START",
    "AttemptResult",
    "KeyEvent",
    "Observer",
    "Observers",
    "RequestEnd",
    "RequestStart",
    "error_class",
]

KEY_EVENTS = (
    "key.invalid",
    "key.cooling_down",
    "key.recovered",
    "platform_fallback.used",
    "budget.threshold",
)

# What an observer reads of a request (its optional ``needs()``; see the module doc).
NEEDS_START = 1  # request_started at arrival (it times the request, e.g. a span)
NEEDS_ATTEMPTS = 2  # attempt_finished for every attempt
NEEDS_FAILURES = 4  # attempt_finished for failed attempts only (``error`` not None)
NEEDS_END = 8  # request_finished
NEEDS_ALL = NEEDS_START | NEEDS_ATTEMPTS | NEEDS_FAILURES | NEEDS_END


@dataclass(frozen=True, slots=True)
class RequestStart:
    """A gateway request as it arrives. ``trace_headers`` holds only ``traceparent`` /
    ``tracestate`` / ``baggage`` from the client, to continue its trace."""

    request_id: str
    tenant_id: str
    route: str  # "/chat/completions", "/embeddings", ...
    model: str = ""  # as requested
    stream: bool = False
    trace_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One upstream attempt, after it ended (``status_code`` None: no response came)."""

    attempt: int  # 1-based
    provider: str
    model: str
    key_id: str | None  # None: the platform key
    attribution: str
    status_code: int | None
    duration_ms: float
    error: str | None = None  # error_class(): "connect", "timeout", "auth", "rate_limited", ...
    cooldown_until: datetime | None = None  # set when this attempt put the key to cool down


@dataclass(frozen=True, slots=True)
class RequestEnd:
    """How a gateway request ended (also for refusals before any upstream attempt)."""

    status_code: int
    latency_ms: float
    attempts: int = 0
    provider: str = ""
    model: str = ""  # the model that served (as sent upstream)
    response_model: str | None = None  # as the provider named it
    key_id: str | None = None
    attribution: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal | None = None
    ttft_ms: float | None = None
    cache_hit: bool = False
    cost_saved_usd: Decimal | None = None
    error_type: str | None = None
    refusal: str | None = None  # "budget", "rate_limit", ... when refused before upstream


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """A change the key's owner may want to hear about (``kind`` is one of ``KEY_EVENTS``)."""

    kind: str
    tenant_id: str
    provider: str = ""
    key_id: str | None = None
    reason: str = ""  # for people: "upstream answered 401", never an upstream body
    cooldown_until: datetime | None = None
    threshold: float | None = None  # budget.threshold: 0.8 or 1.0
    budget_usd: Decimal | None = None
    spent_usd: Decimal | None = None


def error_class(status_code: int | None, *, timeout: bool = False) -> str | None:
    """The error class of an attempt, for metric labels and log lines."""
    if timeout:
        return "timeout"
    if status_code is None:
        return "connect"
    if status_code in (401, 403):
        return "auth"
    if status_code == 429:
        return "rate_limited"
    if status_code >= 500:
        return "server"
    if status_code >= 400:
        return "client"
    return None


@runtime_checkable
class Observer(Protocol):
    """Receives the engine's facts. Methods are synchronous and must not block or raise: slow
    work (webhook deliveries) is scheduled on the running loop. ``request_started`` returns a
    token the engine hands back to the other two methods (e.g. an open span)."""

    def request_started(self, start: RequestStart) -> object: ...

    def attempt_finished(self, token: object, attempt: AttemptResult) -> None: ...

    def request_finished(self, token: object, end: RequestEnd) -> None: ...

    def key_event(self, event: KeyEvent) -> None: ...


class Observers:
    """Several observers as one; the token is the tuple of theirs."""

    __slots__ = ("_members",)

    def __init__(self, members: Sequence[Observer]) -> None:
        self._members = tuple(members)

    def __repr__(self) -> str:
        return f"Observers({', '.join(type(m).__name__ for m in self._members)})"

    @property
    def members(self) -> tuple[Observer, ...]:
        return self._members

    def request_started(self, start: RequestStart) -> object:
        return tuple(member.request_started(start) for member in self._members)

    def attempt_finished(self, token: object, attempt: AttemptResult) -> None:
        for member, own in zip(self._members, _tokens(token, self._members), strict=True):
            member.attempt_finished(own, attempt)

    def request_finished(self, token: object, end: RequestEnd) -> None:
        for member, own in zip(self._members, _tokens(token, self._members), strict=True):
            member.request_finished(own, end)

    def key_event(self, event: KeyEvent) -> None:
        for member in self._members:
            member.key_event(event)


def _tokens(token: object, members: Sequence[Observer]) -> tuple[object, ...]:
    if isinstance(token, tuple) and len(token) == len(members):
        return token
    return (None,) * len(members)

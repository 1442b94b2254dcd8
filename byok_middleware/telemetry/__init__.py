"""Telemetry of the gateway: Prometheus metrics, OpenTelemetry traces, log lines and webhook
alerts, each an ``Observer`` the engine calls at request start, per upstream attempt, at the
end, and on key events. Nothing here imports the HTTP layer or ASGI.
"""

from byok_middleware.telemetry.observer import (
    KEY_EVENTS,
    NEEDS_ALL,
    NEEDS_ATTEMPTS,
    NEEDS_END,
    NEEDS_FAILURES,
    NEEDS_START,
    AttemptResult,
    KeyEvent,
    Observer,
    Observers,
    RequestEnd,
    RequestStart,
    error_class,
)

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

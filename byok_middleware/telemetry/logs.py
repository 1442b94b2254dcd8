"""Log lines an operator can act on, as an ``Observer``.

* ``byok_middleware.requests`` at INFO: one line per gateway request, e.g.
  ``request req_1 tenant=t1 route=/chat/completions provider=openai model=gpt-4o status=200
  attempts=1 cost_usd=0.0023 latency_ms=412.5``; or, with ``json=True``, one JSON object with
  the same fields (``event: "request"``).
* ``byok_middleware.health`` at WARNING, with the reason: a key marked invalid, a key cooling
  down (until when), an upstream that could not be reached or timed out, and the platform key
  serving because the tenant's own keys failed.

Every value comes from the observer's dataclasses (ids, names, numbers): no key, no prompt, no
upstream body. The package's redaction filter still applies to these loggers on top.
"""

from __future__ import annotations

import json as _json
import logging
from typing import Any

from byok_middleware.telemetry.observer import (
    NEEDS_END,
    NEEDS_FAILURES,
    AttemptResult,
    KeyEvent,
    RequestEnd,
    RequestStart,
)

__all__ = ["LogObserver"]

_REQUESTS = logging.getLogger("byok_middleware.requests")
_HEALTH = logging.getLogger("byok_middleware.health")


class LogObserver:
    """Writes the request line and the health warnings (see the module doc)."""

    def __init__(
        self,
        *,
        json: bool = False,
        request_lines: bool = True,
        requests: logging.Logger = _REQUESTS,
        health: logging.Logger = _HEALTH,
    ) -> None:
        self._json = json
        self._lines = request_lines  # False: the health warnings only (BYOK_REQUEST_LOG=false)
        self._requests = requests
        self._health = health

    def __repr__(self) -> str:
        return f"LogObserver(json={self._json}, request_lines={self._lines})"

    def needs(self) -> int:
        """Failed attempts (the WARNINGs); the end only while the INFO line would show."""
        if self._lines and self._requests.isEnabledFor(logging.INFO):
            return NEEDS_FAILURES | NEEDS_END
        return NEEDS_FAILURES

    def request_started(self, start: RequestStart) -> object:
        return start

    def attempt_finished(self, token: object, attempt: AttemptResult) -> None:
        who = f"key {attempt.key_id}" if attempt.key_id else "the platform key"
        tenant = token.tenant_id if isinstance(token, RequestStart) else "?"
        if attempt.error == "auth":
            self._warn(
                "key.invalid",
                f"{attempt.provider} {who} of tenant {tenant} marked invalid: the provider "
                f"answered {attempt.status_code}",
                attempt,
                tenant,
            )
        elif attempt.error == "rate_limited":
            until = attempt.cooldown_until.isoformat() if attempt.cooldown_until else "unknown"
            self._warn(
                "key.cooling_down",
                f"{attempt.provider} {who} of tenant {tenant} cooling down until {until}: the "
                f"provider answered 429",
                attempt,
                tenant,
            )
        elif attempt.error in ("connect", "timeout"):
            reason = "timed out" if attempt.error == "timeout" else "could not be reached"
            self._warn(
                "upstream.unreachable",
                f"upstream {attempt.provider} {reason} (attempt {attempt.attempt}, "
                f"{attempt.duration_ms:.0f} ms, {who} of tenant {tenant})",
                attempt,
                tenant,
            )

    def _warn(self, event: str, text: str, attempt: AttemptResult, tenant: str) -> None:
        if not self._health.isEnabledFor(logging.WARNING):
            return
        if self._json:
            fields = {
                "event": event,
                "tenant": tenant,
                "provider": attempt.provider,
                "key_id": attempt.key_id,
                "status": attempt.status_code,
                "attempt": attempt.attempt,
                "message": text,
            }
            self._health.warning("%s", _json.dumps(fields, separators=(",", ":")))
        else:
            self._health.warning("%s", text)

    def request_finished(self, token: object, end: RequestEnd) -> None:
        if (
            not self._lines
            or not self._requests.isEnabledFor(logging.INFO)
            or not isinstance(token, RequestStart)
        ):
            return
        fields: dict[str, Any] = {
            "request_id": token.request_id,
            "tenant": token.tenant_id,
            "route": token.route,
            "provider": end.provider or None,
            "model": end.model or token.model or None,
            "attribution": end.attribution,
            "status": end.status_code,
            "attempts": end.attempts,
            "cost_usd": str(end.cost_usd) if end.cost_usd is not None else None,
            "latency_ms": round(end.latency_ms, 1),
            "cache_hit": end.cache_hit,
        }
        if self._json:
            self._requests.info("%s", _json.dumps({"event": "request", **fields}))
            return
        request_id = fields.pop("request_id")
        text = " ".join(f"{k}={'-' if v is None else v}" for k, v in fields.items())
        self._requests.info("request %s %s", request_id, text)

    def key_event(self, event: KeyEvent) -> None:
        if event.kind != "platform_fallback.used":
            return  # invalid / cooling down are logged per attempt, with their reason
        text = (
            f"platform key served {event.provider} for tenant {event.tenant_id} because the "
            f"tenant's own keys failed: {event.reason or 'no reason given'}"
        )
        if self._json:
            text = _json.dumps(
                {
                    "event": event.kind,
                    "tenant": event.tenant_id,
                    "provider": event.provider,
                    "message": text,
                }
            )
        self._health.warning("%s", text)

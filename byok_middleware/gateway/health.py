"""Key health: what an upstream answer says about a key, and recording it cheaply.

The sans-I/O half classifies an attempt's outcome (``classify``), reads ``retry-after`` in its
three dialects and picks a cooldown. The async half (``HealthRecorder``) persists what changes
routing (``invalid``, ``cooling_down``, back to ``active``) at once through
``KeyService.set_health`` (store + cache invalidation + bus), and what does not (``last_used_at``,
the ``last_error`` of a sick provider) straight to the store, off the request path and at most
once per key per ``note_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine, Mapping
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

from byok_middleware.clock import Clock
from byok_middleware.gateway.keys import KeyService
from byok_middleware.gateway.observing import Telemetry
from byok_middleware.storage.base import KeyStatus, KeyStore, ProviderKeyRecord
from byok_middleware.telemetry.observer import KeyEvent

__all__ = [
    "HealthRecorder",
    "Outcome",
    "TaskSet",
    "classify",
    "cooldown_seconds",
    "describe_failure",
    "retry_after_seconds",
]

logger = logging.getLogger("byok_middleware.health")

MIN_COOLDOWN = 1.0
# Per-key bookkeeping kept in memory is pruned past this many entries, so deleted and rotated
# keys do not accumulate over a long uptime.
MAX_TRACKED_KEYS = 10_000
MAX_COOLDOWN = 3600.0  # a provider asking for more than an hour is capped; the key is re-tried
BACKOFF_BASE = 2.0  # without retry-after: 2, 4, 8, ... seconds per consecutive 429
BACKOFF_MAX = 120.0

_GOOGLE_RETRY_DELAY = re.compile(rb'"retryDelay"\s*:\s*"(\d+(?:\.\d+)?)s"')


class Outcome(StrEnum):
    """What a failed attempt means for the key and for the request."""

    KEY_REJECTED = "key_rejected"  # 401/403: the key is invalid; fail over
    RATE_LIMITED = "rate_limited"  # 429: the key cools down; fail over
    PROVIDER_FAILED = "provider_failed"  # 408/5xx/529, timeout, connect error: fail over
    REQUEST_FAILED = "request_failed"  # any other 4xx: the request is wrong; no failover

    @property
    def fails_over(self) -> bool:
        return self is not Outcome.REQUEST_FAILED


def classify(status: int) -> Outcome:
    """The outcome of an upstream error status (after ``normalize_error``'s mapping)."""
    if status in (401, 403):
        return Outcome.KEY_REJECTED
    if status == 429:
        return Outcome.RATE_LIMITED
    if status == 408 or status >= 500:
        return Outcome.PROVIDER_FAILED
    return Outcome.REQUEST_FAILED


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def retry_after_seconds(headers: Mapping[str, str], body: bytes, now: datetime) -> float | None:
    """How long the provider asked us to wait, or None when it did not say.

    ``retry-after-ms`` (OpenAI) wins, then ``retry-after`` as seconds or an HTTP date, then
    Google's ``RetryInfo.retryDelay`` ("47s") in the body.
    """
    millis = _number(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    raw = headers.get("retry-after")
    seconds = _number(raw)
    if seconds is not None:
        return seconds
    if raw:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            when = None
        if when is not None and when.tzinfo is not None:
            return max((when - now).total_seconds(), 0.0)
    match = _GOOGLE_RETRY_DELAY.search(body[:4096])
    return _number(match.group(1).decode()) if match else None


def cooldown_seconds(retry_after: float | None, strikes: int) -> float:
    """The cooldown after the ``strikes``-th consecutive 429: as asked (bounded), else backoff."""
    if retry_after is not None:
        return min(max(retry_after, MIN_COOLDOWN), MAX_COOLDOWN)
    backoff: float = BACKOFF_BASE * 2.0 ** min(max(strikes - 1, 0), 16)
    return min(backoff, BACKOFF_MAX)


def describe_failure(what: str, provider: str, when: datetime) -> str:
    """The short, key-free ``last_error`` text, e.g. ``401 from openai at 2025-01-02T03:04:05Z``.

    Only a status or a fixed word, the provider name and a time: never upstream text, which can
    echo the key.
    """
    return f"{what} from {provider} at {when.strftime('%Y-%m-%dT%H:%M:%SZ')}"


class TaskSet:
    """Background coroutines that must not be garbage-collected mid-flight, awaited on flush."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class HealthRecorder:
    """Turns attempt outcomes into key health; see the module docstring for what is written when."""

    def __init__(
        self,
        keys: KeyService,
        store: KeyStore,
        clock: Clock,
        *,
        note_interval: float = 60.0,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._telemetry = telemetry  # told of invalid, cooling_down and recovered keys
        self._keys = keys
        self._store = store
        self._clock = clock
        self._interval = timedelta(seconds=note_interval)
        self._strikes: dict[str, int] = {}  # key id -> consecutive 429s
        self._noted: dict[tuple[str, str], datetime] = {}  # (key id, field) -> last write
        self._tasks = TaskSet()

    def __repr__(self) -> str:
        return f"HealthRecorder(keys_with_strikes={len(self._strikes)})"

    async def _set(self, record: ProviderKeyRecord, **changes: Any) -> None:
        try:
            await self._keys.set_health(record, **changes)
        except Exception:
            # Health is advisory: a failed write must not fail the request it was learnt from.
            logger.exception("could not record the health of key %s", record.id)

    async def rejected(self, record: ProviderKeyRecord, status: int) -> None:
        """401/403: the key is ``invalid`` until rotated or re-verified."""
        self._strikes.pop(record.id, None)
        await self._set(
            record,
            status=KeyStatus.INVALID,
            last_error=describe_failure(str(status), record.provider, self._clock()),
            cooldown_until=None,
        )
        self._event("key.invalid", record, f"the provider answered {status}")

    async def rate_limited(
        self, record: ProviderKeyRecord, status: int, retry_after: float | None
    ) -> datetime:
        """429: the key cools down until the provider's retry time (or a bounded backoff)."""
        strikes = self._strikes.get(record.id, 0) + 1
        if len(self._strikes) >= MAX_TRACKED_KEYS and record.id not in self._strikes:
            self._strikes.clear()  # only the backoff of keys still failing restarts
        self._strikes[record.id] = strikes
        now = self._clock()
        until = now + timedelta(seconds=cooldown_seconds(retry_after, strikes))
        await self._set(
            record,
            status=KeyStatus.COOLING_DOWN,
            cooldown_until=until,
            last_error=describe_failure(str(status), record.provider, now),
        )
        self._event("key.cooling_down", record, f"the provider answered {status}", until)
        return until

    def provider_failed(self, record: ProviderKeyRecord | None, what: str) -> None:
        """5xx/timeout/connect error: the key stays usable; ``last_error`` notes it (throttled)."""
        if record is None:
            return
        now = self._clock()
        if self._due(record.id, "last_error", now):
            self._write(record, {"last_error": describe_failure(what, record.provider, now)})

    async def succeeded(self, record: ProviderKeyRecord | None) -> None:
        """A 2xx: note ``last_used_at`` (throttled, in background); a key that was cooling down
        is active again."""
        if record is None:
            return
        self._strikes.pop(record.id, None)
        now = self._clock()
        if record.status is KeyStatus.COOLING_DOWN:
            self._noted[(record.id, "last_used_at")] = now
            await self._set(record, status=KeyStatus.ACTIVE, cooldown_until=None, last_used_at=now)
            self._event("key.recovered", record, "the provider answered again after a cooldown")
        elif self._due(record.id, "last_used_at", now):
            self._write(record, {"last_used_at": now})

    def _event(
        self, kind: str, record: ProviderKeyRecord, reason: str, until: datetime | None = None
    ) -> None:
        if self._telemetry is not None:
            event = KeyEvent(kind, record.tenant_id, record.provider, record.id, reason, until)
            self._telemetry.key_event(event)

    def _due(self, key_id: str, name: str, now: datetime) -> bool:
        last = self._noted.get((key_id, name))
        if last is not None and now - last < self._interval and now >= last:
            return False
        self._noted[(key_id, name)] = now
        if len(self._noted) > MAX_TRACKED_KEYS:
            # Notes older than the interval throttle nothing any more.
            cutoff = now - self._interval
            self._noted = {k: noted for k, noted in self._noted.items() if noted > cutoff}
        return True

    def _write(self, record: ProviderKeyRecord, changes: dict[str, object]) -> None:
        # Not routing state, so no cache invalidation or bus message: one row update only.
        async def write() -> None:
            try:
                await self._store.update_key(record.tenant_id, record.id, changes, self._clock())
            except Exception:
                logger.exception("could not note the use of key %s", record.id)

        self._tasks.spawn(write())

    async def flush(self) -> None:
        """Wait for the background writes started so far (the key view reads after this)."""
        await self._tasks.flush()

"""Per-key limits: requests and tokens per minute, and a monthly budget.

``limit_reason`` is the pure check; ``LimitTracker`` gathers the numbers it needs:

* rpm: every attempt on a key adds 1 to ``rpm:<key id>`` in ``Counters`` (a 60 s sliding window);
  the planner reads the window before choosing keys. Read-then-add, so concurrent requests may
  overshoot by the number in flight: a soft limit, as every gateway-side limit is.
* tpm: the tokens of *finished* calls are added to ``tpm:<key id>``. A call's tokens are unknown
  until it ends, so the limit is enforced on the next request after the window reached it.
* budget: the key's monthly budget figure of ``SpendControl`` (``gateway/spend.py``), which
  every attempt on the key reserves its worst case against and settles at its real cost, so the
  budget holds under concurrency (and across replicas with Redis). The planner only leaves out
  a key whose month is already spent; the reservation refuses what would overshoot.

Only keys that have a limit cost anything here; the counters are those of ``Gateway.counters``
so a Redis implementation shares them across replicas.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from byok_middleware.clock import Clock
from byok_middleware.gateway.health import TaskSet
from byok_middleware.state import Counters
from byok_middleware.storage.base import KeyStore, ProviderKeyRecord

__all__ = ["WINDOW_SECONDS", "KeyUsage", "LimitTracker", "limit_reason", "month_start"]

WINDOW_SECONDS = 60.0

KeySpend = Callable[[ProviderKeyRecord], Awaitable[Decimal]]
"""What a key spent this month (``SpendControl.key_spent``)."""


@dataclass(frozen=True, slots=True)
class KeyUsage:
    """What a key used: requests and tokens in the last minute, USD spent this month."""

    requests: int = 0
    tokens: int = 0
    spend: Decimal | None = None


def has_limits(record: ProviderKeyRecord) -> bool:
    return record.rpm is not None or record.tpm is not None or record.monthly_budget_usd is not None


def limit_reason(record: ProviderKeyRecord, usage: KeyUsage | None) -> str | None:
    """Which limit the key is at, in words that name it; None when it may take a request."""
    if usage is None:
        return None
    if record.rpm is not None and usage.requests >= record.rpm:
        return f"rpm limit reached ({usage.requests} of {record.rpm} requests in the last minute)"
    if record.tpm is not None and usage.tokens >= record.tpm:
        return f"tpm limit reached ({usage.tokens} of {record.tpm} tokens in the last minute)"
    budget = record.monthly_budget_usd
    if budget is not None and usage.spend is not None and usage.spend >= budget:
        return f"monthly budget reached (${usage.spend:f} spent of ${budget:f} this month)"
    return None


def month_start(now: datetime) -> datetime:
    """Midnight UTC on the first day of ``now``'s month."""
    utc = now.astimezone(UTC)
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class LimitTracker:
    """Reads and feeds the numbers behind per-key limits (see the module docstring)."""

    def __init__(
        self, counters: Counters, store: KeyStore, clock: Clock, *, spend: KeySpend | None = None
    ) -> None:
        self._counters = counters
        self._store = store
        self._clock = clock
        self._spend = spend
        self._tasks = TaskSet()

    def __repr__(self) -> str:
        return f"LimitTracker(counters={self._counters!r})"

    async def usage(self, records: Iterable[ProviderKeyRecord]) -> dict[str, KeyUsage]:
        """Current usage of each key that has a limit (others are left out)."""
        found: dict[str, KeyUsage] = {}
        for record in records:
            if not has_limits(record):
                continue
            requests = tokens = 0
            if record.rpm is not None:
                requests = await self._counters.total("rpm:" + record.id, WINDOW_SECONDS)
            if record.tpm is not None:
                tokens = await self._counters.total("tpm:" + record.id, WINDOW_SECONDS)
            spend = None
            if record.monthly_budget_usd is not None:
                spend = await self._month_spend(record)
            found[record.id] = KeyUsage(requests, tokens, spend)
        return found

    async def _month_spend(self, record: ProviderKeyRecord) -> Decimal:
        if self._spend is not None:
            return await self._spend(record)
        return await self._store.key_spend(record.id, month_start(self._clock()))

    async def attempted(self, record: ProviderKeyRecord | None) -> None:
        """Count one request against the key's rpm window (keys with an rpm limit only)."""
        if record is not None and record.rpm is not None:
            await self._counters.add("rpm:" + record.id, 1, WINDOW_SECONDS)

    def finished(self, record: ProviderKeyRecord | None, tokens: int, cost: Decimal | None) -> None:
        """Count a finished call's tokens (never awaits: called from the ledger path); its
        cost reaches the key's budget through the reservation's settlement."""
        if record is not None and record.tpm is not None and tokens > 0:
            self._tasks.spawn(self._add_tokens(record.id, tokens))

    async def _add_tokens(self, key_id: str, tokens: int) -> None:
        await self._counters.add("tpm:" + key_id, tokens, WINDOW_SECONDS)

    async def flush(self) -> None:
        await self._tasks.flush()

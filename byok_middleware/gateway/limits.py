"""Per-key limits: requests and tokens per minute, and a monthly budget.

``limit_reason`` is the pure check; ``LimitTracker`` gathers the numbers it needs:

* rpm: every attempt on a key adds 1 to ``rpm:<key id>`` in ``Counters`` (a 60 s sliding window);
  the planner reads the window before choosing keys. Read-then-add, so concurrent requests may
  overshoot by the number in flight: a soft limit, as every gateway-side limit is.
* tpm: the tokens of *finished* calls are added to ``tpm:<key id>``. A call's tokens are unknown
  until it ends, so the limit is enforced on the next request after the window reached it.
* budget: ``KeyStore.key_spend(key id, start of the UTC month)``, read at most once per
  ``budget_ttl`` seconds per key, plus the cost of calls finished since the read (the ledger is
  written in batches, so the read alone would lag).

Only keys that have a limit cost anything here; the counters are those of ``Gateway.counters``
so a Redis implementation shares them across replicas.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from byok_middleware.clock import Clock
from byok_middleware.gateway.health import TaskSet
from byok_middleware.state import Counters
from byok_middleware.storage.base import KeyStore, ProviderKeyRecord

__all__ = ["WINDOW_SECONDS", "KeyUsage", "LimitTracker", "limit_reason", "month_start"]

WINDOW_SECONDS = 60.0
MAX_TRACKED_KEYS = 10_000  # cached monthly spends are pruned of expired ones past this


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


@dataclass(slots=True)
class _Spend:
    month: datetime
    expires: datetime
    amount: Decimal


class LimitTracker:
    """Reads and feeds the numbers behind per-key limits (see the module docstring)."""

    def __init__(
        self, counters: Counters, store: KeyStore, clock: Clock, *, budget_ttl: float = 30.0
    ) -> None:
        self._counters = counters
        self._store = store
        self._clock = clock
        self._ttl = timedelta(seconds=budget_ttl)
        self._spend: dict[str, _Spend] = {}
        self._tasks = TaskSet()

    def __repr__(self) -> str:
        return f"LimitTracker(budgets={len(self._spend)})"

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
                spend = await self._month_spend(record.id)
            found[record.id] = KeyUsage(requests, tokens, spend)
        return found

    async def _month_spend(self, key_id: str) -> Decimal:
        now = self._clock()
        month = month_start(now)
        cached = self._spend.get(key_id)
        if cached is None or cached.month != month or cached.expires <= now:
            amount = await self._store.key_spend(key_id, month)
            cached = _Spend(month, now + self._ttl, amount)
            self._spend[key_id] = cached
            if len(self._spend) > MAX_TRACKED_KEYS:
                # Expired entries are re-read on next use anyway: keys deleted meanwhile go.
                self._spend = {k: spend for k, spend in self._spend.items() if spend.expires > now}
        return cached.amount

    async def attempted(self, record: ProviderKeyRecord | None) -> None:
        """Count one request against the key's rpm window (keys with an rpm limit only)."""
        if record is not None and record.rpm is not None:
            await self._counters.add("rpm:" + record.id, 1, WINDOW_SECONDS)

    def finished(self, record: ProviderKeyRecord | None, tokens: int, cost: Decimal | None) -> None:
        """Count a finished call's tokens and cost (never awaits: called from the ledger path)."""
        if record is None:
            return
        if record.tpm is not None and tokens > 0:
            self._tasks.spawn(self._add_tokens(record.id, tokens))
        cached = self._spend.get(record.id)
        if cost is not None and cached is not None:
            cached.amount += cost

    async def _add_tokens(self, key_id: str, tokens: int) -> None:
        await self._counters.add("tpm:" + key_id, tokens, WINDOW_SECONDS)

    async def flush(self) -> None:
        await self._tasks.flush()

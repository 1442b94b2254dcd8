"""``budget.threshold`` events: a budget reached 80% or 100% of its limit.

``SpendControl`` reports two moments. A budget refused a call: for that call the budget is spent,
so 100% is announced at once (reservations can keep the figure itself just under the limit
forever). A served call settled with little left on its tightest budget: each limited line's
figure is then read off the request path and 80% / 100% announced when reached. Each (line,
period, threshold) is announced once per process; a line's key names its period, so the next
day or month announces afresh. With N replicas an owner may hear a threshold up to N times.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from byok_middleware.gateway.health import TaskSet
from byok_middleware.telemetry.observer import KeyEvent

if TYPE_CHECKING:
    from byok_middleware.clock import Clock
    from byok_middleware.gateway.budgets import Line, Refusal
    from byok_middleware.gateway.calls import Call
    from byok_middleware.gateway.observing import Telemetry
    from byok_middleware.gateway.spend import SpendControl

__all__ = ["THRESHOLDS", "BudgetAlerts"]

THRESHOLDS = (1.0, 0.8)  # highest first: reaching 100% announces it, not 80% too
_NEAR = Decimal("0.2")  # 1 - the lowest threshold: closer than this to a limit, read the figures
_MAX_ANNOUNCED = 100_000


class BudgetAlerts:
    """Announces budget thresholds to the telemetry (webhooks, metrics, logs)."""

    def __init__(self, spend: SpendControl, telemetry: Telemetry, clock: Clock) -> None:
        self._spend = spend
        self._telemetry = telemetry
        self._clock = clock
        self._announced: set[tuple[str, float]] = set()
        self._tasks = TaskSet()

    def __repr__(self) -> str:
        return f"BudgetAlerts(announced={len(self._announced)})"

    def refused(self, call: Call, refusal: Refusal) -> None:
        """A budget could not cover a call: it is spent (100%)."""
        line = refusal.line
        if line.limit is None:
            return
        spent = line.limit - max(refusal.remaining, Decimal(0))
        self._announce(call, line, 1.0, spent)

    def settled(self, call: Call, remaining: Decimal, lines: Sequence[Line]) -> None:
        """A call settled on ``lines`` (those it reserved on) and its tightest budget has
        ``remaining`` left: check the lines when one may have reached a threshold (never
        awaits)."""
        limited = [line for line in lines if line.limit]
        if not limited or remaining > _NEAR * max(line.limit or 0 for line in limited):
            return  # every line has more than 20% of its limit left
        self._tasks.spawn(self._check(call, limited))

    async def _check(self, call: Call, lines: list[Line]) -> None:
        for line in lines:
            spent, _ = await self._spend.backend.standing(line, self._spend.seed)
            limit = line.limit or Decimal(0)
            for threshold in THRESHOLDS:
                if spent >= limit * Decimal(str(threshold)):
                    self._announce(call, line, threshold, spent)
                    break

    def _announce(self, call: Call, line: Line, threshold: float, spent: Decimal) -> None:
        marker = (line.key, threshold)
        if marker in self._announced:
            return
        if len(self._announced) >= _MAX_ANNOUNCED:
            self._announced.clear()  # bounded; at worst a threshold is announced twice
        self._announced.add(marker)
        if threshold == 1.0:
            self._announced.add((line.key, 0.8))  # reaching the limit says 80% too
        event = KeyEvent(
            "budget.threshold",
            call.tenant_id,
            provider=call.provider,
            key_id=line.owner if line.kind == "key" else None,
            reason=f"{line.label} reached {threshold:.0%}",
            threshold=threshold,
            budget_usd=line.limit,
            spent_usd=spent,
        )
        self._telemetry.key_event(event)

    async def flush(self) -> None:
        """Wait for the figure reads in flight (at shutdown)."""
        await self._tasks.flush()

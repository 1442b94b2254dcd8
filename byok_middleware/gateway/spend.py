"""Spend control for one gateway: tenant policies (cached), budget lines, reserve and settle.

``Failover`` asks, before each attempt, ``refusal`` (may this candidate serve at all under the
tenant's policy?) and ``admit`` (reserve the worst case on every budget line that applies; may
lower the output limit when the policy says ``clamp_max_tokens``). ``Gateway.record`` calls
``settle`` with the real cost. Policies are read once and cached; the invalidation bus drops a
tenant's copy on every replica when an operator changes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Literal

from byok_middleware.clock import Clock
from byok_middleware.errors import InvalidRequest
from byok_middleware.gateway.budget_alerts import BudgetAlerts
from byok_middleware.gateway.budgets import (
    HOLD_TTL,
    UNSEEDED,
    BudgetBackend,
    BudgetExceeded,
    Heartbeat,
    Hold,
    Line,
    MemoryBudgets,
    Refusal,
    period_window,
)
from byok_middleware.gateway.calls import Call, Candidate
from byok_middleware.gateway.health import TaskSet
from byok_middleware.gateway.ledger import Ledger
from byok_middleware.gateway.policy import (
    WorstCase,
    clamp_body,
    unpriced_blocked,
    worst_case,
)
from byok_middleware.pricing import PRICE_TABLE, GenaiPrices, PriceSource, Usage
from byok_middleware.storage.base import KeyStore, ProviderKeyRecord, TenantPolicy

__all__ = [
    "MIN_CLAMPED_OUTPUT",
    "PRICE_TABLE",
    "SpendControl",
    "Standing",
    "UnpricedModel",
    "cost_source",
]

logger = logging.getLogger("byok_middleware.gateway")

Content = bytes | AsyncIterable[bytes]  # an upstream body, as ``BuildRequest`` makes it
MIN_CLAMPED_OUTPUT = 16  # fewer output tokens than this is no answer: refuse instead
_CENT = Decimal("0.000001")
_MAX_CACHED = 100_000  # tenants' and keys' cached lines (cleared past this many)


def _within(line: Line, now: datetime) -> bool:
    """Whether ``now`` falls in ``line``'s period (a cached line of a past period is stale)."""
    return line.start <= now < line.reset


class UnpricedModel(InvalidRequest):
    """400: the model has no known price and the tenant's policy blocks unpriced models."""

    default_code = "unpriced_model"


def cost_source(prices: PriceSource, provider: str, model: str, cost: Decimal | None) -> str:
    """``unpriced`` (no price known), ``operator`` (the operator's ``extra_prices`` or a price
    source of its own) or ``price_table`` (genai-prices' table, ``PRICE_TABLE`` names its
    version)."""
    if cost is None:
        return "unpriced"
    if not isinstance(prices, GenaiPrices) or prices.is_operator_price(provider, model):
        return "operator"
    return "price_table"


@dataclass(frozen=True, slots=True)
class Standing:
    """A tenant's figures this period, for the operator."""

    period_start: datetime
    resets_at: datetime
    spent_usd: Decimal
    platform_spent_usd: Decimal
    reserved_usd: Decimal


@dataclass(slots=True)
class _Cached:
    policy: TenantPolicy | None
    expires: float


@dataclass(frozen=True, slots=True)
class _TenantLines:
    """A tenant's lines under one policy object in one period (reused until either changes)."""

    policy: TenantPolicy
    own: tuple[Line]  # paid with one of the tenant's keys: its tenant line
    platform: tuple[Line, Line]  # paid with the platform key: the tenant and platform lines


class SpendControl:
    """Policies and budgets of every tenant, for the engine's pipeline."""

    def __init__(
        self,
        store: KeyStore,
        ledger: Ledger,
        prices: PriceSource,
        clock: Clock,
        *,
        backend: BudgetBackend | None = None,
        policy_ttl: float = 30.0,
        hold_ttl: float = HOLD_TTL,
    ) -> None:
        self._store = store
        self._ledger = ledger
        self._prices = prices
        self._clock = clock
        self.backend: BudgetBackend = backend if backend is not None else MemoryBudgets()
        self._memory = self.backend if isinstance(self.backend, MemoryBudgets) else None
        self._policies: dict[str, _Cached] = {}
        # Budget lines, built once per (policy read, period) rather than per call.
        self._tenant_lines: dict[str, _TenantLines] = {}
        self._key_lines: dict[str, Line] = {}
        self._policy_ttl = policy_ttl
        self._heartbeat = Heartbeat(self.backend, hold_ttl / 3)
        self._tasks = TaskSet()
        self.alerts: BudgetAlerts | None = None  # budget.threshold events (set by Gateway)

    def __repr__(self) -> str:
        return f"SpendControl(backend={self.backend!r}, policies={len(self._policies)})"

    def start(self) -> None:
        self._heartbeat.start()

    async def close(self) -> None:
        await self._tasks.flush()
        await self._heartbeat.close()
        await self.backend.close()

    # Policies -------------------------------------------------------------------------------
    def cached_policy(self, tenant_id: str) -> TenantPolicy | Literal[False] | None:
        """The cached policy without awaiting; False when it must be read (``policy``)."""
        cached = self._policies.get(tenant_id)
        if cached is not None and cached.expires > time.monotonic():
            return cached.policy
        return False

    async def policy(self, tenant_id: str) -> TenantPolicy | None:
        """The tenant's policy (cached; a database read at most once per ``policy_ttl``)."""
        cached = self._policies.get(tenant_id)
        now = time.monotonic()
        if cached is not None and cached.expires > now:
            return cached.policy
        found = await self._store.get_policy(tenant_id)
        if len(self._policies) >= 100_000:
            self._policies.clear()  # tenant ids come from identify(): bounded
        self._policies[tenant_id] = _Cached(found, now + self._policy_ttl)
        return found

    def forget(self, tenant_id: str | None = None) -> None:
        """Drop cached policies (one tenant's, or all): the bus calls this on every change."""
        if tenant_id is None:
            self._policies.clear()
            self._tenant_lines.clear()
        else:
            self._policies.pop(tenant_id, None)
            self._tenant_lines.pop(tenant_id, None)

    # Budget lines ---------------------------------------------------------------------------
    def lines(
        self, policy: TenantPolicy | None, tenant_id: str, candidate: Candidate, now: datetime
    ) -> tuple[Line, ...]:
        """Every budget line of ``candidate`` paying for the tenant's call. A tenant with a
        policy always has its tenant line (and its platform line, for the platform key), limit
        or not, so the figures the operator reads stay current whatever the limits."""
        found: tuple[Line, ...] = ()
        record = candidate.record
        if policy is not None:
            mine = self._tenant_lines.get(tenant_id)
            # The same policy object (a re-read makes a new one) and the same period.
            if mine is None or mine.policy is not policy or not _within(mine.own[0], now):
                mine = self._tenant_lines_of(policy, tenant_id, now)
            found = mine.own if record is not None else mine.platform
        if record is not None and record.monthly_budget_usd is not None:
            found = (*found, self._key_line(record, now))
        return found

    def _key_line(self, record: ProviderKeyRecord, now: datetime) -> Line:
        """The key's monthly line, kept while its budget and month stay the same."""
        line = self._key_lines.get(record.id)
        if line is None or line.limit != record.monthly_budget_usd or not _within(line, now):
            start, reset = period_window("month", now)
            line = Line("key", record.id, record.monthly_budget_usd, "month", start, reset)
            if len(self._key_lines) >= _MAX_CACHED:
                self._key_lines.clear()
            self._key_lines[record.id] = line
        return line

    def _tenant_lines_of(self, policy: TenantPolicy, tenant_id: str, now: datetime) -> _TenantLines:
        period = policy.budget_period
        start, reset = period_window(period, now)
        tenant = Line("tenant", tenant_id, policy.budget_usd, period, start, reset)
        platform = Line("platform", tenant_id, policy.platform_budget_usd, period, start, reset)
        mine = _TenantLines(policy, (tenant,), (tenant, platform))
        if len(self._tenant_lines) >= _MAX_CACHED:
            self._tenant_lines.clear()  # tenant ids come from identify(): bounded
        self._tenant_lines[tenant_id] = mine
        return mine

    async def key_spent(self, record: ProviderKeyRecord) -> Decimal:
        """What the key spent this month (its budget figure), for the planner and dry runs."""
        spent, _ = await self.backend.standing(self._key_line(record, self._clock()), self.seed)
        return spent

    async def seed(self, line: Line) -> Decimal:
        """A figure's starting spend: the ledger's, once this process's queued rows are in."""
        await self._ledger.flush()
        if line.kind == "key":
            return await self._store.key_spend(line.owner, line.start)
        total, platform = await self._store.spend_since(line.owner, line.start)
        return platform if line.kind == "platform" else total

    # The request path -----------------------------------------------------------------------
    def _price(self, call: Call, usage: Usage, now: datetime) -> Decimal | None:
        return self._prices.cost(call.provider, call.model, usage, when=now)

    async def admit(
        self, call: Call, candidate: Candidate, content: Content, policy: TenantPolicy | None
    ) -> Content:
        """Reserve the worst case of sending ``content`` with ``candidate`` on every budget line
        that applies; return the body to send (its output limit lowered when clamped).

        Raises ``BudgetExceeded`` (429) when a line cannot cover it, ``UnpricedModel`` (400)
        when the model has no price and the policy blocks unpriced models.
        """
        record = candidate.record
        if call.endpoint == "/models" or (
            policy is None and (record is None or record.monthly_budget_usd is None)
        ):
            # Listing models is free; without a policy or a key budget no line applies and no
            # price is needed (the most common call: no clock read, no lines built).
            return content
        now = self._clock()
        lines = self.lines(policy, call.tenant_id, candidate, now)
        limited = False
        for line in lines:  # a loop: cheaper than any() over a generator, once per call
            if line.limit is not None:
                limited = True
                break
        amount = Decimal(0)
        estimate: WorstCase | None = None
        if limited or (policy is not None and policy.unpriced == "block"):
            estimate = worst_case(call.endpoint, content, call.provider, call.model)
            cost = self._price(call, estimate.usage, now)
            if cost is None and unpriced_blocked(policy, limited):
                setting = policy.unpriced if policy and policy.unpriced else "block (the default)"
                raise UnpricedModel(
                    f"the gateway cannot price {call.provider}/{call.model} and the tenant's "
                    f"policy 'unpriced' is {setting} while a budget applies; choose a priced "
                    "model or set unpriced to allow",
                    param="model",
                )
            if cost is not None and limited:
                amount = cost.quantize(_CENT, rounding=ROUND_CEILING)
        if not lines:
            return content
        hold = Hold(lines, amount)
        outcome = await self._reserve(hold, lines)
        if isinstance(outcome, Refusal):
            clamp = policy is not None and policy.clamp_max_tokens
            if (
                not clamp
                or estimate is None
                or not isinstance(content, bytes)
                or (estimate.output == 0)
            ):
                raise self._refused(call, outcome, amount)
            content, hold = await self._clamped(call, content, estimate, lines, outcome, now)
        else:
            hold.remaining = outcome
        call.hold = hold
        self._heartbeat.track(hold)
        return content

    async def _clamped(
        self,
        call: Call,
        content: bytes,
        estimate: WorstCase,
        lines: Sequence[Line],
        refusal: Refusal,
        now: datetime,
    ) -> tuple[bytes, Hold]:
        """Reserve with the output limit lowered to what the tightest line can pay for."""
        tokens = self._fitting_output(call, estimate, refusal.remaining, now)
        if tokens < MIN_CLAMPED_OUTPUT:
            raise self._refused(call, refusal, self._cost_of(call, estimate, estimate.output, now))
        amount = self._cost_of(call, estimate, tokens, now)
        try:
            clamped = clamp_body(content, estimate.field, call.provider, tokens)
        except ValueError:  # not a JSON object (never so when the gateway built it)
            raise self._refused(call, refusal, amount) from None
        hold = Hold(lines, amount)
        outcome = await self._reserve(hold, lines)
        if isinstance(outcome, Refusal):  # another call took what was left meanwhile
            raise self._refused(call, outcome, amount)
        hold.remaining = outcome
        hold.clamped = tokens
        return clamped, hold

    async def _reserve(self, hold: Hold, lines: Sequence[Line]) -> Refusal | Decimal | None:
        if self._memory is not None:
            # In process with every figure seeded (all but a period's first calls): no await.
            outcome = self._memory.reserve_now(hold, lines)
            if outcome is not UNSEEDED:
                return outcome
        return await self.backend.reserve(hold, lines, self.seed)

    def _cost_of(self, call: Call, estimate: WorstCase, output: int, now: datetime) -> Decimal:
        usage = Usage(
            prompt_tokens=estimate.usage.prompt_tokens,
            completion_tokens=output * estimate.choices,
        )
        cost = self._price(call, usage, now) or Decimal(0)
        return cost.quantize(_CENT, rounding=ROUND_CEILING)

    def _fitting_output(
        self, call: Call, estimate: WorstCase, remaining: Decimal, now: datetime
    ) -> int:
        """The largest output limit whose worst case fits ``remaining`` (binary search: prices
        may be tiered, but never fall as the output grows)."""
        low, high = 0, estimate.output
        if self._cost_of(call, estimate, 0, now) > remaining:
            return 0
        while low < high:
            middle = (low + high + 1) // 2
            if self._cost_of(call, estimate, middle, now) <= remaining:
                low = middle
            else:
                high = middle - 1
        return low

    def _refused(self, call: Call, refusal: Refusal, needed: Decimal) -> BudgetExceeded:
        if self.alerts is not None:
            self.alerts.refused(call, refusal)
        return BudgetExceeded.of(refusal, needed)

    def release(self, call: Call) -> None:
        """Free the call's reservation: the attempt failed, the provider bills nothing."""
        self.settle(call, Decimal(0))

    def settle(self, call: Call, cost: Decimal | None) -> None:
        """Settle the call's reservation at ``cost`` (never awaits). An unknown cost of a call
        that was served settles at the reserved worst case: a budget never under-counts."""
        hold = call.hold
        if hold is None or hold.settled:
            return
        hold.settled = True
        self._heartbeat.forget(hold)
        actual = hold.amount if cost is None else cost
        if hold.remaining is not None:
            hold.remaining += hold.amount - actual
            if self.alerts is not None and actual:
                self.alerts.settled(call, hold.remaining, hold.lines)
        if self._memory is not None:
            self._memory.settle_now(hold, actual)
        else:
            self._tasks.spawn(self._settle(hold, actual))

    async def _settle(self, hold: Hold, cost: Decimal) -> None:
        try:
            await self.backend.settle(hold, cost)
        except Exception:  # the hold lapses after its TTL; the ledger keeps the truth
            logger.warning("could not settle a budget reservation", exc_info=True)

    async def flush(self) -> None:
        """Wait for settlements in flight (Redis) to land."""
        await self._tasks.flush()

    @staticmethod
    def headers(call: Call) -> list[tuple[bytes, bytes]]:
        """The response headers of a call under a budget: ``x-byok-budget-remaining-usd`` (after
        settling; for a stream, at its start with the reservation deducted) and
        ``x-byok-max-tokens-clamped`` when the output limit was lowered."""
        hold = call.hold
        if hold is None:
            return []
        found: list[tuple[bytes, bytes]] = []
        if hold.remaining is not None:
            left = max(hold.remaining, Decimal(0)).quantize(_CENT)
            found.append((b"x-byok-budget-remaining-usd", f"{left:f}".encode()))
        if hold.clamped is not None:
            found.append((b"x-byok-max-tokens-clamped", str(hold.clamped).encode()))
        return found

    # The operator's view --------------------------------------------------------------------
    async def standing(self, tenant_id: str, policy: TenantPolicy | None) -> Standing:
        """This period's spend (total, platform) and what calls in flight hold. Figures a
        policy keeps are read live; without a policy the ledger is read."""
        period = policy.budget_period if policy is not None else "month"
        start, reset = period_window(period, self._clock())
        if policy is None:
            await self._ledger.flush()
            total, platform = await self._store.spend_since(tenant_id, start)
            return Standing(start, reset, total, platform, Decimal(0))
        tenant = Line("tenant", tenant_id, None, period, start, reset)
        spent, reserved = await self.backend.standing(tenant, self.seed)
        platform_line = Line("platform", tenant_id, None, period, start, reset)
        platform, _ = await self.backend.standing(platform_line, self.seed)
        return Standing(start, reset, spent, platform, reserved)

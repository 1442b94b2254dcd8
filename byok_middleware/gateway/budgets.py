"""Budgets that hold under concurrency: reserve the worst case first, settle at the real cost.

A budget line is one limit in one period: a tenant's total, its platform-only spend, or one
provider key's month. Its *figure* is what was spent (seeded once from the ledger, then moved by
settlements) and what is reserved by calls in flight. A call is admitted only if, for every line
that applies, ``spent + reserved + worst case <= limit``; the check and the reservation are one
atomic step (one event-loop step in process; one Lua script in Redis), so however many requests
race, the lines never overshoot by what was reserved. When the call ends, ``settle`` removes the
reservation and adds the real cost.

Reservations carry an expiry (``hold_ttl``, default 60 s) that a heartbeat of their own process
renews while the call is alive. A process that dies stops renewing: its reservations lapse
within ``hold_ttl``. A hold whose call object is dropped without a settlement (a bug path, a
cancelled task) stops being renewed too, as the heartbeat only knows live holds (weakly).

``MemoryBudgets`` keeps figures in this process (one replica); ``RedisBudgets``
(``byok_middleware.shared.redis_budgets``) keeps them in Redis for every replica. Both seed a
missing figure from the ledger (``KeyStore.spend_since`` / ``key_spend``), the truth figures are
rebuilt from.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import os
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import ClassVar, Protocol

from byok_middleware.errors import BYOKError

__all__ = [
    "UNSEEDED",
    "BudgetBackend",
    "BudgetExceeded",
    "BudgetUnavailable",
    "Hold",
    "Line",
    "MemoryBudgets",
    "Refusal",
    "Seed",
    "Unseeded",
    "period_window",
]

HOLD_TTL = 60.0  # seconds a reservation outlives the last heartbeat of its process
MAX_FIGURES = 100_000  # figures of past periods are pruned past this many


# The last window computed per period type: every call of a period falls in the same one, so
# it is reused until ``now`` leaves it (period rolled over, or a test's clock moved).
_WINDOWS: dict[str, tuple[datetime, datetime]] = {}


def period_window(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar ``day`` or ``month`` holding ``now``: (start, start of the next)."""
    window = _WINDOWS.get(period)
    if window is not None and now.tzinfo is not None and window[0] <= now < window[1]:
        return window
    window = _period_window(period, now)
    _WINDOWS[period] = window
    return window


def _period_window(period: str, now: datetime) -> tuple[datetime, datetime]:
    utc = now.astimezone(UTC)
    day = utc.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period != "month":
        raise ValueError("budget_period must be day or month")
    start = day.replace(day=1)
    following = (start + timedelta(days=32)).replace(day=1)
    return start, following


@dataclass(frozen=True, slots=True)
class Line:
    """One budget that applies to a call: ``kind`` is tenant, platform or key; ``owner`` the
    tenant id (tenant, platform) or the key id (key)."""

    kind: str
    owner: str
    limit: Decimal | None  # None: the figure is kept (the operator's view) but never refuses
    period: str
    start: datetime
    reset: datetime
    # The figure's name: one per owner, kind, period type and period. Formatted once here, as
    # the request path reads it several times per call.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = f"{self.kind}:{self.owner}:{self.period}:{self.start.date().isoformat()}"
        object.__setattr__(self, "key", key)

    @property
    def label(self) -> str:
        if self.kind == "key":
            return f"the monthly budget of key {self.owner}"
        if self.kind == "platform":
            return f"the tenant's platform budget (per {self.period})"
        return f"the tenant's budget (per {self.period})"


@dataclass(frozen=True, slots=True)
class Refusal:
    """The line a reservation did not fit, and what it had left."""

    line: Line
    remaining: Decimal


class _HoldIds:
    """Hold ids unique across replicas without drawing randomness per call: a random prefix per
    process (drawn again in a forked child, which would otherwise share its parent's) and a
    counter. Redis keeps every replica's holds side by side, so ids must not collide there."""

    def __init__(self) -> None:
        self._renew()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


_hold_ids = _HoldIds()


class Hold:
    """One call's reservation: the figures it holds ``amount`` on, until settled.

    ``lines`` are the budget lines of the call (kept for the settlement's threshold check, so
    they are built once per call)."""

    __slots__ = (
        "__weakref__",
        "amount",
        "clamped",
        "id",
        "keys",
        "lines",
        "remaining",
        "settled",
    )

    def __init__(self, lines: Sequence[Line], amount: Decimal) -> None:
        self.id = _hold_ids.next()
        self.lines = tuple(lines)
        self.keys = tuple([line.key for line in self.lines])
        self.amount = amount
        # What the tightest limited line had left once this hold was taken (the response
        # header); None when no line has a limit.
        self.remaining: Decimal | None = None
        self.clamped: int | None = None  # the output limit the request was lowered to, if any
        self.settled = False

    def __repr__(self) -> str:
        return f"Hold(id={self.id!r}, amount={self.amount}, settled={self.settled})"


Seed = Callable[[Line], Awaitable[Decimal]]
"""What a line's owner spent in its period so far, read from the ledger (a figure's start)."""


class BudgetExceeded(BYOKError):
    """429: a budget cannot cover the call's worst case."""

    status_code: ClassVar[int] = 429
    error_type: ClassVar[str] = "insufficient_quota"
    default_code: ClassVar[str | None] = "budget_exceeded"

    @classmethod
    def of(cls, refusal: Refusal, needed: Decimal) -> BudgetExceeded:
        line = refusal.line
        left = max(refusal.remaining, Decimal(0))
        limit = line.limit if line.limit is not None else Decimal(0)
        return cls(
            f"budget exceeded: {line.label} is ${_usd(limit)}, ${_usd(left)} remains and "
            f"this request may cost up to ${_usd(needed)}; it resets at "
            f"{line.reset:%Y-%m-%dT%H:%M:%SZ}",
            param=None,
        )


class BudgetUnavailable(BYOKError):
    """503: the shared budget figures cannot be reached, so no budgeted call is admitted."""

    status_code: ClassVar[int] = 503
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = "budget_unavailable"


def _usd(amount: Decimal) -> str:
    """Dollars to 6 places, without trailing zeros past the cents."""
    text = f"{amount.quantize(Decimal('0.000001')):f}"
    whole, _, cents = text.partition(".")
    cents = cents.rstrip("0").ljust(2, "0")
    return f"{whole}.{cents}"


class BudgetBackend(Protocol):
    """Where figures live. ``reserve`` and ``settle`` are each atomic over all their lines."""

    async def reserve(
        self, hold: Hold, lines: Sequence[Line], seed: Seed
    ) -> Refusal | Decimal | None:
        """Hold ``hold.amount`` on every line, or on none: the first line it does not fit
        (a ``Refusal``), else the least a limited line has left after the hold (None: no line
        has a limit)."""

    async def settle(self, hold: Hold, cost: Decimal) -> None:
        """Drop the hold and add ``cost`` to the spend of each of its figures."""

    async def renew(self, holds: Sequence[Hold]) -> None:
        """Push back the expiry of live holds (the heartbeat)."""

    async def standing(self, line: Line, seed: Seed) -> tuple[Decimal, Decimal]:
        """(spent, reserved) of a line now."""

    async def close(self) -> None: ...


class Unseeded(enum.Enum):
    """``MemoryBudgets.reserve_now``'s answer when a figure must be seeded first."""

    UNSEEDED = "unseeded"


UNSEEDED = Unseeded.UNSEEDED


@dataclass(slots=True)
class _Figure:
    spent: Decimal
    reset: datetime
    reserved: Decimal = Decimal(0)
    holds: dict[str, tuple[Decimal, float]] = field(default_factory=dict)  # id -> amount, expiry
    next_expiry: float = float("inf")

    def purge(self, now: float) -> None:
        if now < self.next_expiry:
            return
        for hold_id, (amount, expires) in list(self.holds.items()):
            if expires <= now:
                del self.holds[hold_id]
                self.reserved -= amount
        self.next_expiry = min((e for _, e in self.holds.values()), default=float("inf"))


class MemoryBudgets:
    """Figures in this process: the single-replica backend (no I/O after a figure's seed)."""

    def __init__(
        self, *, hold_ttl: float = HOLD_TTL, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = hold_ttl
        self._now = monotonic
        self._figures: dict[str, _Figure] = {}
        self._seeding: dict[str, asyncio.Future[None]] = {}

    def __repr__(self) -> str:
        return f"MemoryBudgets(figures={len(self._figures)})"

    async def _figure(self, line: Line, seed: Seed) -> _Figure:
        figure = self._figures.get(line.key)
        while figure is None:
            pending = self._seeding.get(line.key)
            if pending is not None:
                # One seed per figure: the others wait for it rather than read the ledger too.
                await asyncio.shield(pending)
            else:
                done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._seeding[line.key] = done
                try:
                    spent = await seed(line)
                    if line.key not in self._figures:
                        self._prune(line.start)
                        self._figures[line.key] = _Figure(spent, line.reset)
                finally:
                    del self._seeding[line.key]
                    done.set_result(None)
            figure = self._figures.get(line.key)
        return figure

    def _prune(self, now: datetime) -> None:
        if len(self._figures) >= MAX_FIGURES:
            # A figure without holds is re-seeded from the ledger when next needed (flushed
            # first), so dropping it loses nothing: past periods and idle owners go.
            self._figures = {k: f for k, f in self._figures.items() if f.reset > now and f.holds}

    async def reserve(
        self, hold: Hold, lines: Sequence[Line], seed: Seed
    ) -> Refusal | Decimal | None:
        figures = [await self._figure(line, seed) for line in lines]
        return self._take(hold, lines, figures)

    def reserve_now(self, hold: Hold, lines: Sequence[Line]) -> Refusal | Decimal | Unseeded | None:
        """``reserve`` without awaiting when every line's figure is seeded; ``UNSEEDED`` when
        one is not (``reserve`` seeds it)."""
        figures: list[_Figure] = []
        for line in lines:
            figure = self._figures.get(line.key)
            if figure is None:
                return UNSEEDED
            figures.append(figure)
        return self._take(hold, lines, figures)

    def _take(
        self, hold: Hold, lines: Sequence[Line], figures: Sequence[_Figure]
    ) -> Refusal | Decimal | None:
        """Check every line and hold on all of them, or refuse: no await, so one atomic step."""
        now = self._now()
        least: Decimal | None = None
        for line, figure in zip(lines, figures, strict=True):
            figure.purge(now)
            if line.limit is None:
                continue
            left = line.limit - figure.spent - figure.reserved
            if hold.amount > left:
                return Refusal(line, left)
            least = left if least is None else min(least, left)
        expires = now + self._ttl
        for figure in figures:
            figure.holds[hold.id] = (hold.amount, expires)
            figure.reserved += hold.amount
            figure.next_expiry = min(figure.next_expiry, expires)
        return None if least is None else least - hold.amount

    def settle_now(self, hold: Hold, cost: Decimal) -> None:
        """``settle`` without awaiting (the engine's ``record`` never awaits)."""
        for key in hold.keys:
            figure = self._figures.get(key)
            if figure is None:
                continue
            held = figure.holds.pop(hold.id, None)
            if held is not None:
                figure.reserved -= held[0]
            figure.spent += cost

    async def settle(self, hold: Hold, cost: Decimal) -> None:
        self.settle_now(hold, cost)

    async def renew(self, holds: Sequence[Hold]) -> None:
        expires = self._now() + self._ttl
        for hold in holds:
            for key in hold.keys:
                figure = self._figures.get(key)
                if figure is not None and hold.id in figure.holds:
                    figure.holds[hold.id] = (figure.holds[hold.id][0], expires)

    async def standing(self, line: Line, seed: Seed) -> tuple[Decimal, Decimal]:
        figure = await self._figure(line, seed)
        figure.purge(self._now())
        return figure.spent, figure.reserved

    async def close(self) -> None:
        self._figures.clear()


class Heartbeat:
    """Renews the live holds of this process every ``interval`` seconds (a third of the TTL)."""

    def __init__(self, backend: BudgetBackend, interval: float) -> None:
        self._backend = backend
        self._interval = interval
        # Weak references by hold id (cheaper per call than a WeakSet, whose add and discard run
        # in Python): a hold dropped unsettled is dead here and is let go at the next beat.
        self._live: dict[str, weakref.ref[Hold]] = {}
        self._task: asyncio.Task[None] | None = None

    def track(self, hold: Hold) -> None:
        self._live[hold.id] = weakref.ref(hold)

    def forget(self, hold: Hold) -> None:
        self._live.pop(hold.id, None)

    def live(self) -> list[Hold]:
        """The holds to renew: tracked, alive and not settled (the others are let go)."""
        found: list[Hold] = []
        for hold_id, ref in list(self._live.items()):
            hold = ref()
            if hold is None or hold.settled:
                self._live.pop(hold_id, None)
            else:
                found.append(hold)
        return found

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            live = self.live()
            if live:
                with contextlib.suppress(BudgetUnavailable):
                    await self._backend.renew(live)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

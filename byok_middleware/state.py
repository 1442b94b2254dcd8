"""State that several replicas must agree on, behind two small interfaces.

``InvalidationBus`` tells every replica that a tenant's keys changed (rotation, deletion, a key
marked invalid or cooling down), so each drops its cached copy; ``Counters`` count requests and
tokens per key in sliding windows for per-key limits. The in-process implementations here serve a
single replica; ``byok_middleware.shared`` provides Redis-backed ones for many.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

__all__ = ["Counters", "InvalidationBus", "LocalBus", "MemoryCounters"]

Listener = Callable[[str], Awaitable[None] | None]


@runtime_checkable
class InvalidationBus(Protocol):
    """Broadcast "tenant X's keys changed" to every replica (this one included)."""

    async def start(self, listener: Listener) -> None:
        """Begin delivering published tenant ids to ``listener``."""

    async def publish(self, tenant_id: str) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class Counters(Protocol):
    """Sliding-window sums per name (e.g. ``rpm:<key id>``), shared by all replicas."""

    async def add(self, name: str, amount: int, window: float) -> int:
        """Add ``amount`` now and return the window's sum including it."""

    async def total(self, name: str, window: float) -> int:
        """The sum over the last ``window`` seconds."""

    async def close(self) -> None: ...


class LocalBus:
    """The single-process bus: a publish is delivered to this process's listener only."""

    def __init__(self) -> None:
        self._listener: Listener | None = None

    def __repr__(self) -> str:
        return "LocalBus()"

    async def start(self, listener: Listener) -> None:
        self._listener = listener

    async def publish(self, tenant_id: str) -> None:
        if self._listener is not None:
            result = self._listener(tenant_id)
            if result is not None:
                await result

    async def close(self) -> None:
        self._listener = None


class MemoryCounters:
    """In-process sliding windows: a deque of (time, amount) per name, pruned on access."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._now = monotonic
        self._events: defaultdict[str, deque[tuple[float, int]]] = defaultdict(deque)

    def __repr__(self) -> str:
        return f"MemoryCounters(names={len(self._events)})"

    def _window(self, name: str, window: float) -> deque[tuple[float, int]]:
        events = self._events[name]
        horizon = self._now() - window
        while events and events[0][0] <= horizon:
            events.popleft()
        return events

    async def add(self, name: str, amount: int, window: float) -> int:
        events = self._window(name, window)
        events.append((self._now(), amount))
        return sum(amount for _, amount in events)

    async def total(self, name: str, window: float) -> int:
        return sum(amount for _, amount in self._window(name, window))

    async def close(self) -> None:
        self._events.clear()

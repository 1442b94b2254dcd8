"""One call per key at a time: callers that arrive while it runs await the same result.

The key caches use it at expiry (``gateway/keys.py``, ``gateway/tenants.py``): without it every
request in flight would query the store on its own, each waiting behind the ledger's writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["SharedCalls"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedCalls(Generic[K, V]):
    """Runs ``call()`` once per ``key`` at a time. Shielded: a caller that is cancelled (its
    client left) does not cancel the call for the others."""

    __slots__ = ("_running",)

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[V]] = {}

    def __repr__(self) -> str:
        return f"SharedCalls(running={len(self._running)})"

    async def run(self, key: K, call: Callable[[], Coroutine[Any, Any, V]]) -> V:
        task = self._running.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(call())
            self._running[key] = task
            task.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(task)

    async def aclose(self) -> None:
        """Cancel the calls still running."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

"""Write-behind: answers this process stored, written to the backend in batches.

``ResponseCache.store`` seals an answer and hands the row to :class:`PendingWrites` together with
the opened entry; a background task writes what is pending in one backend call (one SQLite
transaction, one trip to its thread) at most ``delay`` seconds later, or as soon as ``batch``
rows wait. Until its write this process serves the entry from here (``get``), so a repeated
request hits at once; other replicas see it once it is written. A write that fails is logged and
its rows are dropped: a cache may forget, it must not fail a request that was already answered.

Pending rows are bounded (``limit``: a store then waits for a write), hold the plaintext entry
only in memory and only until their write, expire with their TTL, and are never logged or shown
in a ``repr``. A tenant's clear (``drop_tenant``) waits for a write in progress, so no row of
the tenant lands after the clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from byok_middleware.cache.backend import CacheBackend, StoredEntry
from byok_middleware.cache.entry import CacheEntry

__all__ = ["BatchBackend", "Pending", "PendingWrites"]

logger = logging.getLogger("byok_middleware.cache")


@runtime_checkable
class BatchBackend(Protocol):
    """A backend that writes many entries in one call (else ``put`` is called per entry)."""

    async def put_many(self, entries: Sequence[StoredEntry], now: float) -> int: ...


@dataclass(frozen=True, slots=True, repr=False)
class Pending:
    """A sealed row waiting for its write, and the entry it holds, opened."""

    row: StoredEntry
    entry: CacheEntry

    def __repr__(self) -> str:
        return f"Pending({self.row!r})"


class PendingWrites:
    """Rows waiting to be written to ``backend``; see the module docstring."""

    def __init__(
        self,
        backend: CacheBackend,
        *,
        delay: float,
        batch: int,
        now: Callable[[], float],
        on_evicted: Callable[[int], None],
        on_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self._backend = backend
        self._delay = delay
        self._batch = batch
        self.limit = max(4 * batch, 256)
        self._now = now
        self._on_evicted = on_evicted
        self._on_failure = on_failure
        self._rows: dict[tuple[str, str], Pending] = {}
        self._lock = asyncio.Lock()  # one write at a time; a clear waits for the one running
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    def __repr__(self) -> str:
        return f"PendingWrites(rows={len(self._rows)})"

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def lock(self) -> asyncio.Lock:
        """Held while a write runs: ``drop_tenant`` and what must follow it run under it."""
        return self._lock

    def get(self, tenant_id: str, key: str, now: float) -> Pending | None:
        """The pending row of (tenant, key) while its TTL lasts."""
        pending = self._rows.get((tenant_id, key))
        return pending if pending is not None and pending.row.expires_at > now else None

    def add(self, pending: Pending) -> bool:
        """Queue a row (replacing a pending one of the same key); True when the queue is at its
        limit and the caller should wait for ``flush``."""
        row = pending.row
        self._rows.pop((row.tenant_id, row.key), None)  # the newest goes last, written last
        self._rows[(row.tenant_id, row.key)] = pending
        if len(self._rows) >= self._batch:
            self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._write_behind())
        return len(self._rows) >= self.limit

    def drop_tenant(self, tenant_id: str) -> None:
        """Forget the tenant's pending rows; call it holding ``lock``."""
        for doomed in [k for k in self._rows if k[0] == tenant_id]:
            del self._rows[doomed]

    async def flush(self) -> None:
        """Write every pending row now, in one backend call. Raises what the backend raised (the
        rows are dropped then)."""
        async with self._lock:
            batch = list(self._rows.values())
            if not batch:
                return
            rows = [pending.row for pending in batch]
            try:
                if isinstance(self._backend, BatchBackend):
                    evicted = await self._backend.put_many(rows, self._now())
                else:
                    evicted = 0
                    for row in rows:
                        evicted += await self._backend.put(row, self._now())
            finally:
                for pending in batch:
                    key = (pending.row.tenant_id, pending.row.key)
                    if self._rows.get(key) is pending:  # not replaced while it was written
                        del self._rows[key]
            self._on_evicted(evicted)

    async def _write_behind(self) -> None:
        while self._rows:
            if self._delay > 0 and len(self._rows) < self._batch:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._delay)
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - the writer must outlive one failed write
                self._failed()
                logger.warning(
                    "cache entries could not be written (%s): %s", type(exc).__name__, exc
                )

    def _failed(self) -> None:
        self.failures += 1
        self._on_failure()

    async def close(self) -> None:
        """Write what is pending (a failure is logged), then stop the writer."""
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001 - closing must finish; the rows are only a cache
            self._failed()
            logger.warning("cache entries could not be written (%s): %s", type(exc).__name__, exc)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

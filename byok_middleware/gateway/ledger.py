"""The usage ledger writer: rows are queued on the request path and written in batches off it."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from byok_middleware.storage.base import KeyStore, UsageRecord

__all__ = ["Ledger"]

logger = logging.getLogger("byok_middleware.ledger")


class Ledger:
    """Buffers ``UsageRecord`` rows and flushes them every ``interval`` seconds or ``batch`` rows.

    ``record`` never awaits, so a slow database never slows a response. ``close`` flushes what is
    left, so a graceful shutdown loses no row; a failed write is retried once per flush, then
    reported (with a row count, never row contents) and dropped.
    """

    def __init__(self, store: KeyStore, *, interval: float = 0.2, batch: int = 500) -> None:
        self._store = store
        self._interval = interval
        self._batch = batch
        self._pending: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"Ledger(pending={len(self._pending)})"

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="byok-ledger")

    def record(self, row: UsageRecord) -> None:
        self._pending.append(row)
        if self._task is None and not self._closed:
            self.start()
        if len(self._pending) >= self._batch:
            self._wake.set()

    async def flush(self) -> None:
        """Write the rows queued when the flush began, ``batch`` rows per transaction.

        Rows queued while it writes wait for the next flush: chasing them would, under steady
        traffic, turn one flush into a stream of transactions of a row or two each.
        """
        async with self._flushing:  # one at a time: each removes the rows it wrote
            await self._flush()

    async def _flush(self) -> None:
        remaining = len(self._pending)
        while remaining > 0:
            rows = self._pending[: min(self._batch, remaining)]
            for attempt in (1, 2):
                try:
                    await self._store.record_usage(rows)
                    break
                except Exception as exc:  # any store failure: retried once, then reported
                    if attempt == 2:
                        logger.exception("dropped %d usage rows after a failed write", len(rows))
                    else:
                        logger.warning("a usage write failed (%s); retrying", type(exc).__name__)
            # Removed only after the write: rows are never lost in flight (duplicates are ignored
            # by request_id, so a retried row is never counted twice).
            del self._pending[: len(rows)]
            remaining -= len(rows)

    async def _run(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    async def close(self) -> None:
        """Stop the background writer and flush every queued row."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        while self._pending:  # calls still finishing may queue rows while we write
            await self.flush()

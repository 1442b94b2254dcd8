"""The usage ledger writer: rows are cleaned, journalled and queued on the request path, and
written in batches off it. No row is lost to a bad neighbour, a store outage or a crash.

* ``record`` cleans the row (``ledger_rows.clean_row``: control characters escaped, numbers
  clamped and flagged), appends it to the local journal (one ``write``: it survives ``kill -9``
  from then on) and queues it. It never awaits.
* A flush writes ``batch`` rows per transaction. A batch the store refuses is split: the rows it
  names (``UsageBatchError.bad_rows``) go to the dead letters with the reason, the others are
  written again; when it cannot say which row, the batch is written row by row.
* A store that fails outright (connection refused, database locked) keeps every row queued and
  journalled; the writer retries with backoff (0.2 s doubling to ``MAX_BACKOFF``) until it is back.
  A row that still fails while rows around it are stored, ``_ROW_ATTEMPTS`` times, is
  dead-lettered: it is the row, not the store.
* After a flush that left nothing queued, the journal's sealed segments are deleted (compaction);
  at start-up the journal's leftovers (a crash, or a stop while the store was down) are replayed.
  Stores ignore a ``request_id`` they already have, so a replay never counts a row twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from byok_middleware.gateway.journal import Journal
from byok_middleware.gateway.ledger_rows import clean_row
from byok_middleware.storage.base import KeyStore, UsageBatchError, UsageRecord

__all__ = ["MAX_BACKOFF", "Ledger"]

logger = logging.getLogger("byok_middleware.ledger")

MAX_BACKOFF = 5.0
_ROW_ATTEMPTS = 3
# Row-by-row writes that all fail this many times in a row, none stored: the store is down.
_OUTAGE_PROBES = 3


class _StoreDown(Exception):
    """The store failed outright: keep the rows and retry later."""


class Ledger:
    """Buffers ``UsageRecord`` rows and flushes them every ``interval`` seconds or ``batch`` rows.

    ``journal`` (optional) makes queued rows survive a crash and a restart while the store is
    down; without one, rows that cannot be stored yet live in memory only and a row no store
    would take is logged (its fields, never a secret: rows hold none) at ERROR.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        interval: float = 0.2,
        batch: int = 500,
        journal: Journal | None = None,
    ) -> None:
        self._store = store
        self._interval = interval
        self._batch = batch
        self._journal = journal
        self._pending: list[UsageRecord] = []
        self._failures: dict[str, int] = {}  # request_id -> failed single-row writes
        self._backoff = 0.0
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"Ledger(pending={len(self._pending)}, journal={self._journal!r})"

    @property
    def pending(self) -> int:
        """Rows queued and not yet stored (for health checks and tests)."""
        return len(self._pending)

    def start(self) -> None:
        """Open the journal (replaying what a previous process left) and start the writer."""
        if self._journal is not None and not self._journal.is_open:
            self._pending[:0] = self._journal.open()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="byok-ledger")

    def record(self, row: UsageRecord) -> None:
        row = clean_row(row)
        if self._task is None and not self._closed:
            self.start()
        if self._journal is not None and self._journal.is_open:
            self._journal.append(row)
        self._pending.append(row)
        if len(self._pending) >= self._batch:
            self._wake.set()

    async def flush(self) -> None:
        """Write the rows queued when the flush began, ``batch`` rows per transaction.

        Rows queued while it writes wait for the next flush: chasing them would, under steady
        traffic, turn one flush into a stream of transactions of a row or two each. Returns
        early (rows kept) when the store is down.
        """
        async with self._flushing:  # one at a time: each removes the rows it resolved
            await self._flush()

    async def _flush(self) -> None:
        journal = self._journal
        if journal is not None and journal.is_open and not journal.has_sealed:
            journal.seal()  # the rows queued now are in sealed segments from here on
        taken = len(self._pending)
        kept: list[UsageRecord] = []
        for start in range(0, taken, self._batch):
            rows = self._pending[start : min(start + self._batch, taken)]
            try:
                kept += await self._write(rows)
            except _StoreDown as exc:
                # The first row goes last: if it is the row the store chokes on, rather than
                # the store being down, the next attempt probes with another one.
                rest = self._pending[start:taken]
                kept += rest[1:] + rest[:1]
                self._backoff = min(max(self._backoff * 2, self._interval), MAX_BACKOFF)
                logger.warning(
                    "the usage store is unavailable (%s); %d rows kept, retrying in %.1f s",
                    exc,
                    len(kept),
                    self._backoff,
                )
                break
        else:
            self._backoff = 0.0
        self._pending[:taken] = kept
        if journal is None or not journal.is_open:
            return
        if kept:
            # These rows may wait for the store a long time: to disk with them (see journal.py).
            await asyncio.to_thread(journal.sync)
        else:
            journal.discard_sealed()

    async def _write(self, rows: list[UsageRecord]) -> list[UsageRecord]:
        """Store ``rows``; returns those to try again later. Raises ``_StoreDown``."""
        if self._backoff and len(rows) > 1:
            # In an outage a whole batch could wait out the store's timeout: one row tells.
            kept = await self._one_by_one(rows[:1], answered=False)
            return kept + await self._write_batch(rows[1:])
        return await self._write_batch(rows)

    async def _write_batch(self, rows: list[UsageRecord]) -> list[UsageRecord]:
        try:
            await self._store.record_usage(rows)
            return []
        except UsageBatchError as exc:  # the store answered: some rows cannot be stored
            if exc.bad_rows and len(rows) > 1:
                named = set(exc.bad_rows)
                for index in sorted(named):
                    if 0 <= index < len(rows):
                        self._dead_letter(rows[index], str(exc))
                rest = [row for index, row in enumerate(rows) if index not in named]
                return await self._one_by_one(rest, answered=True)
            return await self._one_by_one(rows, answered=True)
        except Exception:  # noqa: BLE001 -- an outage or a row the store chokes on: find out
            return await self._one_by_one(rows, answered=False)

    async def _one_by_one(self, rows: list[UsageRecord], *, answered: bool) -> list[UsageRecord]:
        """Each row in its own write. A row is only blamed (counted towards the dead letters)
        when the store took or judged another row in the same pass; a failing first row with
        no such evidence, or a run of failures, means the store is down."""
        failed: list[tuple[UsageRecord, BaseException]] = []
        in_a_row = 0
        for row in rows:
            try:
                await self._store.record_usage([row])
            except UsageBatchError as exc:
                self._dead_letter(row, str(exc))  # the store says this row cannot be stored
                answered, in_a_row = True, 0
                continue
            except Exception as exc:  # noqa: BLE001 -- decided below
                in_a_row += 1
                if not answered or in_a_row >= _OUTAGE_PROBES:
                    raise _StoreDown(type(exc).__name__) from None
                failed.append((row, exc))
                continue
            answered, in_a_row = True, 0
            self._failures.pop(row.request_id, None)
        kept: list[UsageRecord] = []
        for row, error in failed:
            attempts = self._failures.get(row.request_id, 0) + 1
            if attempts >= _ROW_ATTEMPTS:
                self._failures.pop(row.request_id, None)
                self._dead_letter(row, f"{type(error).__name__}: {error}"[:300])
            else:
                self._failures[row.request_id] = attempts
                kept.append(row)
        return kept

    def _dead_letter(self, row: UsageRecord, reason: str) -> None:
        if self._journal is not None and self._journal.is_open:
            try:
                self._journal.dead_letter(row, reason)
                return
            except OSError:
                logger.exception("the dead-letter file cannot be written")
        logger.error("a ledger row cannot be stored (%s): %r", reason, row)

    async def _run(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval + self._backoff)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # the writer must outlive any surprise; rows stay queued
                logger.exception("the ledger writer failed; retrying")
                self._backoff = MAX_BACKOFF

    async def close(self, *, grace: float = 10.0) -> None:
        """Stop the background writer and flush every queued row, for at most ``grace`` seconds.

        Rows the store did not take by then stay in the journal for the next start.
        """
        self._closed = True
        self._wake.set()
        deadline = time.monotonic() + grace
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                if self._task is not None:
                    await self._task
                    self._task = None
                # Calls still finishing may queue rows while we write; a store outage ends this
                # at the grace period.
                while self._pending and time.monotonic() < deadline:
                    await self.flush()
                    if self._pending:
                        await asyncio.sleep(min(self._backoff or self._interval, 1.0))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        journal = self._journal
        if journal is not None and journal.is_open:
            if not self._pending:
                journal.seal()
                journal.discard_sealed()
            else:
                logger.warning(
                    "%d ledger rows are not stored yet; they stay in the journal %s for the "
                    "next start",
                    len(self._pending),
                    journal.directory,
                )
            journal.close()

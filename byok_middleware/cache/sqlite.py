"""The cache in the gateway's SQLite file: its own table; writes on a thread of its own.

Several processes may share the file (WAL, ``busy_timeout``): what one stores, the others hit.
The table's running totals live in a one-row table kept by triggers, so the size check on a write
reads one row, and it stays right whichever process wrote. The table name carries the entry
format's version: a new format starts a new table instead of migrating a cache.

Writes are plain functions run on the backend's single worker thread: a write of many entries is
one transaction in one hop (the statements one by one through aiosqlite took a hop each: nine
for a store), and the worker being single, they run in the order asked and never interleave.
A lookup reads on the caller's thread, through a second, read-only connection: a point read by
the unique index, which in WAL mode never waits for a writer (a hop to a thread cost more CPU
than the read itself); should it find the file busy all the same, it reads through the worker.
A hit that must mark its entry used (LRU, at most every ``touch_seconds``) does not wait for
that write either: the use times are kept in memory and written in one statement batch, at the
start of the next store's transaction (before it evicts) or ``TOUCH_DELAY`` seconds later,
whichever comes first (at once past ``TOUCH_BATCH`` of them). A hit is then a read alone; the
price is that another process sharing the file sees a use up to ``TOUCH_DELAY`` late.
Commits do not wait for the disk (``synchronous = NORMAL`` in WAL mode): a power cut may lose
the last entries, which a cache can afford; the file stays consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from byok_middleware.cache.backend import BackendUsage, StoredEntry, VectorRow

__all__ = ["TOUCH_BATCH", "TOUCH_DELAY", "SQLiteBackend"]

_T = TypeVar("_T")

logger = logging.getLogger("byok_middleware.cache")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS byok_cache_v1 (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id TEXT NOT NULL,
        key TEXT NOT NULL,
        grp TEXT,
        entry BLOB NOT NULL,
        vector BLOB,
        size INTEGER NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        last_used REAL NOT NULL,
        UNIQUE (tenant_id, key)
    )""",
    "CREATE INDEX IF NOT EXISTS byok_cache_v1_lru ON byok_cache_v1 (last_used, seq)",
    "CREATE INDEX IF NOT EXISTS byok_cache_v1_expiry ON byok_cache_v1 (expires_at)",
    """CREATE INDEX IF NOT EXISTS byok_cache_v1_vectors ON byok_cache_v1 (tenant_id, seq)
        WHERE grp IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS byok_cache_v1_totals (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        entries INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    )""",
    "INSERT OR IGNORE INTO byok_cache_v1_totals (id, entries, bytes) VALUES (1, 0, 0)",
    """CREATE TRIGGER IF NOT EXISTS byok_cache_v1_added AFTER INSERT ON byok_cache_v1 BEGIN
        UPDATE byok_cache_v1_totals
        SET entries = entries + 1, bytes = bytes + NEW.size WHERE id = 1;
    END""",
    """CREATE TRIGGER IF NOT EXISTS byok_cache_v1_removed AFTER DELETE ON byok_cache_v1 BEGIN
        UPDATE byok_cache_v1_totals
        SET entries = entries - 1, bytes = bytes - OLD.size WHERE id = 1;
    END""",
)
_GET = """SELECT grp, entry, vector, created_at, expires_at, last_used FROM byok_cache_v1
    WHERE tenant_id = ? AND key = ?"""
_DELETE_EXPIRED_ONE = (
    "DELETE FROM byok_cache_v1 WHERE tenant_id = ? AND key = ? AND expires_at <= ?"
)
_TOUCH = """UPDATE byok_cache_v1 SET last_used = max(last_used, ?)
    WHERE tenant_id = ? AND key = ?"""
_DELETE = "DELETE FROM byok_cache_v1 WHERE tenant_id = ? AND key = ?"
_INSERT = """INSERT INTO byok_cache_v1
    (tenant_id, key, grp, entry, vector, size, created_at, expires_at, last_used)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_DELETE_EXPIRED = "DELETE FROM byok_cache_v1 WHERE expires_at <= ?"
_TOTALS = "SELECT entries, bytes FROM byok_cache_v1_totals WHERE id = 1"
_OLDEST = "SELECT seq, size FROM byok_cache_v1 ORDER BY last_used, seq LIMIT ?"
_DELETE_SEQ = "DELETE FROM byok_cache_v1 WHERE seq = ?"
_CLEAR_TENANT = "DELETE FROM byok_cache_v1 WHERE tenant_id = ?"
_VECTORS = """SELECT seq, key, grp, vector FROM byok_cache_v1
    WHERE tenant_id = ? AND seq > ? AND grp IS NOT NULL AND expires_at > ?
    ORDER BY seq LIMIT ?"""
_LRU_BATCH = 256
TOUCH_DELAY = 1.0  # seconds a hit's use time may wait before it is written
TOUCH_BATCH = 512  # use times that are written at once, without waiting for TOUCH_DELAY


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction, its lock taken at once; committed, or rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _reader(path: str) -> sqlite3.Connection:
    """The read-only connection lookups use; no busy wait (a busy read goes to the worker)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 0")
    conn.execute("PRAGMA query_only = 1")
    return conn


def _row(tenant_id: str, key: str, found: tuple[Any, ...]) -> StoredEntry:
    group, sealed, vector, created_at, expires_at, _ = found
    return StoredEntry(
        tenant_id=tenant_id,
        key=key,
        sealed=bytes(sealed),
        created_at=created_at,
        expires_at=expires_at,
        group=group,
        vector=None if vector is None else bytes(vector),
    )


class SQLiteBackend:
    """A ``CacheBackend`` on one SQLite file (``path``), or ``:memory:``."""

    def __init__(
        self, path: str, *, max_bytes: int = 256 * 1024 * 1024, touch_seconds: float = 60.0
    ) -> None:
        self._path = path
        self._max_bytes = max_bytes
        self._touch = touch_seconds
        self._conn: sqlite3.Connection | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._reader: sqlite3.Connection | None = None  # on the event loop's thread
        self._lock = asyncio.Lock()  # open and close only; the single worker orders the rest
        self._touches: dict[tuple[str, str], float] = {}  # (tenant, key) -> use time, unwritten
        self._touch_wake = asyncio.Event()
        self._touch_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"SQLiteBackend(path={self._path!r})"

    async def open(self) -> None:
        """Connect and create the table. Idempotent."""
        await self._connected()

    async def close(self) -> None:
        task, self._touch_task = self._touch_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._touches and self._conn is not None:
            await self._write_touches()
        async with self._lock:
            conn, self._conn = self._conn, None
            worker, self._worker = self._worker, None
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        if worker is not None:
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(worker, conn.close)
            worker.shutdown(wait=False)

    async def _connected(self) -> tuple[ThreadPoolExecutor, sqlite3.Connection]:
        if self._conn is not None and self._worker is not None:
            return self._worker, self._conn
        async with self._lock:
            if self._conn is None or self._worker is None:
                worker = ThreadPoolExecutor(1, thread_name_prefix="byok-cache-sqlite")
                loop = asyncio.get_running_loop()
                try:
                    self._conn = await loop.run_in_executor(worker, _connect, self._path)
                except BaseException:
                    worker.shutdown(wait=False)
                    raise
                self._worker = worker
                if self._path != ":memory:":  # a second connection would be another database
                    self._reader = _reader(self._path)
            return self._worker, self._conn

    async def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """``work(conn)`` on the worker thread: one hop, whatever it runs."""
        worker, conn = await self._connected()
        return await asyncio.get_running_loop().run_in_executor(worker, work, conn)

    async def get(self, tenant_id: str, key: str, now: float) -> StoredEntry | None:
        if self._reader is None:
            await self._connected()
        reader = self._reader
        if reader is not None:
            try:
                rows = reader.execute(_GET, (tenant_id, key)).fetchall()  # all: ends the read
            except sqlite3.OperationalError:  # busy (e.g. another process recovering the WAL)
                return await self._get_on_worker(tenant_id, key, now)
            if not rows:
                return None
            found = rows[0]
            if found[4] <= now:
                await self._run(
                    lambda conn: conn.execute(_DELETE_EXPIRED_ONE, (tenant_id, key, now))
                )
                return None
            if now - found[5] >= self._touch:
                self._touched(tenant_id, key, now)
            return _row(tenant_id, key, found)
        return await self._get_on_worker(tenant_id, key, now)

    def _touched(self, tenant_id: str, key: str, now: float) -> None:
        """Note that (tenant, key) was used at ``now``; the write follows (module docstring)."""
        self._touches[(tenant_id, key)] = now
        if len(self._touches) >= TOUCH_BATCH:
            self._touch_wake.set()
        if self._touch_task is None or self._touch_task.done():
            self._touch_task = asyncio.get_running_loop().create_task(self._touch_behind())

    def _take_touches(self) -> list[tuple[float, str, str]]:
        touches = [(now, tenant_id, key) for (tenant_id, key), now in self._touches.items()]
        self._touches.clear()
        return touches

    async def _write_touches(self) -> None:
        touches = self._take_touches()
        if not touches:
            return

        def touch(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany(_TOUCH, touches)

        await self._run(touch)

    async def _touch_behind(self) -> None:
        while self._touches:
            if len(self._touches) < TOUCH_BATCH:
                self._touch_wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._touch_wake.wait(), TOUCH_DELAY)
            try:
                await self._write_touches()
            except sqlite3.Error as exc:  # the use times are only an LRU hint: logged, dropped
                logger.warning("cache use times could not be written (%s)", type(exc).__name__)

    async def _get_on_worker(self, tenant_id: str, key: str, now: float) -> StoredEntry | None:
        touch = self._touch

        def get(conn: sqlite3.Connection) -> StoredEntry | None:
            found = conn.execute(_GET, (tenant_id, key)).fetchone()
            if found is None:
                return None
            if found[4] <= now:
                conn.execute(_DELETE_EXPIRED_ONE, (tenant_id, key, now))
                return None
            if now - found[5] >= touch:
                conn.execute(_TOUCH, (now, tenant_id, key))
            return _row(tenant_id, key, found)

        return await self._run(get)

    async def put(self, entry: StoredEntry, now: float) -> int:
        return await self.put_many([entry], now)

    async def put_many(self, entries: Sequence[StoredEntry], now: float) -> int:
        """Store ``entries`` (a later one replaces an earlier of the same key) in one
        transaction, then drop the expired and evict to fit; how many were evicted."""
        if not entries:
            return 0
        deletes = [(e.tenant_id, e.key) for e in entries]
        inserts = [
            (e.tenant_id, e.key, e.group, e.sealed, e.vector, e.size, e.created_at,
             e.expires_at, now)
            for e in entries
        ]  # fmt: skip
        max_bytes = self._max_bytes
        touches = self._take_touches()  # before the eviction, which must see them

        def put(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                conn.executemany(_TOUCH, touches)
                # Delete then insert (not REPLACE): the row gets a new seq, and triggers fire.
                for delete, insert in zip(deletes, inserts, strict=True):
                    conn.execute(_DELETE, delete)
                    conn.execute(_INSERT, insert)
                evicted = max(conn.execute(_DELETE_EXPIRED, (now,)).rowcount, 0)
                evicted += _evict(conn, max_bytes)
            return evicted

        return await self._run(put)

    async def delete(self, tenant_id: str, key: str) -> None:
        await self._run(lambda conn: conn.execute(_DELETE, (tenant_id, key)))

    async def clear_tenant(self, tenant_id: str) -> int:
        return await self._run(
            lambda conn: max(conn.execute(_CLEAR_TENANT, (tenant_id,)).rowcount, 0)
        )

    async def vectors(
        self, tenant_id: str, after_seq: int, now: float, limit: int
    ) -> list[VectorRow]:
        rows = await self._run(
            lambda conn: conn.execute(_VECTORS, (tenant_id, after_seq, now, limit)).fetchall()
        )
        return [VectorRow(seq=r[0], key=r[1], group=r[2], vector=bytes(r[3])) for r in rows]

    async def usage(self) -> BackendUsage:
        found = await self._run(lambda conn: conn.execute(_TOTALS).fetchone())
        entries, total = found if found else (0, 0)
        return BackendUsage(entries=entries, bytes=total, max_bytes=self._max_bytes)


def _evict(conn: sqlite3.Connection, max_bytes: int) -> int:
    """Delete least recently used rows until the totals fit; inside the caller's transaction."""
    evicted = 0
    while True:
        found = conn.execute(_TOTALS).fetchone()
        excess = (found[1] if found else 0) - max_bytes
        if excess <= 0:
            return evicted
        doomed = []
        for seq, size in conn.execute(_OLDEST, (_LRU_BATCH,)).fetchall():
            doomed.append((seq,))
            excess -= size
            if excess <= 0:
                break
        if not doomed:
            return evicted
        conn.executemany(_DELETE_SEQ, doomed)
        evicted += len(doomed)

"""The cache in the gateway's SQLite file: its own table, its own aiosqlite connection.

Several processes may share the file (WAL, ``busy_timeout``): what one stores, the others hit.
The table's running totals live in a one-row table kept by triggers, so the size check on a write
reads one row, and it stays right whichever process wrote. The table name carries the entry
format's version: a new format starts a new table instead of migrating a cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aiosqlite

from byok_middleware.cache.backend import BackendUsage, StoredEntry, VectorRow

__all__ = ["SQLiteBackend"]

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
_TOUCH = "UPDATE byok_cache_v1 SET last_used = ? WHERE tenant_id = ? AND key = ?"
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


class SQLiteBackend:
    """A ``CacheBackend`` on one SQLite file (``path``), or ``:memory:``."""

    def __init__(
        self, path: str, *, max_bytes: int = 256 * 1024 * 1024, touch_seconds: float = 60.0
    ) -> None:
        self._path = path
        self._max_bytes = max_bytes
        self._touch = touch_seconds
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SQLiteBackend(path={self._path!r})"

    async def open(self) -> None:
        """Connect and create the table. Idempotent."""
        await self._connected()

    async def close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _connected(self) -> aiosqlite.Connection:
        if self._conn is not None:
            return self._conn
        async with self._lock:
            if self._conn is None:
                conn = await aiosqlite.connect(self._path, isolation_level=None)
                try:
                    await conn.execute("PRAGMA busy_timeout = 5000")
                    if self._path != ":memory:":
                        await conn.execute("PRAGMA journal_mode = WAL")
                    await conn.execute("BEGIN IMMEDIATE")
                    for statement in _SCHEMA:
                        await conn.execute(statement)
                    await conn.execute("COMMIT")
                except BaseException:
                    await conn.close()
                    raise
                self._conn = conn
            return self._conn

    async def _write(self, sql: str, params: Sequence[Any]) -> int:
        """One statement as its own transaction; its row count."""
        conn = await self._connected()
        async with self._lock:
            cursor = await conn.execute(sql, params)
            return max(cursor.rowcount, 0)

    async def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        conn = await self._connected()
        async with self._lock:
            cursor = await conn.execute(sql, params)
            return list(await cursor.fetchall())

    async def get(self, tenant_id: str, key: str, now: float) -> StoredEntry | None:
        rows = await self._read(_GET, (tenant_id, key))
        if not rows:
            return None
        group, sealed, vector, created_at, expires_at, last_used = rows[0]
        if expires_at <= now:
            await self._write(_DELETE_EXPIRED_ONE, (tenant_id, key, now))
            return None
        if now - last_used >= self._touch:
            await self._write(_TOUCH, (now, tenant_id, key))
        return StoredEntry(
            tenant_id=tenant_id,
            key=key,
            sealed=bytes(sealed),
            created_at=created_at,
            expires_at=expires_at,
            group=group,
            vector=None if vector is None else bytes(vector),
        )

    async def put(self, entry: StoredEntry, now: float) -> int:
        values = (
            entry.tenant_id,
            entry.key,
            entry.group,
            entry.sealed,
            entry.vector,
            entry.size,
            entry.created_at,
            entry.expires_at,
            now,
        )
        conn = await self._connected()
        async with self._lock:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                # Delete then insert (not REPLACE): the row gets a new seq, and triggers fire.
                await conn.execute(_DELETE, (entry.tenant_id, entry.key))
                await conn.execute(_INSERT, values)
                cursor = await conn.execute(_DELETE_EXPIRED, (now,))
                evicted = max(cursor.rowcount, 0) + await self._evict(conn)
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
        return evicted

    async def _evict(self, conn: aiosqlite.Connection) -> int:
        """Delete least recently used rows until the totals fit; inside the caller's transaction."""
        evicted = 0
        while True:
            cursor = await conn.execute(_TOTALS)
            row = await cursor.fetchone()
            excess = (row[1] if row else 0) - self._max_bytes
            if excess <= 0:
                return evicted
            cursor = await conn.execute(_OLDEST, (_LRU_BATCH,))
            doomed = []
            for seq, size in await cursor.fetchall():
                doomed.append((seq,))
                excess -= size
                if excess <= 0:
                    break
            if not doomed:
                return evicted
            await conn.executemany(_DELETE_SEQ, doomed)
            evicted += len(doomed)

    async def delete(self, tenant_id: str, key: str) -> None:
        await self._write(_DELETE, (tenant_id, key))

    async def clear_tenant(self, tenant_id: str) -> int:
        return await self._write(_CLEAR_TENANT, (tenant_id,))

    async def vectors(
        self, tenant_id: str, after_seq: int, now: float, limit: int
    ) -> list[VectorRow]:
        rows = await self._read(_VECTORS, (tenant_id, after_seq, now, limit))
        return [VectorRow(seq=r[0], key=r[1], group=r[2], vector=bytes(r[3])) for r in rows]

    async def usage(self) -> BackendUsage:
        rows = await self._read(_TOTALS, ())
        entries, total = rows[0] if rows else (0, 0)
        return BackendUsage(entries=entries, bytes=total, max_bytes=self._max_bytes)

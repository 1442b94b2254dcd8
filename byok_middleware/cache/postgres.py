"""The cache on PostgreSQL (the ``postgres`` extra): its own tables, its own asyncpg pool.

For many replicas: what one stores, every other hits. Every write transaction first locks the
one-row totals table, so the running totals stay exact and writers never deadlock over the rows
an eviction deletes; a cache write happens only after a good upstream answer, so serialising
writes costs little. Reads take no lock. Sequence numbers of concurrent writers may commit out
of order, so a replica's index may miss a vector stored in that instant: a missed semantic hit,
never a wrong one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from byok_middleware.cache.backend import BackendUsage, StoredEntry, VectorRow
from byok_middleware.errors import ConfigurationError
from byok_middleware.shared import safe_url

__all__ = ["PostgresBackend"]

_SCHEMA = (
    "SELECT pg_advisory_xact_lock(hashtext('byok_cache_v1'))",  # replicas start together
    """CREATE TABLE IF NOT EXISTS byok_cache_v1 (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        key TEXT NOT NULL,
        grp TEXT,
        entry BYTEA NOT NULL,
        vector BYTEA,
        size BIGINT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        last_used DOUBLE PRECISION NOT NULL,
        UNIQUE (tenant_id, key)
    )""",
    "CREATE INDEX IF NOT EXISTS byok_cache_v1_lru ON byok_cache_v1 (last_used, seq)",
    "CREATE INDEX IF NOT EXISTS byok_cache_v1_expiry ON byok_cache_v1 (expires_at)",
    """CREATE INDEX IF NOT EXISTS byok_cache_v1_vectors ON byok_cache_v1 (tenant_id, seq)
        WHERE grp IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS byok_cache_v1_totals (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        entries BIGINT NOT NULL,
        bytes BIGINT NOT NULL
    )""",
    "INSERT INTO byok_cache_v1_totals VALUES (1, 0, 0) ON CONFLICT (id) DO NOTHING",
)
_LOCK_TOTALS = "SELECT entries, bytes FROM byok_cache_v1_totals WHERE id = 1 FOR UPDATE"
_TOTALS = "SELECT entries, bytes FROM byok_cache_v1_totals WHERE id = 1"
_ADJUST = "UPDATE byok_cache_v1_totals SET entries = entries + $1, bytes = bytes + $2 WHERE id = 1"
_GET = """SELECT grp, entry, vector, created_at, expires_at, last_used FROM byok_cache_v1
    WHERE tenant_id = $1 AND key = $2"""
_TOUCH = "UPDATE byok_cache_v1 SET last_used = $1 WHERE tenant_id = $2 AND key = $3"
_INSERT = """INSERT INTO byok_cache_v1
    (tenant_id, key, grp, entry, vector, size, created_at, expires_at, last_used)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"""
_VECTORS = """SELECT seq, key, grp, vector FROM byok_cache_v1
    WHERE tenant_id = $1 AND seq > $2 AND grp IS NOT NULL AND expires_at > $3
    ORDER BY seq LIMIT $4"""
_OLDEST = "SELECT seq, size FROM byok_cache_v1 ORDER BY last_used, seq LIMIT 256"
# Deletions report what they removed, so the totals are adjusted in the same transaction.
_DELETE_KEY = """WITH gone AS (
    DELETE FROM byok_cache_v1 WHERE tenant_id = $1 AND key = $2 RETURNING size
) SELECT count(*), coalesce(sum(size), 0) FROM gone"""
_DELETE_EXPIRED_KEY = """WITH gone AS (
    DELETE FROM byok_cache_v1 WHERE tenant_id = $1 AND key = $2 AND expires_at <= $3
    RETURNING size
) SELECT count(*), coalesce(sum(size), 0) FROM gone"""
_DELETE_EXPIRED = """WITH gone AS (
    DELETE FROM byok_cache_v1 WHERE expires_at <= $1 RETURNING size
) SELECT count(*), coalesce(sum(size), 0) FROM gone"""
_DELETE_SEQS = """WITH gone AS (
    DELETE FROM byok_cache_v1 WHERE seq = ANY($1::bigint[]) RETURNING size
) SELECT count(*), coalesce(sum(size), 0) FROM gone"""
_CLEAR_TENANT = """WITH gone AS (
    DELETE FROM byok_cache_v1 WHERE tenant_id = $1 RETURNING size
) SELECT count(*), coalesce(sum(size), 0) FROM gone"""


class PostgresBackend:
    """A ``CacheBackend`` on PostgreSQL at ``url``; connects on ``open()`` or the first call."""

    def __init__(
        self,
        url: str,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        touch_seconds: float = 60.0,
        min_size: int = 1,
        max_size: int = 4,
    ) -> None:
        self._url = url
        self._max_bytes = max_bytes
        self._touch = touch_seconds
        self._sizes = (min_size, max_size)
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresBackend(url={safe_url(self._url)!r})"

    async def open(self) -> None:
        await self._connected()

    async def close(self) -> None:
        async with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _connected(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                self._pool = await self._create_pool()
            return self._pool

    async def _create_pool(self) -> asyncpg.Pool:
        try:
            pool = await asyncpg.create_pool(
                self._url,
                min_size=self._sizes[0],
                max_size=self._sizes[1],
                server_settings={"application_name": "byok_middleware_cache"},
            )
        except (ValueError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            raise ConfigurationError(
                f"the response cache cannot reach PostgreSQL at {safe_url(self._url)}"
            ) from None
        try:
            async with pool.acquire() as conn, conn.transaction():
                for statement in _SCHEMA:
                    await conn.execute(statement)
        except BaseException:
            await pool.close()
            raise
        return pool

    async def _removing(self, sql: str, *args: Any) -> int:
        """Run one deleting statement under the totals lock; how many rows it removed."""
        pool = await self._connected()
        async with pool.acquire() as conn, conn.transaction():
            await conn.fetchrow(_LOCK_TOTALS)
            return await self._removed(conn, sql, *args)

    @staticmethod
    async def _removed(conn: asyncpg.Connection, sql: str, *args: Any) -> int:
        count, size = await conn.fetchrow(sql, *args)
        if count:
            await conn.execute(_ADJUST, -count, -size)
        return int(count)

    async def get(self, tenant_id: str, key: str, now: float) -> StoredEntry | None:
        pool = await self._connected()
        row = await pool.fetchrow(_GET, tenant_id, key)
        if row is None:
            return None
        if row["expires_at"] <= now:
            await self._removing(_DELETE_EXPIRED_KEY, tenant_id, key, now)
            return None
        if now - row["last_used"] >= self._touch:
            await pool.execute(_TOUCH, now, tenant_id, key)
        return StoredEntry(
            tenant_id=tenant_id,
            key=key,
            sealed=bytes(row["entry"]),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            group=row["grp"],
            vector=None if row["vector"] is None else bytes(row["vector"]),
        )

    async def put(self, entry: StoredEntry, now: float) -> int:
        return await self.put_many([entry], now)

    async def put_many(self, entries: Sequence[StoredEntry], now: float) -> int:
        """Store ``entries`` in one transaction (a later one replaces an earlier of the same
        key), then drop the expired and evict to fit; how many were evicted."""
        if not entries:
            return 0
        pool = await self._connected()
        async with pool.acquire() as conn, conn.transaction():
            await conn.fetchrow(_LOCK_TOTALS)
            for entry in entries:
                await self._removed(conn, _DELETE_KEY, entry.tenant_id, entry.key)
                await conn.execute(
                    _INSERT,
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
            await conn.execute(_ADJUST, len(entries), sum(entry.size for entry in entries))
            evicted = await self._removed(conn, _DELETE_EXPIRED, now)
            while True:
                _, total = await conn.fetchrow(_TOTALS)
                excess = total - self._max_bytes
                if excess <= 0:
                    return evicted
                doomed = []
                for seq, size in await conn.fetch(_OLDEST):
                    doomed.append(seq)
                    excess -= size
                    if excess <= 0:
                        break
                if not doomed:
                    return evicted
                evicted += await self._removed(conn, _DELETE_SEQS, doomed)

    async def delete(self, tenant_id: str, key: str) -> None:
        await self._removing(_DELETE_KEY, tenant_id, key)

    async def clear_tenant(self, tenant_id: str) -> int:
        return await self._removing(_CLEAR_TENANT, tenant_id)

    async def vectors(
        self, tenant_id: str, after_seq: int, now: float, limit: int
    ) -> list[VectorRow]:
        pool = await self._connected()
        rows = await pool.fetch(_VECTORS, tenant_id, after_seq, now, limit)
        return [
            VectorRow(seq=r["seq"], key=r["key"], group=r["grp"], vector=bytes(r["vector"]))
            for r in rows
        ]

    async def usage(self) -> BackendUsage:
        pool = await self._connected()
        entries, total = await pool.fetchrow(_TOTALS)
        return BackendUsage(entries=int(entries), bytes=int(total), max_bytes=self._max_bytes)

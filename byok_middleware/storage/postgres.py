"""The store for many replicas: PostgreSQL through an asyncpg connection pool.

Every query is the shared SQL of ``SQLStore`` (``storage.sql*``); this module holds only the
pool, transactions, codecs and the mapping of asyncpg's errors.

Every replica opens its own pool on the same database. Migrations use the same bookkeeping as
SQLite (``schema_version``, :func:`~byok_middleware.storage.migrations.pending`), rendered for
PostgreSQL (``POSTGRES_MIGRATIONS``); a transaction-scoped advisory lock makes replicas that start
together migrate once: the first runs them, the others wait for its commit and find nothing to do.

Formats: times are ``timestamptz`` (read back in UTC), money ``NUMERIC`` (exact; sums stay exact),
booleans ``BOOLEAN``, envelopes ``BYTEA``. The ledger's ``request_id`` is unique and inserts use
``ON CONFLICT DO NOTHING``, so a retried batch never counts a row twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from byok_middleware.errors import ConfigurationError
from byok_middleware.shared import safe_url
from byok_middleware.storage.base import KeyStatus, require_aware
from byok_middleware.storage.migrations import POSTGRES_MIGRATIONS, Migration, pending
from byok_middleware.storage.sql import POSTGRES, Row, Violation
from byok_middleware.storage.sql_store import SQLStore

__all__ = ["MIGRATION_LOCK", "PostgresStore", "apply_migrations"]

MIGRATION_LOCK = 0x62796F6B_6D696772  # "byokmigr": the advisory lock key of schema migrations


class _Session:
    """A pooled connection taking neutral statements (``storage.sql.Session``)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        rows: list[Row] = await self._conn.fetch(POSTGRES.render(sql), *params)
        return rows

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        status: str = await self._conn.execute(POSTGRES.render(sql), *params)
        # The command tag, e.g. "DELETE 1", "UPDATE 0" or "INSERT 0 1".
        return int(status.rsplit(" ", 1)[-1])

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        await self._conn.executemany(POSTGRES.render(sql), rows)


async def apply_migrations(conn: asyncpg.Connection, migrations: Sequence[Migration]) -> int:
    """Bring the schema up to date in one transaction; return the version it ends at.

    Safe to run from several replicas at once: the advisory lock is taken before anything else,
    so a second runner waits for the first to commit and then finds nothing pending.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
        )
        current = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
        for migration in pending(migrations, current):
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES ($1, now())",
                migration.version,
            )
            current = migration.version
    return current


class PostgresStore(SQLStore):
    """An ``AdminStore`` on PostgreSQL; see ``AdminStore`` for what each method promises.

    Nothing connects before ``open()`` or the first call, which opens the store on demand.

    Raises:
        ConfigurationError: from ``open`` (or the first call) when the server cannot be reached
            or refuses the login; the message names PostgreSQL and the URL without its password.
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 10.0,
        migrations: Sequence[Migration] = POSTGRES_MIGRATIONS,
    ) -> None:
        self._url = url
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = connect_timeout
        self._migrations = migrations
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        state = "open" if self._pool is not None else "closed"
        return f"PostgresStore(url={safe_url(self._url)!r}, {state})"

    async def open(self) -> None:
        """Create the pool and run pending migrations. Idempotent."""
        await self._connected()

    async def close(self) -> None:
        """Close the pool once the queries in flight are done. Idempotent; a later call opens
        the store again."""
        async with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _connected(self) -> asyncpg.Pool:
        pool = self._pool
        if pool is not None:
            return pool
        async with self._lock:
            if self._pool is None:
                self._pool = await self._create_pool()
            return self._pool

    async def _create_pool(self) -> asyncpg.Pool:
        where = safe_url(self._url)
        try:
            pool: asyncpg.Pool = await asyncpg.create_pool(
                self._url,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._timeout,
                # The session zone only shapes text output; values are read back as UTC anyway.
                server_settings={"timezone": "UTC", "application_name": "byok_middleware"},
            )
        except ValueError:
            # asyncpg's URL parser quotes the part it choked on, which may be the password.
            raise ConfigurationError(
                f"BYOK_DATABASE_URL ({where}) is malformed; percent-encode special characters "
                "in the user name and password"
            ) from None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ConfigurationError(
                f"PostgreSQL at {where} (BYOK_DATABASE_URL) is unreachable or refused the "
                f"connection: {_describe(exc, self._url)}"
            ) from None
        try:
            async with pool.acquire() as conn:
                await apply_migrations(conn, self._migrations)
        except BaseException:
            await pool.close()
            raise
        return pool

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[_Session]:
        pool = await self._connected()
        async with pool.acquire() as conn:
            yield _Session(conn)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Session]:
        pool = await self._connected()
        async with pool.acquire() as conn, conn.transaction():
            yield _Session(conn)

    # Codecs and errors for the shared SQL

    dialect = POSTGRES
    _constraint_errors = (asyncpg.IntegrityConstraintViolationError,)
    # DataError covers values asyncpg cannot encode as well as those the server refuses.
    _data_errors = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)

    def _encode(self, value: object, name: str) -> object:
        # asyncpg takes datetimes, Decimals, bools and bytes as they are; naive times refused.
        if isinstance(value, datetime):
            require_aware(value, name)
        elif isinstance(value, KeyStatus):
            return value.value
        return value

    def _values(self, row: Row) -> dict[str, Any]:
        values: dict[str, Any] = dict(row.items())
        for name, value in values.items():
            if isinstance(value, datetime):
                values[name] = value.astimezone(UTC)
        return values

    def _money(self, value: Any) -> Decimal:
        return Decimal(value)

    def _violation(self, exc: BaseException) -> Violation:
        kind = (
            "unique"
            if isinstance(exc, asyncpg.UniqueViolationError)
            else "foreign_key"
            if isinstance(exc, asyncpg.ForeignKeyViolationError)
            else "other"
        )
        return Violation(kind, getattr(exc, "constraint_name", None) or "")


def _describe(exc: BaseException, url: str) -> str:
    """The reason a connection failed, never repeating the password even if a driver did."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    try:
        from urllib.parse import urlsplit

        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text

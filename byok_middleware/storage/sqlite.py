"""The default store: one SQLite file through aiosqlite.

Every query is the shared SQL of ``SQLStore`` (``storage.sql*``); this module holds only the
connection, transactions, the codecs of SQLite's column formats and its error mapping.

One connection per store (aiosqlite runs it on its own thread) in WAL mode, so readers in other
processes never block on a writer. Because every coroutine shares that connection, and a SQLite
transaction belongs to the connection, an ``asyncio.Lock`` makes each operation atomic to the
others: writes run as whole transactions under it, and reads take it too so that they never see
half of someone else's transaction. Several processes on the same file are fine (WAL plus
``busy_timeout``); several hosts on a network file system are not, use PostgreSQL there.

Formats: datetimes are fixed-width ISO-8601 UTC text, Decimals TEXT, booleans 0/1 (see
``storage.sql.SQLITE``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from byok_middleware.storage.base import KeyStatus, UsageRecord, require_aware
from byok_middleware.storage.migrations import SQLITE_MIGRATIONS, Migration, pending
from byok_middleware.storage.sql import SQLITE, Row, Violation
from byok_middleware.storage.sql_store import SQLStore

__all__ = ["SQLiteStore", "apply_migrations"]


def _null(value: None) -> None:
    return None


if sys.version_info < (3, 12):
    # sqlite3 "adapts" every bound None: on CPython 3.11 it then asks the protocol type for
    # ``__adapt__`` and builds an AttributeError to discard, some 3,000 instructions per None (a
    # ledger row binds three, every request writes one). A registered adapter is found first;
    # this one keeps None as None, so NULL stays NULL for every sqlite3 user in the process.
    # 3.12 looks the attribute up without the exception.
    sqlite3.register_adapter(type(None), _null)


def _ts(value: datetime, name: str = "datetime") -> str:
    """``value`` as fixed-width UTC text, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, which sorts as time does
    (``isoformat`` zero-pads the year)."""
    if value.tzinfo is not UTC:
        require_aware(value, name)
        value = value.astimezone(UTC)
    if value.microsecond:
        # The same text, written five times faster (one per ledger row); orjson leaves the
        # fraction out when it is zero, which the fixed width cannot.
        return orjson.dumps(value, option=orjson.OPT_UTC_Z)[1:-1].decode()
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _encode(value: object, name: str) -> object:
    """A record or ``KeyChanges`` value as its SQLite column stores it."""
    if isinstance(value, datetime):
        return _ts(value, name)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, KeyStatus):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    return value


def _encode_record(record: object, names: Sequence[str]) -> tuple[object, ...]:
    return tuple(_encode(getattr(record, name), name) for name in names)


def _encode_usage(row: UsageRecord) -> tuple[object, ...]:
    """A ledger row as the shared INSERT binds it: ``_encode_record`` unrolled for the one record
    written per request (its types are fixed, so no per-field type dispatch)."""
    cost, saved = row.cost_usd, row.cost_saved_usd
    return (
        row.request_id,
        row.tenant_id,
        row.key_id,
        row.provider,
        row.model,
        row.endpoint,
        row.attribution,
        row.prompt_tokens,
        row.completion_tokens,
        row.cached_tokens,
        None if cost is None else str(cost),
        row.status_code,
        row.latency_ms,
        _ts(row.created_at, "created_at"),
        row.attempts,
        int(row.cache_hit),
        row.error_type,
        row.ttft_ms,
        row.cost_source,
        None if saved is None else str(saved),
    )


# Columns whose stored form is not already the Python value (NULL stays None). The names are
# unique across tables, so one map serves every record.
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "ciphertext": bytes,
    "secret_ciphertext": bytes,
    **dict.fromkeys(("is_active", "always_use", "cache_hit", "clamp_max_tokens"), bool),
    **dict.fromkeys(
        ("monthly_budget_usd", "cost_usd", "cost_saved_usd", "budget_usd", "platform_budget_usd"),
        Decimal,
    ),
    **dict.fromkeys(
        ("created_at", "updated_at", "revoked_at", "last_used_at", "cooldown_until", "expires_at"),
        datetime.fromisoformat,
    ),
}


def _exact_sum(concatenated: str | None) -> Decimal:
    # SQLite's sum() over TEXT goes through REAL and would round; group_concat hands the exact
    # strings to Python, keeping the grouping in one SQL query.
    if not concatenated:
        return Decimal(0)
    return sum((Decimal(part) for part in concatenated.split(",")), Decimal(0))


class _Session:
    """The store's one connection taking neutral statements (``storage.sql.Session``)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return list(await self._conn.execute_fetchall(SQLITE.render(sql), tuple(params)))

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        async with self._conn.execute(SQLITE.render(sql), tuple(params)) as cursor:
            return cursor.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        await self._conn.executemany(SQLITE.render(sql), rows)


async def apply_migrations(conn: aiosqlite.Connection, migrations: Sequence[Migration]) -> int:
    """Bring the schema up to date in one transaction; return the version it ends at.

    Safe to run from several processes at once: ``BEGIN IMMEDIATE`` takes the write lock before
    the version is read, so a second runner waits and then finds nothing to do.
    """
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version "
        "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    await conn.execute("BEGIN IMMEDIATE")
    try:
        rows = list(await conn.execute_fetchall("SELECT max(version) FROM schema_version"))
        current = rows[0][0] or 0
        for migration in pending(migrations, current):
            for statement in migration.statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (migration.version, _ts(datetime.now(UTC))),
            )
            current = migration.version
        await conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")
        raise
    return int(current)


class SQLiteStore(SQLStore):
    """An ``AdminStore`` in one SQLite file; see ``AdminStore`` for what each method promises.

    ``path`` may be ``":memory:"`` (private to this store, gone on close). Nothing touches the
    disk before ``open()`` or the first call, which opens the store on demand.
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0) -> None:
        self._path = str(path)
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        state = "open" if self._conn is not None else "closed"
        return f"SQLiteStore(path={self._path!r}, {state})"

    async def open(self) -> None:
        """Connect, set the pragmas and run pending migrations. Idempotent."""
        async with self._lock:
            await self._open_locked()

    async def close(self) -> None:
        """Close the connection once the operation in flight is done. Idempotent; a later call
        opens the store again."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()

    async def _open_locked(self) -> aiosqlite.Connection:
        if self._conn is not None:
            return self._conn
        conn = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            # busy_timeout first: switching to WAL itself needs the write lock.
            await conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            await self._enable_wal(conn)
            # In WAL mode NORMAL never corrupts the file; a power cut (not a crash of the
            # process) can lose only the last commits, and it saves an fsync per commit.
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await apply_migrations(conn, SQLITE_MIGRATIONS)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def _enable_wal(self, conn: aiosqlite.Connection) -> None:
        """Switch the file to WAL. When another process opens the same new file at the same
        moment the switch can fail at once with "database is locked" (SQLite does not wait out
        busy_timeout there), so it is retried, with backoff, for as long as busy_timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._busy_timeout_ms / 1000
        delay = 0.005
        while True:
            try:
                await conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or loop.time() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            yield await self._open_locked()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[_Session]:
        async with self._locked() as conn:
            yield _Session(conn)

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[_Session]:
        async with self._locked() as conn:
            # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
            # writes can fail with SQLITE_BUSY without waiting out busy_timeout.
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield _Session(conn)
                await conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise

    # Codecs and errors for the shared SQL

    dialect = SQLITE
    _constraint_errors = (sqlite3.IntegrityError,)
    # OverflowError: an int beyond 64 bits, refused by the sqlite3 module before SQLite sees it.
    _data_errors = (
        sqlite3.IntegrityError,
        sqlite3.DataError,
        sqlite3.InterfaceError,
        OverflowError,
    )

    def _encode(self, value: object, name: str) -> object:
        return _encode(value, name)

    def _encode_usage(self, row: UsageRecord) -> tuple[object, ...]:
        return _encode_usage(row)

    def _values(self, row: Row) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in row.keys():  # noqa: SIM118 -- sqlite3.Row iterates values, not names
            raw, decoder = row[name], _DECODERS.get(name)
            values[name] = decoder(raw) if decoder is not None and raw is not None else raw
        return values

    def _money(self, value: Any) -> Decimal:
        return _exact_sum(value)

    def _violation(self, exc: BaseException) -> Violation:
        # "UNIQUE constraint failed: tenants.name", "FOREIGN KEY constraint failed", ...
        text = str(exc)
        kind = {"UNIQUE": "unique", "FOREIGN": "foreign_key"}.get(text.partition(" ")[0], "other")
        return Violation(kind, text.rpartition(": ")[2] if kind == "unique" else "")

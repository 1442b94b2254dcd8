"""The default ``KeyStore``: one SQLite file through aiosqlite.

One connection per store (aiosqlite runs it on its own thread) in WAL mode, so readers in other
processes never block on a writer. Because every coroutine shares that connection, and a SQLite
transaction belongs to the connection, an ``asyncio.Lock`` makes each operation atomic to the
others: writes run as whole transactions under it, and reads take it too so that they never see
half of someone else's transaction. Several processes on the same file are fine (WAL plus
``busy_timeout``); several hosts on a network file system are not, use PostgreSQL there.

Formats: datetimes are fixed-width ISO-8601 UTC text, Decimals TEXT, booleans 0/1 (see
``migrations.SQLITE_MIGRATIONS``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from byok_middleware.storage.base import (
    GROUP_BY,
    KeyChanges,
    KeyStatus,
    ProviderKeyRecord,
    Tenant,
    UsageRecord,
    UsageTotal,
    require_aware,
    validate_key_changes,
)
from byok_middleware.storage.migrations import SQLITE_MIGRATIONS, Migration, pending

__all__ = ["SQLiteStore", "apply_migrations"]

_R = TypeVar("_R", Tenant, ProviderKeyRecord, UsageRecord)

_KEY_FIELDS = tuple(f.name for f in dataclasses.fields(ProviderKeyRecord))
_USAGE_FIELDS = tuple(f.name for f in dataclasses.fields(UsageRecord))
# Column lists come from the record types, so a new field cannot be silently left unstored.
_SELECT_KEYS = f"SELECT {', '.join(_KEY_FIELDS)} FROM provider_keys"  # noqa: S608 -- constant
_INSERT_KEY = (
    f"INSERT INTO provider_keys ({', '.join(_KEY_FIELDS)}) "  # noqa: S608 -- constant
    f"VALUES ({', '.join('?' * len(_KEY_FIELDS))})"
)
_SELECT_USAGE = f"SELECT {', '.join(_USAGE_FIELDS)} FROM usage"  # noqa: S608 -- constant
_INSERT_USAGE = (
    f"INSERT OR IGNORE INTO usage ({', '.join(_USAGE_FIELDS)}) "  # noqa: S608 -- constant
    f"VALUES ({', '.join('?' * len(_USAGE_FIELDS))})"
)
# Trusted SQL for each grouping; user input only ever selects one of these.
_GROUP_SQL = {
    "provider": "provider",
    "model": "model",
    "attribution": "attribution",
    "day": "substr(created_at, 1, 10)",  # "YYYY-MM-DD" of the UTC timestamp
}


# The last second formatted by ``_ts`` and its text, replaced as one tuple (so threads can share
# it): ``isoformat`` is most of a ledger row's encoding, and every row of one second shares it.
_LAST_SECOND: tuple[tuple[int, ...], str] = ((), "")


def _ts(value: datetime, name: str = "datetime") -> str:
    """``value`` as fixed-width UTC text, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``, which sorts as time does
    (``isoformat`` zero-pads the year)."""
    if value.tzinfo is not UTC:
        require_aware(value, name)
        value = value.astimezone(UTC)
    global _LAST_SECOND
    second = (value.year, value.month, value.day, value.hour, value.minute, value.second)
    last = _LAST_SECOND
    if last[0] != second:
        last = _LAST_SECOND = (second, value.isoformat(timespec="seconds")[:-6])
    return f"{last[1]}.{value.microsecond:06d}Z"


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
    """A ledger row as ``_INSERT_USAGE`` binds it: ``_encode_record`` unrolled for the one record
    written per request (its types are fixed, so no per-field type dispatch)."""
    cost = row.cost_usd
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
    )


# Columns whose stored form is not already the Python value (NULL stays None).
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "ciphertext": bytes,
    "is_active": bool,
    "always_use": bool,
    "cache_hit": bool,
    "status": KeyStatus,
    "monthly_budget_usd": Decimal,
    "cost_usd": Decimal,
    **dict.fromkeys(
        ("created_at", "updated_at", "revoked_at", "last_used_at", "cooldown_until"),
        datetime.fromisoformat,
    ),
}


def _decode(cls: type[_R], row: sqlite3.Row) -> _R:
    values: dict[str, Any] = {}
    for name in row.keys():  # noqa: SIM118 -- sqlite3.Row iterates values, not names
        raw, decoder = row[name], _DECODERS.get(name)
        values[name] = decoder(raw) if decoder is not None and raw is not None else raw
    return cls(**values)


def _exact_sum(concatenated: str | None) -> Decimal:
    # SQLite's sum() over TEXT goes through REAL and would round; group_concat hands the exact
    # strings to Python, keeping the grouping in one SQL query.
    if not concatenated:
        return Decimal(0)
    return sum((Decimal(part) for part in concatenated.split(",")), Decimal(0))


def _check_limit(limit: int) -> None:
    # SQLite reads a negative LIMIT as "no limit"; refuse it rather than return everything.
    if limit < 1:
        raise ValueError("limit must be at least 1")


def _window(
    tenant_id: str, since: datetime | None, until: datetime | None
) -> tuple[str, list[object]]:
    """A WHERE clause (trusted text) and its parameters for a tenant's ledger in [since, until)."""
    where, params = "tenant_id = ?", list[object]([tenant_id])
    if since is not None:
        where += " AND created_at >= ?"
        params.append(_ts(since, "since"))
    if until is not None:
        where += " AND created_at < ?"
        params.append(_ts(until, "until"))
    return where, params


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


class SQLiteStore:
    """A ``KeyStore`` in one SQLite file; see ``KeyStore`` for what each method promises.

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

    async def _fetch(self, sql: str, params: Iterable[object] = ()) -> list[sqlite3.Row]:
        async with self._locked() as conn:
            return list(await conn.execute_fetchall(sql, tuple(params)))

    async def _write(self, sql: str, params: Iterable[object] = ()) -> int:
        """Run one statement (atomic on its own) and return the number of rows it changed."""
        async with self._locked() as conn, conn.execute(sql, tuple(params)) as cursor:
            return cursor.rowcount

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._locked() as conn:
            # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then
            # writes can fail with SQLITE_BUSY without waiting out busy_timeout.
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise

    async def schema_version(self) -> int:
        """The schema version of the open database (for diagnostics and tests)."""
        rows = await self._fetch("SELECT max(version) FROM schema_version")
        return int(rows[0][0] or 0)

    # Tenants and gateway API keys

    async def create_tenant(self, tenant: Tenant, key_hash: str) -> None:
        row = _encode_record(tenant, ("id", "name", "created_at", "revoked_at"))
        try:
            async with self._transaction() as conn:
                await conn.execute(
                    "INSERT INTO tenants (id, name, created_at, revoked_at) VALUES (?, ?, ?, ?)",
                    row,
                )
                await conn.execute(
                    "INSERT INTO gateway_keys (key_hash, tenant_id, created_at) VALUES (?, ?, ?)",
                    (key_hash, tenant.id, row[2]),
                )
        except sqlite3.IntegrityError as exc:
            # Only the partial index on active names constrains tenants.name.
            if "tenants.name" in str(exc):
                raise ValueError(f"the tenant name {tenant.name!r} is taken") from None
            raise ValueError("a tenant with this id or gateway key hash exists") from None

    async def list_tenants(self) -> list[Tenant]:
        rows = await self._fetch(
            "SELECT id, name, created_at, revoked_at FROM tenants ORDER BY created_at, id"
        )
        return [_decode(Tenant, row) for row in rows]

    async def revoke_tenant(self, name: str, when: datetime) -> bool:
        revoked = _ts(when, "when")
        async with self._transaction() as conn:
            # The partial unique index allows at most one active tenant of this name.
            sql = "SELECT id FROM tenants WHERE name = ? AND revoked_at IS NULL"
            rows = list(await conn.execute_fetchall(sql, (name,)))
            if not rows:
                return False
            tenant_id = rows[0]["id"]
            await conn.execute(
                "UPDATE tenants SET revoked_at = ? WHERE id = ?", (revoked, tenant_id)
            )
            await conn.execute(
                "UPDATE gateway_keys SET revoked_at = ? WHERE tenant_id = ? AND revoked_at IS NULL",
                (revoked, tenant_id),
            )
        return True

    async def add_gateway_key(self, tenant_id: str, key_hash: str, when: datetime) -> None:
        try:
            await self._write(
                "INSERT INTO gateway_keys (key_hash, tenant_id, created_at) VALUES (?, ?, ?)",
                (key_hash, tenant_id, _ts(when, "when")),
            )
        except sqlite3.IntegrityError as exc:
            if "FOREIGN KEY" in str(exc):
                raise ValueError("no tenant with this id") from None
            raise ValueError("this gateway key hash exists") from None

    async def tenant_for_key_hash(self, key_hash: str) -> str | None:
        rows = await self._fetch(
            "SELECT t.id FROM gateway_keys g JOIN tenants t ON t.id = g.tenant_id "
            "WHERE g.key_hash = ? AND g.revoked_at IS NULL AND t.revoked_at IS NULL",
            (key_hash,),
        )
        return str(rows[0]["id"]) if rows else None

    # Provider keys

    async def insert_key(self, record: ProviderKeyRecord) -> None:
        try:
            await self._write(_INSERT_KEY, _encode_record(record, _KEY_FIELDS))
        except sqlite3.IntegrityError:
            raise ValueError("a provider key with this id exists") from None

    async def get_key(self, tenant_id: str, key_id: str) -> ProviderKeyRecord | None:
        rows = await self._fetch(
            _SELECT_KEYS + " WHERE id = ? AND tenant_id = ?", (key_id, tenant_id)
        )
        return _decode(ProviderKeyRecord, rows[0]) if rows else None

    async def list_keys(
        self, tenant_id: str, provider: str | None = None
    ) -> list[ProviderKeyRecord]:
        where, params = " WHERE tenant_id = ?", [tenant_id]
        if provider is not None:
            where, params = where + " AND provider = ?", [tenant_id, provider]
        order = " ORDER BY provider, priority, created_at, id"
        return [
            _decode(ProviderKeyRecord, row)
            for row in await self._fetch(_SELECT_KEYS + where + order, params)
        ]

    async def count_keys(self, tenant_id: str) -> int:
        rows = await self._fetch(
            "SELECT count(*) FROM provider_keys WHERE tenant_id = ?", (tenant_id,)
        )
        return int(rows[0][0])

    async def update_key(
        self, tenant_id: str, key_id: str, changes: KeyChanges, when: datetime
    ) -> ProviderKeyRecord | None:
        values = {name: _encode(v, name) for name, v in validate_key_changes(changes).items()}
        values["updated_at"] = _ts(when, "when")
        # Column names come from KEY_CHANGE_FIELDS (validated above), never from the caller.
        assignments = ", ".join(f"{name} = ?" for name in values)
        async with self._transaction() as conn:
            async with conn.execute(
                f"UPDATE provider_keys SET {assignments} WHERE id = ? AND tenant_id = ?",  # noqa: S608 -- whitelisted names
                (*values.values(), key_id, tenant_id),
            ) as cursor:
                if cursor.rowcount == 0:
                    return None
            rows = list(await conn.execute_fetchall(_SELECT_KEYS + " WHERE id = ?", (key_id,)))
        return _decode(ProviderKeyRecord, rows[0])

    async def delete_key(self, tenant_id: str, key_id: str) -> bool:
        sql = "DELETE FROM provider_keys WHERE id = ? AND tenant_id = ?"
        return await self._write(sql, (key_id, tenant_id)) > 0

    async def iter_key_batch(self, after_id: str | None, limit: int) -> list[ProviderKeyRecord]:
        _check_limit(limit)
        # Two statements rather than "? IS NULL OR id > ?", which would defeat the index range.
        if after_id is None:
            rows = await self._fetch(_SELECT_KEYS + " ORDER BY id LIMIT ?", (limit,))
        else:
            sql = _SELECT_KEYS + " WHERE id > ? ORDER BY id LIMIT ?"
            rows = await self._fetch(sql, (after_id, limit))
        return [_decode(ProviderKeyRecord, row) for row in rows]

    async def replace_ciphertext(self, key_id: str, old: bytes, new: bytes) -> bool:
        sql = "UPDATE provider_keys SET ciphertext = ? WHERE id = ? AND ciphertext = ?"
        return await self._write(sql, (new, key_id, old)) > 0

    # Usage ledger

    async def record_usage(self, rows: Sequence[UsageRecord]) -> None:
        # Encoded before the transaction: a bad row (naive datetime) stores none of the batch.
        encoded = [_encode_usage(row) for row in rows]
        if encoded:
            async with self._transaction() as conn:
                await conn.executemany(_INSERT_USAGE, encoded)

    async def usage_totals(
        self,
        tenant_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: str | None = None,
    ) -> list[UsageTotal]:
        if group_by is not None and group_by not in GROUP_BY:
            raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)}")
        where, params = _window(tenant_id, since, until)
        group = "NULL" if group_by is None else _GROUP_SQL[group_by]
        # Without GROUP BY an aggregate query returns exactly one row: the grand total.
        tail = "" if group_by is None else " GROUP BY grp ORDER BY grp"
        rows = await self._fetch(
            f"SELECT {group} AS grp, count(*), coalesce(sum(prompt_tokens), 0), "  # noqa: S608 -- trusted fragments
            "coalesce(sum(completion_tokens), 0), group_concat(cost_usd, ','), "
            f"coalesce(sum(cost_usd IS NULL), 0) FROM usage WHERE {where}{tail}",
            params,
        )
        return [
            UsageTotal(row[0], row[1], row[2], row[3], _exact_sum(row[4]), row[5]) for row in rows
        ]

    async def list_usage(
        self, tenant_id: str, *, limit: int = 100, since: datetime | None = None
    ) -> list[UsageRecord]:
        _check_limit(limit)
        where, params = _window(tenant_id, since, None)
        rows = await self._fetch(
            f"{_SELECT_USAGE} WHERE {where} ORDER BY created_at DESC, seq DESC LIMIT ?",
            [*params, limit],
        )
        return [_decode(UsageRecord, row) for row in rows]

    async def key_spend(self, key_id: str, since: datetime) -> Decimal:
        rows = await self._fetch(
            "SELECT group_concat(cost_usd, ',') FROM usage WHERE key_id = ? AND created_at >= ?",
            (key_id, _ts(since, "since")),
        )
        return _exact_sum(rows[0][0])

"""The ``KeyStore`` for many replicas: PostgreSQL through an asyncpg connection pool.

Every replica opens its own pool on the same database. Migrations use the same bookkeeping as
SQLite (``schema_version``, :func:`~byok_middleware.storage.migrations.pending`) with their own SQL
(``POSTGRES_MIGRATIONS``); a transaction-scoped advisory lock makes replicas that start together
migrate once: the first runs them, the others wait for its commit and find nothing to do.

Formats: times are ``timestamptz`` (read back in UTC), money ``NUMERIC`` (exact; sums stay exact),
booleans ``BOOLEAN``, envelopes ``BYTEA``. The ledger's ``request_id`` is unique and inserts use
``ON CONFLICT DO NOTHING``, so a retried batch never counts a row twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from byok_middleware.errors import ConfigurationError
from byok_middleware.shared import safe_url
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
from byok_middleware.storage.migrations import POSTGRES_MIGRATIONS, Migration, pending

__all__ = ["MIGRATION_LOCK", "PostgresStore", "apply_migrations"]

_R = TypeVar("_R", Tenant, ProviderKeyRecord, UsageRecord)

MIGRATION_LOCK = 0x62796F6B_6D696772  # "byokmigr": the advisory lock key of schema migrations

_KEY_FIELDS = tuple(f.name for f in dataclasses.fields(ProviderKeyRecord))
_USAGE_FIELDS = tuple(f.name for f in dataclasses.fields(UsageRecord))


def _placeholders(count: int) -> str:
    return ", ".join(f"${n}" for n in range(1, count + 1))


# Column lists come from the record types, so a new field cannot be silently left unstored.
_SELECT_KEYS = f"SELECT {', '.join(_KEY_FIELDS)} FROM provider_keys"  # noqa: S608 -- constant
_INSERT_KEY = (
    f"INSERT INTO provider_keys ({', '.join(_KEY_FIELDS)}) "  # noqa: S608 -- constant
    f"VALUES ({_placeholders(len(_KEY_FIELDS))})"
)
_SELECT_USAGE = f"SELECT {', '.join(_USAGE_FIELDS)} FROM usage"  # noqa: S608 -- constant
_INSERT_USAGE = (
    f"INSERT INTO usage ({', '.join(_USAGE_FIELDS)}) "  # noqa: S608 -- constant
    f"VALUES ({_placeholders(len(_USAGE_FIELDS))}) ON CONFLICT (request_id) DO NOTHING"
)
# Trusted SQL for each grouping; user input only ever selects one of these.
_GROUP_SQL = {
    "provider": "provider",
    "model": "model",
    "attribution": "attribution",
    "day": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
}


def _encode(value: object, name: str) -> object:
    """A record or ``KeyChanges`` value as asyncpg takes it (naive datetimes refused)."""
    if isinstance(value, datetime):
        require_aware(value, name)
    if isinstance(value, KeyStatus):
        return value.value
    return value


def _encode_record(record: object, names: Sequence[str]) -> tuple[object, ...]:
    return tuple(_encode(getattr(record, name), name) for name in names)


def _decode(cls: type[_R], row: asyncpg.Record) -> _R:
    values: dict[str, Any] = dict(row.items())
    for name, value in values.items():
        if isinstance(value, datetime):
            values[name] = value.astimezone(UTC)
    if "status" in values:
        values["status"] = KeyStatus(values["status"])
    return cls(**values)


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError("limit must be at least 1")


def _window(
    tenant_id: str, since: datetime | None, until: datetime | None
) -> tuple[str, list[object]]:
    """A WHERE clause (trusted text) and its parameters for a tenant's ledger in [since, until)."""
    where, params = "tenant_id = $1", list[object]([tenant_id])
    if since is not None:
        require_aware(since, "since")
        params.append(since)
        where += f" AND created_at >= ${len(params)}"
    if until is not None:
        require_aware(until, "until")
        params.append(until)
        where += f" AND created_at < ${len(params)}"
    return where, params


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


class PostgresStore:
    """A ``KeyStore`` on PostgreSQL; see ``KeyStore`` for what each method promises.

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

    async def schema_version(self) -> int:
        """The schema version of the database (for diagnostics and tests)."""
        pool = await self._connected()
        return int(await pool.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))

    # Tenants and gateway API keys

    async def create_tenant(self, tenant: Tenant, key_hash: str) -> None:
        row = _encode_record(tenant, ("id", "name", "created_at", "revoked_at"))
        pool = await self._connected()
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO tenants (id, name, created_at, revoked_at) "
                    "VALUES ($1, $2, $3, $4)",
                    *row,
                )
                await conn.execute(
                    "INSERT INTO gateway_keys (key_hash, tenant_id, created_at) "
                    "VALUES ($1, $2, $3)",
                    key_hash,
                    tenant.id,
                    tenant.created_at,
                )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "tenants_active_name":
                raise ValueError(f"the tenant name {tenant.name!r} is taken") from None
            raise ValueError("a tenant with this id or gateway key hash exists") from None

    async def list_tenants(self) -> list[Tenant]:
        pool = await self._connected()
        rows = await pool.fetch(
            "SELECT id, name, created_at, revoked_at FROM tenants ORDER BY created_at, id"
        )
        return [_decode(Tenant, row) for row in rows]

    async def revoke_tenant(self, name: str, when: datetime) -> bool:
        require_aware(when, "when")
        pool = await self._connected()
        async with pool.acquire() as conn, conn.transaction():
            tenant_id = await conn.fetchval(
                "UPDATE tenants SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL "
                "RETURNING id",
                when,
                name,
            )
            if tenant_id is None:
                return False
            await conn.execute(
                "UPDATE gateway_keys SET revoked_at = $1 "
                "WHERE tenant_id = $2 AND revoked_at IS NULL",
                when,
                tenant_id,
            )
        return True

    async def add_gateway_key(self, tenant_id: str, key_hash: str, when: datetime) -> None:
        require_aware(when, "when")
        pool = await self._connected()
        try:
            await pool.execute(
                "INSERT INTO gateway_keys (key_hash, tenant_id, created_at) VALUES ($1, $2, $3)",
                key_hash,
                tenant_id,
                when,
            )
        except asyncpg.ForeignKeyViolationError:
            raise ValueError("no tenant with this id") from None
        except asyncpg.UniqueViolationError:
            raise ValueError("this gateway key hash exists") from None

    async def tenant_for_key_hash(self, key_hash: str) -> str | None:
        pool = await self._connected()
        tenant_id = await pool.fetchval(
            "SELECT t.id FROM gateway_keys g JOIN tenants t ON t.id = g.tenant_id "
            "WHERE g.key_hash = $1 AND g.revoked_at IS NULL AND t.revoked_at IS NULL",
            key_hash,
        )
        return None if tenant_id is None else str(tenant_id)

    # Provider keys

    async def insert_key(self, record: ProviderKeyRecord) -> None:
        values = _encode_record(record, _KEY_FIELDS)
        pool = await self._connected()
        try:
            await pool.execute(_INSERT_KEY, *values)
        except asyncpg.UniqueViolationError:
            raise ValueError("a provider key with this id exists") from None

    async def get_key(self, tenant_id: str, key_id: str) -> ProviderKeyRecord | None:
        pool = await self._connected()
        row = await pool.fetchrow(
            _SELECT_KEYS + " WHERE id = $1 AND tenant_id = $2", key_id, tenant_id
        )
        return None if row is None else _decode(ProviderKeyRecord, row)

    async def list_keys(
        self, tenant_id: str, provider: str | None = None
    ) -> list[ProviderKeyRecord]:
        where, params = " WHERE tenant_id = $1", [tenant_id]
        if provider is not None:
            where, params = where + " AND provider = $2", [tenant_id, provider]
        order = " ORDER BY provider, priority, created_at, id"
        pool = await self._connected()
        rows = await pool.fetch(_SELECT_KEYS + where + order, *params)
        return [_decode(ProviderKeyRecord, row) for row in rows]

    async def count_keys(self, tenant_id: str) -> int:
        pool = await self._connected()
        sql = "SELECT count(*) FROM provider_keys WHERE tenant_id = $1"
        return int(await pool.fetchval(sql, tenant_id))

    async def update_key(
        self, tenant_id: str, key_id: str, changes: KeyChanges, when: datetime
    ) -> ProviderKeyRecord | None:
        values = {name: _encode(v, name) for name, v in validate_key_changes(changes).items()}
        require_aware(when, "when")
        values["updated_at"] = when
        # Column names come from KEY_CHANGE_FIELDS (validated above), never from the caller.
        assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(values, start=1))
        n = len(values)
        pool = await self._connected()
        row = await pool.fetchrow(
            f"UPDATE provider_keys SET {assignments} "  # noqa: S608 -- whitelisted names
            f"WHERE id = ${n + 1} AND tenant_id = ${n + 2} RETURNING {', '.join(_KEY_FIELDS)}",
            *values.values(),
            key_id,
            tenant_id,
        )
        return None if row is None else _decode(ProviderKeyRecord, row)

    async def delete_key(self, tenant_id: str, key_id: str) -> bool:
        pool = await self._connected()
        status = await pool.execute(
            "DELETE FROM provider_keys WHERE id = $1 AND tenant_id = $2", key_id, tenant_id
        )
        return _rowcount(status) > 0

    async def iter_key_batch(self, after_id: str | None, limit: int) -> list[ProviderKeyRecord]:
        _check_limit(limit)
        pool = await self._connected()
        if after_id is None:
            rows = await pool.fetch(_SELECT_KEYS + " ORDER BY id LIMIT $1", limit)
        else:
            sql = _SELECT_KEYS + " WHERE id > $1 ORDER BY id LIMIT $2"
            rows = await pool.fetch(sql, after_id, limit)
        return [_decode(ProviderKeyRecord, row) for row in rows]

    async def replace_ciphertext(self, key_id: str, old: bytes, new: bytes) -> bool:
        pool = await self._connected()
        status = await pool.execute(
            "UPDATE provider_keys SET ciphertext = $1 WHERE id = $2 AND ciphertext = $3",
            new,
            key_id,
            old,
        )
        return _rowcount(status) > 0

    # Usage ledger

    async def record_usage(self, rows: Sequence[UsageRecord]) -> None:
        # Encoded before the transaction: a bad row (naive datetime) stores none of the batch.
        encoded = [_encode_record(row, _USAGE_FIELDS) for row in rows]
        if not encoded:
            return
        pool = await self._connected()
        async with pool.acquire() as conn, conn.transaction():
            # One statement per row, in order: a request id repeated within the batch keeps
            # its first row, as across batches.
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
        group = "NULL::text" if group_by is None else _GROUP_SQL[group_by]
        # Without GROUP BY an aggregate query returns exactly one row: the grand total.
        tail = "" if group_by is None else " GROUP BY grp ORDER BY grp"
        pool = await self._connected()
        rows = await pool.fetch(
            f"SELECT {group} AS grp, count(*), coalesce(sum(prompt_tokens), 0), "  # noqa: S608 -- trusted fragments
            "coalesce(sum(completion_tokens), 0), coalesce(sum(cost_usd), 0), "
            f"count(*) FILTER (WHERE cost_usd IS NULL) FROM usage WHERE {where}{tail}",
            *params,
        )
        return [
            UsageTotal(row[0], int(row[1]), int(row[2]), int(row[3]), Decimal(row[4]), int(row[5]))
            for row in rows
        ]

    async def list_usage(
        self, tenant_id: str, *, limit: int = 100, since: datetime | None = None
    ) -> list[UsageRecord]:
        _check_limit(limit)
        where, params = _window(tenant_id, since, None)
        pool = await self._connected()
        rows = await pool.fetch(
            f"{_SELECT_USAGE} WHERE {where} "
            f"ORDER BY created_at DESC, seq DESC LIMIT ${len(params) + 1}",
            *params,
            limit,
        )
        return [_decode(UsageRecord, row) for row in rows]

    async def key_spend(self, key_id: str, since: datetime) -> Decimal:
        require_aware(since, "since")
        pool = await self._connected()
        spent = await pool.fetchval(
            "SELECT coalesce(sum(cost_usd), 0) FROM usage WHERE key_id = $1 AND created_at >= $2",
            key_id,
            since,
        )
        return Decimal(spent)


def _rowcount(status: str) -> int:
    # asyncpg returns the command tag, e.g. "DELETE 1" or "UPDATE 0".
    return int(status.rsplit(" ", 1)[-1])


def _describe(exc: BaseException, url: str) -> str:
    """The reason a connection failed, never repeating the password even if a driver did."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    try:
        from urllib.parse import urlsplit

        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text

"""The shared SQL of tenants, gateway API keys and provider keys (see ``storage.sql``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from byok_middleware.storage.base import (
    KeyChanges,
    TooManyKeys,
    check_limit,
    validate_key_changes,
)
from byok_middleware.storage.records import GatewayKeyInfo, ProviderKeyRecord, Tenant
from byok_middleware.storage.sql import KEY_COLUMNS, TENANT_COLUMNS, Row, Session, SQLBase

__all__ = ["KeySQL", "TenantSQL"]

# Constant statements built from constant column lists.
_SELECT_TENANTS = f"SELECT {', '.join(TENANT_COLUMNS)} FROM tenants"  # noqa: S608
_INSERT_TENANT = f"INSERT INTO tenants ({', '.join(TENANT_COLUMNS)}) VALUES (?, ?, ?, ?)"  # noqa: S608
_GATEWAY_KEY_COLUMNS = ("id", "key_hash", "tenant_id", "prefix", "created_at")
_INSERT_GATEWAY_KEY = (
    f"INSERT INTO gateway_keys ({', '.join(_GATEWAY_KEY_COLUMNS)}) VALUES (?, ?, ?, ?, ?)"  # noqa: S608
)
_SELECT_GATEWAY_KEYS = (
    "SELECT id, tenant_id, prefix, created_at, last_used_at, revoked_at FROM gateway_keys"
)
_SELECT_KEYS = f"SELECT {', '.join(KEY_COLUMNS)} FROM provider_keys"  # noqa: S608
_INSERT_KEY = (
    f"INSERT INTO provider_keys ({', '.join(KEY_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(KEY_COLUMNS))})"
)
_KEY_ORDER = " ORDER BY provider, priority, created_at, id"
_COUNT_KEYS = "SELECT count(*) FROM provider_keys WHERE tenant_id = ?"
# What each backend calls the partial unique index on active tenant names.
_TENANT_NAME = frozenset({"tenants_active_name", "tenants.name"})


def new_gateway_key_id() -> str:
    return "gk_" + uuid.uuid4().hex[:24]


class TenantSQL(SQLBase):
    """Tenants and their gateway keys."""

    async def create_tenant(self, tenant: Tenant, key_hash: str, *, prefix: str = "") -> None:
        row = self._record_params(tenant, TENANT_COLUMNS)
        gateway_key = (new_gateway_key_id(), key_hash, tenant.id, prefix, row[2])
        try:
            async with self._transaction() as tx:
                await tx.execute(_INSERT_TENANT, row)
                await tx.execute(_INSERT_GATEWAY_KEY, gateway_key)
        except self._constraint_errors as exc:
            if self._violation(exc).target in _TENANT_NAME:
                raise ValueError(f"the tenant name {tenant.name!r} is taken") from None
            raise ValueError("a tenant with this id or gateway key hash exists") from None

    async def list_tenants(self) -> list[Tenant]:
        async with self._session() as session:
            rows = await session.fetch(_SELECT_TENANTS + " ORDER BY created_at, id")
        return [self._record(Tenant, row) for row in rows]

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        async with self._session() as session:
            rows = await session.fetch(_SELECT_TENANTS + " WHERE id = ?", (tenant_id,))
        return self._record(Tenant, rows[0]) if rows else None

    async def revoke_tenant(self, name: str, when: datetime) -> bool:
        return await self._revoke_tenant("name", name, when)

    async def revoke_tenant_by_id(self, tenant_id: str, when: datetime) -> bool:
        return await self._revoke_tenant("id", tenant_id, when)

    async def _revoke_tenant(self, column: str, value: str, when: datetime) -> bool:
        revoked = self._encode(when, "when")
        async with self._transaction() as tx:
            # The partial unique index allows at most one active tenant of a name.
            sql = f"SELECT id FROM tenants WHERE {column} = ? AND revoked_at IS NULL"  # noqa: S608 -- "id" or "name"
            rows = await tx.fetch(sql, (value,))
            if not rows:
                return False
            tenant_id = rows[0]["id"]
            # "AND revoked_at IS NULL" again: of two racing revocations only one reports True.
            sql = "UPDATE tenants SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"
            if await tx.execute(sql, (revoked, tenant_id)) == 0:
                return False
            await tx.execute(
                "UPDATE gateway_keys SET revoked_at = ? WHERE tenant_id = ? AND revoked_at IS NULL",
                (revoked, tenant_id),
            )
        return True

    async def add_gateway_key(
        self, tenant_id: str, key_hash: str, when: datetime, *, prefix: str = ""
    ) -> GatewayKeyInfo:
        key_id, created = new_gateway_key_id(), self._encode(when, "when")
        try:
            async with self._session() as session:
                await session.execute(
                    _INSERT_GATEWAY_KEY, (key_id, key_hash, tenant_id, prefix, created)
                )
        except self._constraint_errors as exc:
            if self._violation(exc).kind == "foreign_key":
                raise ValueError("no tenant with this id") from None
            raise ValueError("this gateway key hash exists") from None
        async with self._session() as session:
            rows = await session.fetch(_SELECT_GATEWAY_KEYS + " WHERE id = ?", (key_id,))
        return self._gateway_key(rows[0])

    async def list_gateway_keys(self, tenant_id: str) -> list[GatewayKeyInfo]:
        sql = _SELECT_GATEWAY_KEYS + " WHERE tenant_id = ? ORDER BY created_at, id"
        async with self._session() as session:
            rows = await session.fetch(sql, (tenant_id,))
        return [self._gateway_key(row) for row in rows]

    async def revoke_gateway_key(self, tenant_id: str, key_id: str, when: datetime) -> bool:
        sql = (
            "UPDATE gateway_keys SET revoked_at = ? "
            "WHERE id = ? AND tenant_id = ? AND revoked_at IS NULL"
        )
        async with self._session() as session:
            return await session.execute(sql, (self._encode(when, "when"), key_id, tenant_id)) > 0

    async def touch_gateway_key(self, key_hash: str, when: datetime) -> None:
        stamp = self._encode(when, "when")
        sql = (
            "UPDATE gateway_keys SET last_used_at = ? "
            "WHERE key_hash = ? AND (last_used_at IS NULL OR last_used_at < ?)"
        )
        async with self._session() as session:
            await session.execute(sql, (stamp, key_hash, stamp))

    def _gateway_key(self, row: Row) -> GatewayKeyInfo:
        values = self._values(row)
        status = "active" if values.pop("revoked_at") is None else "revoked"
        return GatewayKeyInfo(**values, status=status)

    async def tenant_for_key_hash(self, key_hash: str) -> str | None:
        async with self._session() as session:
            rows = await session.fetch(
                "SELECT t.id FROM gateway_keys g JOIN tenants t ON t.id = g.tenant_id "
                "WHERE g.key_hash = ? AND g.revoked_at IS NULL AND t.revoked_at IS NULL",
                (key_hash,),
            )
        return str(rows[0]["id"]) if rows else None


class KeySQL(SQLBase):
    """Provider keys."""

    async def insert_key(self, record: ProviderKeyRecord, *, max_keys: int | None = None) -> None:
        values = self._record_params(record, KEY_COLUMNS)
        try:
            async with self._transaction() as tx:
                if max_keys is not None:
                    await self._check_room(tx, record.tenant_id, max_keys)
                await tx.execute(_INSERT_KEY, values)
        except self._constraint_errors:
            raise ValueError("a provider key with this id exists") from None

    async def _check_room(self, tx: Session, tenant_id: str, max_keys: int) -> None:
        # The lock (PostgreSQL) or the write transaction itself (SQLite) holds other inserts
        # for this tenant back until this one commits, so the count cannot go stale.
        if self.dialect.tenant_lock:
            await tx.execute(self.dialect.tenant_lock, (tenant_id,))
        rows = await tx.fetch(_COUNT_KEYS, (tenant_id,))
        if int(rows[0][0]) >= max_keys:
            raise TooManyKeys(max_keys)

    async def get_key(self, tenant_id: str, key_id: str) -> ProviderKeyRecord | None:
        sql = _SELECT_KEYS + " WHERE id = ? AND tenant_id = ?"
        async with self._session() as session:
            rows = await session.fetch(sql, (key_id, tenant_id))
        return self._record(ProviderKeyRecord, rows[0]) if rows else None

    async def list_keys(
        self, tenant_id: str, provider: str | None = None
    ) -> list[ProviderKeyRecord]:
        params: tuple[object, ...]
        if provider is None:
            sql, params = _SELECT_KEYS + " WHERE tenant_id = ?" + _KEY_ORDER, (tenant_id,)
        else:
            sql = _SELECT_KEYS + " WHERE tenant_id = ? AND provider = ?" + _KEY_ORDER
            params = (tenant_id, provider)
        async with self._session() as session:
            rows = await session.fetch(sql, params)
        return [self._record(ProviderKeyRecord, row) for row in rows]

    async def count_keys(self, tenant_id: str) -> int:
        async with self._session() as session:
            rows = await session.fetch(_COUNT_KEYS, (tenant_id,))
        return int(rows[0][0])

    async def update_key(
        self, tenant_id: str, key_id: str, changes: KeyChanges, when: datetime
    ) -> ProviderKeyRecord | None:
        values = {name: self._encode(v, name) for name, v in validate_key_changes(changes).items()}
        values["updated_at"] = self._encode(when, "when")
        # Column names come from KEY_CHANGE_FIELDS (validated above), never from the caller.
        assignments = ", ".join(f"{name} = ?" for name in values)
        sql = f"UPDATE provider_keys SET {assignments} WHERE id = ? AND tenant_id = ?"  # noqa: S608
        async with self._transaction() as tx:
            if await tx.execute(sql, (*values.values(), key_id, tenant_id)) == 0:
                return None
            rows = await tx.fetch(_SELECT_KEYS + " WHERE id = ?", (key_id,))
        return self._record(ProviderKeyRecord, rows[0])

    async def delete_key(self, tenant_id: str, key_id: str) -> bool:
        sql = "DELETE FROM provider_keys WHERE id = ? AND tenant_id = ?"
        async with self._session() as session:
            return await session.execute(sql, (key_id, tenant_id)) > 0

    async def iter_key_batch(self, after_id: str | None, limit: int) -> list[ProviderKeyRecord]:
        check_limit(limit)
        # Two statements rather than "? IS NULL OR id > ?", which would defeat the index range.
        params: tuple[object, ...]
        if after_id is None:
            sql, params = _SELECT_KEYS + " ORDER BY id LIMIT ?", (limit,)
        else:
            sql, params = _SELECT_KEYS + " WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        async with self._session() as session:
            rows = await session.fetch(sql, params)
        return [self._record(ProviderKeyRecord, row) for row in rows]

    async def replace_ciphertext(self, key_id: str, old: bytes, new: bytes) -> bool:
        sql = "UPDATE provider_keys SET ciphertext = ? WHERE id = ? AND ciphertext = ?"
        async with self._session() as session:
            return await session.execute(sql, (new, key_id, old)) > 0

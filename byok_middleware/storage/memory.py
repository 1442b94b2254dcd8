"""An in-process ``KeyStore`` on plain dicts, for tests and single-process demos.

No method awaits anything, so each runs to completion before another coroutine can start: that is
what makes it safe for concurrent coroutines without a lock. It is not thread-safe, and nothing
survives the process.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from byok_middleware.storage.base import (
    GROUP_BY,
    KeyChanges,
    ProviderKeyRecord,
    Tenant,
    UsageRecord,
    UsageTotal,
    require_aware,
    validate_key_changes,
)

__all__ = ["MemoryStore"]


@dataclasses.dataclass(frozen=True, slots=True)
class _GatewayKey:
    tenant_id: str
    created_at: datetime
    revoked_at: datetime | None = None


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _key_order(record: ProviderKeyRecord) -> tuple[str, int, datetime, str]:
    return (record.provider, record.priority, record.created_at, record.id)


def _group_key(group_by: str) -> Callable[[UsageRecord], str]:
    if group_by == "day":
        return lambda row: row.created_at.date().isoformat()
    return lambda row: str(getattr(row, group_by))


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError("limit must be at least 1")


class MemoryStore:
    """A ``KeyStore`` held in dicts; see ``KeyStore`` for what each method promises."""

    def __init__(self) -> None:
        self._tenants: dict[str, Tenant] = {}
        self._gateway_keys: dict[str, _GatewayKey] = {}
        self._keys: dict[str, ProviderKeyRecord] = {}
        self._usage: dict[str, UsageRecord] = {}  # by request_id, in insertion order

    def __repr__(self) -> str:
        return f"MemoryStore(tenants={len(self._tenants)}, keys={len(self._keys)})"

    async def open(self) -> None:
        """Nothing to connect; present for the Protocol."""

    async def close(self) -> None:
        """Nothing to release; the data stays until the object is dropped."""

    # Tenants and gateway API keys

    async def create_tenant(self, tenant: Tenant, key_hash: str) -> None:
        require_aware(tenant.created_at, "created_at")
        require_aware(tenant.revoked_at, "revoked_at")
        if tenant.revoked_at is None and any(
            t.name == tenant.name and t.revoked_at is None for t in self._tenants.values()
        ):
            raise ValueError(f"the tenant name {tenant.name!r} is taken")
        if tenant.id in self._tenants or key_hash in self._gateway_keys:
            raise ValueError("a tenant with this id or gateway key hash exists")
        stored = dataclasses.replace(
            tenant, created_at=_utc(tenant.created_at), revoked_at=_utc_or_none(tenant.revoked_at)
        )
        self._tenants[tenant.id] = stored
        self._gateway_keys[key_hash] = _GatewayKey(tenant.id, stored.created_at)

    async def list_tenants(self) -> list[Tenant]:
        return sorted(self._tenants.values(), key=lambda t: (t.created_at, t.id))

    async def revoke_tenant(self, name: str, when: datetime) -> bool:
        require_aware(when, "when")
        tenant = next(
            (t for t in self._tenants.values() if t.name == name and t.revoked_at is None), None
        )
        if tenant is None:
            return False
        when = _utc(when)
        self._tenants[tenant.id] = dataclasses.replace(tenant, revoked_at=when)
        for key_hash, gateway_key in self._gateway_keys.items():
            if gateway_key.tenant_id == tenant.id and gateway_key.revoked_at is None:
                self._gateway_keys[key_hash] = dataclasses.replace(gateway_key, revoked_at=when)
        return True

    async def add_gateway_key(self, tenant_id: str, key_hash: str, when: datetime) -> None:
        require_aware(when, "when")
        if tenant_id not in self._tenants:
            raise ValueError("no tenant with this id")
        if key_hash in self._gateway_keys:
            raise ValueError("this gateway key hash exists")
        self._gateway_keys[key_hash] = _GatewayKey(tenant_id, _utc(when))

    async def tenant_for_key_hash(self, key_hash: str) -> str | None:
        gateway_key = self._gateway_keys.get(key_hash)
        if gateway_key is None or gateway_key.revoked_at is not None:
            return None
        tenant = self._tenants.get(gateway_key.tenant_id)
        if tenant is None or tenant.revoked_at is not None:
            return None
        return tenant.id

    # Provider keys

    async def insert_key(self, record: ProviderKeyRecord) -> None:
        for name in ("created_at", "updated_at", "last_used_at", "cooldown_until"):
            require_aware(getattr(record, name), name)
        if record.id in self._keys:
            raise ValueError("a provider key with this id exists")
        self._keys[record.id] = dataclasses.replace(
            record,
            created_at=_utc(record.created_at),
            updated_at=_utc(record.updated_at),
            last_used_at=_utc_or_none(record.last_used_at),
            cooldown_until=_utc_or_none(record.cooldown_until),
        )

    def _own_key(self, tenant_id: str, key_id: str) -> ProviderKeyRecord | None:
        record = self._keys.get(key_id)
        # Another tenant's id looks exactly like an unknown one.
        return record if record is not None and record.tenant_id == tenant_id else None

    async def get_key(self, tenant_id: str, key_id: str) -> ProviderKeyRecord | None:
        return self._own_key(tenant_id, key_id)

    async def list_keys(
        self, tenant_id: str, provider: str | None = None
    ) -> list[ProviderKeyRecord]:
        rows = [
            r
            for r in self._keys.values()
            if r.tenant_id == tenant_id and (provider is None or r.provider == provider)
        ]
        return sorted(rows, key=_key_order)

    async def count_keys(self, tenant_id: str) -> int:
        return sum(1 for r in self._keys.values() if r.tenant_id == tenant_id)

    async def update_key(
        self, tenant_id: str, key_id: str, changes: KeyChanges, when: datetime
    ) -> ProviderKeyRecord | None:
        checked = validate_key_changes(changes)
        require_aware(when, "when")
        record = self._own_key(tenant_id, key_id)
        if record is None:
            return None
        fields: dict[str, Any] = dict(checked)
        for name in ("last_used_at", "cooldown_until"):
            value = fields.get(name)
            if isinstance(value, datetime):
                fields[name] = _utc(value)
        updated = dataclasses.replace(record, updated_at=_utc(when), **fields)
        self._keys[key_id] = updated
        return updated

    async def delete_key(self, tenant_id: str, key_id: str) -> bool:
        if self._own_key(tenant_id, key_id) is None:
            return False
        del self._keys[key_id]
        return True

    async def iter_key_batch(self, after_id: str | None, limit: int) -> list[ProviderKeyRecord]:
        _check_limit(limit)
        ids = sorted(k for k in self._keys if after_id is None or k > after_id)
        return [self._keys[k] for k in ids[:limit]]

    async def replace_ciphertext(self, key_id: str, old: bytes, new: bytes) -> bool:
        record = self._keys.get(key_id)
        if record is None or record.ciphertext != old:
            return False
        self._keys[key_id] = dataclasses.replace(record, ciphertext=new)
        return True

    # Usage ledger

    async def record_usage(self, rows: Sequence[UsageRecord]) -> None:
        # Check the whole batch first: like a transaction, a bad row stores nothing.
        for row in rows:
            require_aware(row.created_at, "created_at")
        for row in rows:
            if row.request_id not in self._usage:
                self._usage[row.request_id] = dataclasses.replace(
                    row, created_at=_utc(row.created_at)
                )

    def _window(
        self, tenant_id: str, since: datetime | None, until: datetime | None
    ) -> list[UsageRecord]:
        require_aware(since, "since")
        require_aware(until, "until")
        return [
            row
            for row in self._usage.values()
            if row.tenant_id == tenant_id
            and (since is None or row.created_at >= since)
            and (until is None or row.created_at < until)
        ]

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
        rows = self._window(tenant_id, since, until)
        groups: dict[str | None, list[UsageRecord]] = defaultdict(list)
        if group_by is None:
            groups[None] = rows  # the grand total exists even when it is all zeros
        else:
            group_of = _group_key(group_by)
            for row in rows:
                groups[group_of(row)].append(row)
        return [
            UsageTotal(
                group=group,
                requests=len(members),
                prompt_tokens=sum(r.prompt_tokens for r in members),
                completion_tokens=sum(r.completion_tokens for r in members),
                cost_usd=sum((r.cost_usd for r in members if r.cost_usd is not None), Decimal(0)),
                unpriced_requests=sum(1 for r in members if r.cost_usd is None),
            )
            for group, members in sorted(groups.items(), key=lambda item: item[0] or "")
        ]

    async def list_usage(
        self, tenant_id: str, *, limit: int = 100, since: datetime | None = None
    ) -> list[UsageRecord]:
        _check_limit(limit)
        rows = self._window(tenant_id, since, None)
        # Newest first; among equal times the later insert first (sorted() is stable).
        return sorted(reversed(rows), key=lambda r: r.created_at, reverse=True)[:limit]

    async def key_spend(self, key_id: str, since: datetime) -> Decimal:
        require_aware(since, "since")
        return sum(
            (
                r.cost_usd
                for r in self._usage.values()
                if r.key_id == key_id and r.created_at >= since and r.cost_usd is not None
            ),
            Decimal(0),
        )

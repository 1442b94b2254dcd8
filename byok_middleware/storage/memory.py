"""An in-process ``AdminStore`` on plain dicts, for tests and single-process demos.

No method awaits anything, so each runs to completion before another coroutine can start: that is
what makes it safe for concurrent coroutines without a lock. It is not thread-safe, and nothing
survives the process.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from byok_middleware.storage.base import (
    KeyChanges,
    TooManyKeys,
    check_limit,
    check_policy,
    require_aware,
    validate_key_changes,
)
from byok_middleware.storage.memory_ledger import MemoryLedger
from byok_middleware.storage.migrations import MIGRATIONS, latest_version
from byok_middleware.storage.records import (
    GatewayKeyInfo,
    ProviderKeyRecord,
    Tenant,
    TenantPolicy,
    WebhookConfig,
    WebhookDelivery,
)
from byok_middleware.storage.sql_keys import new_gateway_key_id
from byok_middleware.storage.sql_responses import MemoryResponses
from byok_middleware.storage.sql_router import MemoryRouter

__all__ = ["MemoryStore"]


@dataclasses.dataclass(frozen=True, slots=True)
class _GatewayKey:
    id: str
    tenant_id: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None

    def info(self) -> GatewayKeyInfo:
        status = "active" if self.revoked_at is None else "revoked"
        return GatewayKeyInfo(
            self.id, self.tenant_id, self.prefix, self.created_at, self.last_used_at, status
        )


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _key_order(record: ProviderKeyRecord) -> tuple[str, int, datetime, str]:
    return (record.provider, record.priority, record.created_at, record.id)


class MemoryStore(MemoryLedger, MemoryResponses, MemoryRouter):
    """An ``AdminStore`` held in dicts; see ``AdminStore`` for what each method promises."""

    def __init__(self) -> None:
        super().__init__()
        MemoryResponses.__init__(self)  # MemoryLedger does not chain __init__
        MemoryRouter.__init__(self)
        self._tenants: dict[str, Tenant] = {}
        self._gateway_keys: dict[str, _GatewayKey] = {}  # by key hash
        self._keys: dict[str, ProviderKeyRecord] = {}
        self._policies: dict[str, TenantPolicy] = {}
        self._webhooks: dict[str, WebhookConfig] = {}
        self._deliveries: dict[str, WebhookDelivery] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(tenants={len(self._tenants)}, keys={len(self._keys)})"

    async def open(self) -> None:
        """Nothing to connect; present for the Protocol."""

    async def close(self) -> None:
        """Nothing to release; the data stays until the object is dropped."""

    async def schema_version(self) -> int:
        """The latest version: a memory store always has the current schema."""
        return latest_version(MIGRATIONS)

    # Tenants and gateway API keys

    async def create_tenant(self, tenant: Tenant, key_hash: str, *, prefix: str = "") -> None:
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
        self._gateway_keys[key_hash] = _GatewayKey(
            new_gateway_key_id(), tenant.id, prefix, stored.created_at
        )

    async def list_tenants(self) -> list[Tenant]:
        return sorted(self._tenants.values(), key=lambda t: (t.created_at, t.id))

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        return self._tenants.get(tenant_id)

    async def revoke_tenant(self, name: str, when: datetime) -> bool:
        tenant = next(
            (t for t in self._tenants.values() if t.name == name and t.revoked_at is None), None
        )
        return self._revoke_tenant(tenant, when)

    async def revoke_tenant_by_id(self, tenant_id: str, when: datetime) -> bool:
        return self._revoke_tenant(self._tenants.get(tenant_id), when)

    def _revoke_tenant(self, tenant: Tenant | None, when: datetime) -> bool:
        require_aware(when, "when")
        if tenant is None or tenant.revoked_at is not None:
            return False
        when = _utc(when)
        self._tenants[tenant.id] = dataclasses.replace(tenant, revoked_at=when)
        for key_hash, gateway_key in self._gateway_keys.items():
            if gateway_key.tenant_id == tenant.id and gateway_key.revoked_at is None:
                self._gateway_keys[key_hash] = dataclasses.replace(gateway_key, revoked_at=when)
        return True

    async def add_gateway_key(
        self, tenant_id: str, key_hash: str, when: datetime, *, prefix: str = ""
    ) -> GatewayKeyInfo:
        require_aware(when, "when")
        if tenant_id not in self._tenants:
            raise ValueError("no tenant with this id")
        if key_hash in self._gateway_keys:
            raise ValueError("this gateway key hash exists")
        gateway_key = _GatewayKey(new_gateway_key_id(), tenant_id, prefix, _utc(when))
        self._gateway_keys[key_hash] = gateway_key
        return gateway_key.info()

    async def list_gateway_keys(self, tenant_id: str) -> list[GatewayKeyInfo]:
        keys = [k for k in self._gateway_keys.values() if k.tenant_id == tenant_id]
        return [k.info() for k in sorted(keys, key=lambda k: (k.created_at, k.id))]

    async def revoke_gateway_key(self, tenant_id: str, key_id: str, when: datetime) -> bool:
        require_aware(when, "when")
        for key_hash, k in self._gateway_keys.items():
            if k.id == key_id and k.tenant_id == tenant_id and k.revoked_at is None:
                self._gateway_keys[key_hash] = dataclasses.replace(k, revoked_at=_utc(when))
                return True
        return False

    async def touch_gateway_key(self, key_hash: str, when: datetime) -> None:
        require_aware(when, "when")
        k = self._gateway_keys.get(key_hash)
        if k is not None and (k.last_used_at is None or k.last_used_at < when):
            self._gateway_keys[key_hash] = dataclasses.replace(k, last_used_at=_utc(when))

    async def tenant_for_key_hash(self, key_hash: str) -> str | None:
        gateway_key = self._gateway_keys.get(key_hash)
        if gateway_key is None or gateway_key.revoked_at is not None:
            return None
        tenant = self._tenants.get(gateway_key.tenant_id)
        if tenant is None or tenant.revoked_at is not None:
            return None
        return tenant.id

    # Provider keys

    async def insert_key(self, record: ProviderKeyRecord, *, max_keys: int | None = None) -> None:
        for name in ("created_at", "updated_at", "last_used_at", "cooldown_until"):
            require_aware(getattr(record, name), name)
        if max_keys is not None and self._count(record.tenant_id) >= max_keys:
            raise TooManyKeys(max_keys)
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
        return self._count(tenant_id)

    def _count(self, tenant_id: str) -> int:
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
        check_limit(limit)
        ids = sorted(k for k in self._keys if after_id is None or k > after_id)
        return [self._keys[k] for k in ids[:limit]]

    async def replace_ciphertext(self, key_id: str, old: bytes, new: bytes) -> bool:
        record = self._keys.get(key_id)
        if record is None or record.ciphertext != old:
            return False
        self._keys[key_id] = dataclasses.replace(record, ciphertext=new)
        return True

    # Tenant policies and webhooks

    async def get_policy(self, tenant_id: str) -> TenantPolicy | None:
        return self._policies.get(tenant_id)

    async def put_policy(self, policy: TenantPolicy) -> None:
        check_policy(policy)
        updated = policy.updated_at
        self._policies[policy.tenant_id] = dataclasses.replace(
            policy, updated_at=_utc_or_none(updated)
        )

    async def list_policies(self) -> list[TenantPolicy]:
        return [self._policies[t] for t in sorted(self._policies)]

    async def get_webhook(self, tenant_id: str) -> WebhookConfig | None:
        return self._webhooks.get(tenant_id)

    async def put_webhook(self, config: WebhookConfig) -> None:
        require_aware(config.updated_at, "updated_at")
        stored = dataclasses.replace(config, updated_at=_utc(config.updated_at))
        self._webhooks[config.tenant_id] = stored

    async def delete_webhook(self, tenant_id: str) -> bool:
        return self._webhooks.pop(tenant_id, None) is not None

    async def record_delivery(self, delivery: WebhookDelivery) -> None:
        require_aware(delivery.created_at, "created_at")
        if delivery.id in self._deliveries:
            raise ValueError("a webhook delivery with this id exists")
        stored = dataclasses.replace(delivery, created_at=_utc(delivery.created_at))
        self._deliveries[delivery.id] = stored

    async def list_deliveries(self, tenant_id: str, limit: int = 50) -> list[WebhookDelivery]:
        check_limit(limit)
        rows = [d for d in self._deliveries.values() if d.tenant_id == tenant_id]
        return sorted(rows, key=lambda d: (d.created_at, d.id), reverse=True)[:limit]

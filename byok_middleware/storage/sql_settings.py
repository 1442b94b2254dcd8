"""The shared SQL of tenant policies and webhooks (see ``storage.sql``).

Tuples of names (a policy's ``platform_models``, a webhook's ``events``) are stored as JSON
arrays in a TEXT column on every database.
"""

from __future__ import annotations

import json
from typing import Any

from byok_middleware.storage.base import check_limit, check_policy, require_aware
from byok_middleware.storage.records import TenantPolicy, WebhookConfig, WebhookDelivery
from byok_middleware.storage.sql import (
    DELIVERY_COLUMNS,
    POLICY_COLUMNS,
    WEBHOOK_COLUMNS,
    Row,
    SQLBase,
)

__all__ = ["SettingsSQL"]


def _upsert(table: str, names: tuple[str, ...]) -> str:
    """Insert a row keyed by ``tenant_id``, or replace every other column of the existing one."""
    updates = ", ".join(f"{n} = excluded.{n}" for n in names if n != "tenant_id")
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "  # noqa: S608 -- constants
        f"ON CONFLICT (tenant_id) DO UPDATE SET {updates}"
    )


_SELECT_POLICIES = f"SELECT {', '.join(POLICY_COLUMNS)} FROM tenant_policies"  # noqa: S608
_PUT_POLICY = _upsert("tenant_policies", POLICY_COLUMNS)
_SELECT_WEBHOOK = f"SELECT {', '.join(WEBHOOK_COLUMNS)} FROM webhooks WHERE tenant_id = ?"  # noqa: S608
_PUT_WEBHOOK = _upsert("webhooks", WEBHOOK_COLUMNS)
_INSERT_DELIVERY = (
    f"INSERT INTO webhook_deliveries ({', '.join(DELIVERY_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(DELIVERY_COLUMNS))})"
)
_LIST_DELIVERIES = (
    f"SELECT {', '.join(DELIVERY_COLUMNS)} FROM webhook_deliveries "  # noqa: S608
    "WHERE tenant_id = ? ORDER BY created_at DESC, id DESC LIMIT ?"
)
_JSON_TUPLES = frozenset({"platform_models", "events"})


class SettingsSQL(SQLBase):
    """Tenant policies, webhooks and their delivery log."""

    def _settings_params(self, record: object, names: tuple[str, ...]) -> tuple[object, ...]:
        values: list[object] = []
        for name in names:
            value = getattr(record, name)
            if name in _JSON_TUPLES and value is not None:
                value = json.dumps(list(value))
            values.append(self._encode(value, name))
        return tuple(values)

    def _settings_values(self, row: Row) -> dict[str, Any]:
        values = self._values(row)
        for name in _JSON_TUPLES & values.keys():
            if values[name] is not None:
                values[name] = tuple(json.loads(values[name]))
        return values

    async def get_policy(self, tenant_id: str) -> TenantPolicy | None:
        async with self._session() as session:
            rows = await session.fetch(_SELECT_POLICIES + " WHERE tenant_id = ?", (tenant_id,))
        return TenantPolicy(**self._settings_values(rows[0])) if rows else None

    async def put_policy(self, policy: TenantPolicy) -> None:
        check_policy(policy)
        params = self._settings_params(policy, POLICY_COLUMNS)
        async with self._session() as session:
            await session.execute(_PUT_POLICY, params)

    async def list_policies(self) -> list[TenantPolicy]:
        async with self._session() as session:
            rows = await session.fetch(_SELECT_POLICIES + " ORDER BY tenant_id")
        return [TenantPolicy(**self._settings_values(row)) for row in rows]

    async def get_webhook(self, tenant_id: str) -> WebhookConfig | None:
        async with self._session() as session:
            rows = await session.fetch(_SELECT_WEBHOOK, (tenant_id,))
        return WebhookConfig(**self._settings_values(rows[0])) if rows else None

    async def put_webhook(self, config: WebhookConfig) -> None:
        require_aware(config.updated_at, "updated_at")
        params = self._settings_params(config, WEBHOOK_COLUMNS)
        async with self._session() as session:
            await session.execute(_PUT_WEBHOOK, params)

    async def delete_webhook(self, tenant_id: str) -> bool:
        async with self._session() as session:
            sql = "DELETE FROM webhooks WHERE tenant_id = ?"
            return await session.execute(sql, (tenant_id,)) > 0

    async def record_delivery(self, delivery: WebhookDelivery) -> None:
        params = self._record_params(delivery, DELIVERY_COLUMNS)
        try:
            async with self._session() as session:
                await session.execute(_INSERT_DELIVERY, params)
        except self._constraint_errors:
            raise ValueError("a webhook delivery with this id exists") from None

    async def list_deliveries(self, tenant_id: str, limit: int = 50) -> list[WebhookDelivery]:
        check_limit(limit)
        async with self._session() as session:
            rows = await session.fetch(_LIST_DELIVERIES, (tenant_id, limit))
        return [self._record(WebhookDelivery, row) for row in rows]

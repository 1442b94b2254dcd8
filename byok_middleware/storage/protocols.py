"""The two store Protocols: ``KeyStore`` for the request path, ``AdminStore`` for operators.

``storage.base`` re-exports both; see its docstring for the rules every method keeps (aware
datetimes, UTC out, exact money). Every method that takes ``tenant_id`` only ever sees or
changes that tenant's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from byok_middleware.storage.records import (
    AdminUsageRow,
    GatewayKeyInfo,
    ProviderKeyRecord,
    Tenant,
    TenantPolicy,
    UsageRecord,
    UsageTotal,
    WebhookConfig,
    WebhookDelivery,
)

if TYPE_CHECKING:
    from byok_middleware.storage.base import KeyChanges

__all__ = ["AdminStore", "KeyStore"]


@runtime_checkable
class KeyStore(Protocol):
    """Async persistence for tenants, provider keys, the usage ledger and tenant policies."""

    async def open(self) -> None:
        """Connect and run pending migrations. Idempotent."""

    async def close(self) -> None:
        """Release connections. Idempotent."""

    # Tenants and gateway API keys
    async def create_tenant(self, tenant: Tenant, key_hash: str) -> None:
        """Store a tenant with its first gateway key.

        Raises ``ValueError`` if the name is taken by a tenant that is not revoked, or the id or
        the key hash already exists; then nothing is stored.
        """

    async def list_tenants(self) -> list[Tenant]:
        """Every tenant, revoked ones included, oldest first."""

    async def revoke_tenant(self, name: str, when: datetime) -> bool:
        """Revoke the tenant and its gateway keys; False if no such active tenant."""

    async def tenant_for_key_hash(self, key_hash: str) -> str | None:
        """The tenant id owning a gateway key with this SHA-256 hex hash; None if either the key
        or its tenant is revoked."""

    # Provider keys
    async def insert_key(self, record: ProviderKeyRecord, *, max_keys: int | None = None) -> None:
        """Store a new key.

        With ``max_keys``, the count of the tenant's keys and the insert are one atomic step:
        however many inserts race, the tenant never ends up with more than ``max_keys``.

        Raises:
            TooManyKeys: the tenant already has ``max_keys`` keys (nothing stored).
            ValueError: a key with this id exists (in any tenant).
        """

    async def get_key(self, tenant_id: str, key_id: str) -> ProviderKeyRecord | None: ...

    async def list_keys(
        self, tenant_id: str, provider: str | None = None
    ) -> list[ProviderKeyRecord]:
        """Ordered by provider, then priority, then created_at, then id."""

    async def count_keys(self, tenant_id: str) -> int:
        """How many keys the tenant has, of any status."""

    async def update_key(
        self, tenant_id: str, key_id: str, changes: KeyChanges, when: datetime
    ) -> ProviderKeyRecord | None:
        """Apply ``changes`` and set ``updated_at``; return the new record, None if the key is not
        the tenant's. Raises ``ValueError`` as ``validate_key_changes`` does, changing nothing."""

    async def delete_key(self, tenant_id: str, key_id: str) -> bool:
        """True if the tenant's key was deleted; False if it is not the tenant's."""

    async def iter_key_batch(self, after_id: str | None, limit: int) -> list[ProviderKeyRecord]:
        """All tenants' keys with id > ``after_id``, ordered by id, at most ``limit`` (>= 1, else
        ``ValueError``), for re-encryption in batches."""

    async def replace_ciphertext(self, key_id: str, old: bytes, new: bytes) -> bool:
        """Compare-and-swap of one envelope (rotation); False if the row changed meanwhile.

        ``updated_at`` is left alone: re-encryption does not change the key the tenant sees.
        """

    # Usage ledger
    async def record_usage(self, rows: Sequence[UsageRecord]) -> None:
        """Insert the rows in one transaction; a row whose request_id exists (in the table or
        earlier in the batch) is ignored. A row is never dropped silently otherwise.

        Raises:
            UsageBatchError: nothing of the batch was stored; ``bad_rows`` names the rows the
                store can tell it cannot take (a naive datetime, NUL in text on PostgreSQL),
                None when the database refused the batch without saying which row.
        """

    async def usage_totals(
        self,
        tenant_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: str | None = None,
    ) -> list[UsageTotal]:
        """Totals over ``[since, until)``.

        ``group_by`` is one of ``GROUP_BY`` (else ``ValueError``); ``day`` groups by the UTC date
        as ``"YYYY-MM-DD"``. Without ``group_by`` the result is exactly one total (zeros when no
        row matches); with it, one total per group that has rows, ordered by group.
        """

    async def key_spend(self, key_id: str, since: datetime) -> Decimal:
        """Total priced cost of the rows served by ``key_id`` at or after ``since``."""

    async def spend_since(self, tenant_id: str, since: datetime) -> tuple[Decimal, Decimal]:
        """(all priced spend, platform-attributed spend) of the tenant at or after ``since``,
        for seeding budgets; platform-attributed is every row whose attribution is not
        ``"byok"``."""

    # Tenant policy
    async def get_policy(self, tenant_id: str) -> TenantPolicy | None:
        """The tenant's policy as last put; None if none was."""


@runtime_checkable
class AdminStore(KeyStore, Protocol):
    """Operator-only operations, for the CLI, the admin API and tests."""

    async def schema_version(self) -> int:
        """The schema version of the open database (the latest one for a memory store)."""

    # Tenants and gateway API keys
    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        """The tenant with this id, revoked or not; None if there is none."""

    async def revoke_tenant_by_id(self, tenant_id: str, when: datetime) -> bool:
        """``revoke_tenant`` by id; False if no such active tenant."""

    async def add_gateway_key(
        self, tenant_id: str, key_hash: str, when: datetime, *, prefix: str = ""
    ) -> GatewayKeyInfo:
        """Store another gateway key of the tenant; return its listing (with a new ``id``).

        Raises ``ValueError`` if the tenant does not exist or the hash is already stored.
        """

    async def list_gateway_keys(self, tenant_id: str) -> list[GatewayKeyInfo]:
        """The tenant's gateway keys, revoked ones included, oldest first (then by id)."""

    async def revoke_gateway_key(self, tenant_id: str, key_id: str, when: datetime) -> bool:
        """Revoke one of the tenant's keys; False if it is not the tenant's or already revoked."""

    async def touch_gateway_key(self, key_hash: str, when: datetime) -> None:
        """Set the key's ``last_used_at`` to ``when`` unless it is already later (a write, so
        call it once per identity-cache miss, not once per request)."""

    # Usage ledger
    async def list_usage(
        self, tenant_id: str, *, limit: int = 100, since: datetime | None = None
    ) -> list[UsageRecord]:
        """At most ``limit`` (>= 1, else ``ValueError``) rows at or after ``since``, newest
        first."""

    async def list_requests(
        self,
        tenant_id: str | None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        status: int | None = None,
        provider: str | None = None,
        model: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[UsageRecord], str | None]:
        """One page of ledger rows in ``[since, until)`` matching the filters, newest first (by
        created_at, then request_id), and the cursor of the next page (None on the last one).

        ``tenant_id`` None is every tenant (operator view). ``limit`` >= 1 and a ``cursor`` this
        method returned, else ``ValueError``. Rows written after a cursor was issued never shift
        the pages that follow it.
        """

    async def usage_rows(
        self,
        tenant_id: str | None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100_000,
    ) -> list[UsageRecord]:
        """The rows in ``[since, until)`` (``tenant_id`` None: every tenant's), oldest first, at
        most ``limit``: for series computed in Python (percentiles)."""

    async def admin_usage(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: Sequence[str],
    ) -> list[AdminUsageRow]:
        """Totals of every tenant's rows in ``[since, until)`` per combination of the
        ``group_by`` keys (distinct values of ``ADMIN_GROUP_BY``, else ``ValueError``), ordered
        by the group values. Empty ``group_by``: exactly one row, the grand total."""

    # Tenant policy
    async def put_policy(self, policy: TenantPolicy) -> None:
        """Store the tenant's policy, replacing any earlier one. ``ValueError`` as
        ``check_policy`` raises it, storing nothing."""

    async def list_policies(self) -> list[TenantPolicy]:
        """Every stored policy, by tenant id."""

    # Webhooks
    async def get_webhook(self, tenant_id: str) -> WebhookConfig | None:
        """The tenant's webhook; None if it has none."""

    async def put_webhook(self, config: WebhookConfig) -> None:
        """Store the tenant's webhook, replacing any earlier one."""

    async def delete_webhook(self, tenant_id: str) -> bool:
        """Remove the tenant's webhook; False if it had none. Its deliveries stay listed."""

    async def record_delivery(self, delivery: WebhookDelivery) -> None:
        """Log one delivery attempt; ``ValueError`` if a delivery with this id exists."""

    async def list_deliveries(self, tenant_id: str, limit: int = 50) -> list[WebhookDelivery]:
        """The tenant's latest ``limit`` (>= 1, else ``ValueError``) deliveries, newest first
        (by created_at, then id)."""

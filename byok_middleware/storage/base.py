"""The storage contract: records as frozen dataclasses and the ``KeyStore`` Protocol.

A store persists three things: tenants with their gateway API keys (as SHA-256 hashes), provider
keys (only ever as AES-GCM envelopes: a store never sees a plaintext key), and the usage ledger.
Every backend passes the same contract suite (``tests/store_contract.py``).

Datetimes crossing this interface are timezone-aware: a store raises ``ValueError`` for a naive
one (it cannot know which zone was meant, and a wrong guess shifts every time-window query) and
returns them in UTC. Money is ``Decimal`` and stays exact through storage and sums.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from types import NoneType
from typing import Protocol, runtime_checkable

__all__ = [
    "GROUP_BY",
    "KEY_CHANGE_FIELDS",
    "KeyChanges",
    "KeyStatus",
    "KeyStore",
    "ProviderKeyRecord",
    "Tenant",
    "UsageRecord",
    "UsageTotal",
    "require_aware",
    "validate_key_changes",
]


class KeyStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    INVALID = "invalid"  # the provider rejected the key (401/403)
    COOLING_DOWN = "cooling_down"  # rate-limited until ``cooldown_until``


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ProviderKeyRecord:
    """A tenant's provider key as stored. ``ciphertext`` is the crypto envelope, never plaintext."""

    id: str
    tenant_id: str
    provider: str
    ciphertext: bytes
    is_active: bool
    priority: int
    label: str | None
    always_use: bool
    status: KeyStatus
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None = None
    last_error: str | None = None
    cooldown_until: datetime | None = None
    rpm: int | None = None
    tpm: int | None = None
    monthly_budget_usd: Decimal | None = None

    def __repr__(self) -> str:
        # The envelope is not secret without the master key, but it is noise in logs.
        return (
            f"ProviderKeyRecord(id={self.id!r}, tenant_id={self.tenant_id!r}, "
            f"provider={self.provider!r}, priority={self.priority}, status={self.status.value!r})"
        )


# Columns a KeyChanges may set, with the types each accepts; ``ciphertext`` only together with a
# rotation. ``bool`` is an ``int``, so the int columns are checked for it separately.
_KEY_CHANGE_TYPES: Mapping[str, tuple[type, ...]] = {
    "ciphertext": (bytes,),
    "is_active": (bool,),
    "priority": (int,),
    "label": (str, NoneType),
    "always_use": (bool,),
    "status": (str,),  # KeyStatus is a str; plain values are converted
    "last_used_at": (datetime, NoneType),
    "last_error": (str, NoneType),
    "cooldown_until": (datetime, NoneType),
    "rpm": (int, NoneType),
    "tpm": (int, NoneType),
    "monthly_budget_usd": (Decimal, NoneType),
}
KEY_CHANGE_FIELDS = frozenset(_KEY_CHANGE_TYPES)

KeyChanges = Mapping[str, object]
"""Field name -> new value, any subset of ``KEY_CHANGE_FIELDS``; the store sets ``updated_at``."""


def require_aware(value: datetime | None, name: str) -> None:
    """Raise ``ValueError`` if ``value`` is a naive datetime (None passes)."""
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def validate_key_changes(changes: KeyChanges) -> dict[str, object]:
    """Check a change set for ``KeyStore.update_key``; return it with ``status`` as a KeyStatus.

    Raises:
        ValueError: an unknown field, a value of the wrong type, an unknown status or a naive
            datetime. Nothing has been written when this raises.
    """
    unknown = set(changes) - KEY_CHANGE_FIELDS
    if unknown:
        raise ValueError(f"unknown key fields: {sorted(unknown)}")
    checked: dict[str, object] = {}
    for name, value in changes.items():
        is_int_column = name in {"priority", "rpm", "tpm"}
        if not isinstance(value, _KEY_CHANGE_TYPES[name]) or (
            is_int_column and isinstance(value, bool)
        ):
            raise ValueError(f"{name} has the wrong type: {type(value).__name__}")
        if isinstance(value, datetime):
            require_aware(value, name)
        checked[name] = KeyStatus(str(value)) if name == "status" else value
    return checked


@dataclass(slots=True)
class UsageRecord:
    """One proxied request in the ledger. Never a key, never a prompt. Treat it as immutable.

    Not ``frozen`` for the reason given on ``pricing.Usage``: one is built for every request.
    """

    request_id: str
    tenant_id: str
    key_id: str | None
    provider: str
    model: str
    endpoint: str
    attribution: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: Decimal | None
    status_code: int
    latency_ms: float
    created_at: datetime
    attempts: int = 1
    cache_hit: bool = False
    error_type: str | None = None


GROUP_BY = ("provider", "model", "attribution", "day")


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """Ledger totals of one group (``group`` is None for the grand total)."""

    group: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal
    unpriced_requests: int  # rows whose cost is unknown; their cost is not in ``cost_usd``


@runtime_checkable
class KeyStore(Protocol):
    """Async persistence for tenants, provider keys and the usage ledger.

    Every method that takes ``tenant_id`` only ever sees or changes that tenant's rows.
    """

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

    async def add_gateway_key(self, tenant_id: str, key_hash: str, when: datetime) -> None:
        """Raises ``ValueError`` if the tenant does not exist or the hash is already stored."""

    async def tenant_for_key_hash(self, key_hash: str) -> str | None:
        """The tenant id owning a gateway key with this SHA-256 hex hash; None if either the key
        or its tenant is revoked."""

    # Provider keys
    async def insert_key(self, record: ProviderKeyRecord) -> None:
        """Raises ``ValueError`` if a key with this id exists (in any tenant)."""

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
        """Insert rows in one transaction; a row whose request_id exists is ignored."""

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

    async def list_usage(
        self, tenant_id: str, *, limit: int = 100, since: datetime | None = None
    ) -> list[UsageRecord]:
        """At most ``limit`` (>= 1, else ``ValueError``) rows at or after ``since``, newest
        first."""

    async def key_spend(self, key_id: str, since: datetime) -> Decimal:
        """Total priced cost of the rows served by ``key_id`` at or after ``since``."""

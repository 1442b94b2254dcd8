"""The records a store keeps, as dataclasses; ``storage.base`` re-exports every name here.

Datetimes in a record a store returns are timezone-aware and in UTC; money is ``Decimal``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

__all__ = [
    "ADMIN_GROUP_BY",
    "GROUP_BY",
    "AdminUsageRow",
    "GatewayKeyInfo",
    "KeyStatus",
    "ProviderKeyRecord",
    "Tenant",
    "TenantPolicy",
    "UsageRecord",
    "UsageTotal",
    "WebhookConfig",
    "WebhookDelivery",
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
class GatewayKeyInfo:
    """A gateway API key as the admin API lists it: never the key, never its hash.

    ``prefix`` is the leading characters of the key its creator chose to keep (``""`` for keys
    made before prefixes were stored); ``status`` is ``"active"`` or ``"revoked"``.
    """

    id: str
    tenant_id: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    status: str


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


@dataclass(slots=True)
class UsageRecord:
    """One proxied request in the ledger. Never a key, never a prompt. Treat it as immutable.

    Not ``frozen`` for the reason given on ``pricing.Usage``: one is built for every request.
    ``ttft_ms`` is the time to the first token (streams) or first byte; ``cost_source`` says
    where ``cost_usd`` came from (``"price_table"``, ``"operator"``, ``"unpriced"``,
    ``"cache"``); ``cost_saved_usd`` is, for a cache hit, what the original answer cost.
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
    ttft_ms: float | None = None
    cost_source: str | None = None
    cost_saved_usd: Decimal | None = None


GROUP_BY = ("provider", "model", "attribution", "day")
ADMIN_GROUP_BY = ("tenant", "attribution", "provider", "model", "day")


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """Ledger totals of one group (``group`` is None for the grand total).

    ``cache_hits`` counts rows served from the response cache, ``saved_usd`` sums their
    ``cost_saved_usd``.
    """

    group: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal
    unpriced_requests: int  # rows whose cost is unknown; their cost is not in ``cost_usd``
    cache_hits: int = 0
    saved_usd: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class AdminUsageRow:
    """Ledger totals of one group across tenants; ``groups`` maps each group key to its value
    (``"day"`` as ``"YYYY-MM-DD"`` in UTC, ``"tenant"`` as the tenant id)."""

    groups: dict[str, str]
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal


BUDGET_PERIODS = ("day", "month")
PLATFORM_FALLBACKS = ("always", "on_failure", "never")
UNPRICED_MODES = ("block", "allow")
CACHE_MODES = ("off", "exact", "semantic")


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """An operator's per-tenant settings; None means "derive it" or "the global default".

    ``budget_period`` is one of ``BUDGET_PERIODS``, ``platform_fallback`` of
    ``PLATFORM_FALLBACKS``, ``unpriced`` of ``UNPRICED_MODES``, ``cache`` of ``CACHE_MODES``.
    """

    tenant_id: str
    budget_usd: Decimal | None = None
    platform_budget_usd: Decimal | None = None
    budget_period: str = "month"
    platform_fallback: str = "always"
    platform_models: tuple[str, ...] | None = None
    unpriced: str | None = None
    clamp_max_tokens: bool = False
    cache: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Where a tenant's alerts go. ``secret_ciphertext`` is the signing secret's envelope."""

    tenant_id: str
    url: str
    events: tuple[str, ...]
    secret_ciphertext: bytes = field(repr=False)
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One attempt to deliver an event; ``status_code`` is None when no response came."""

    id: str
    tenant_id: str
    event: str
    status_code: int | None
    attempt: int
    error: str | None
    created_at: datetime

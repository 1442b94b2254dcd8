"""The storage contract: the ``KeyStore`` and ``AdminStore`` Protocols and the checks every
backend applies the same way.

A store persists tenants with their gateway API keys (as SHA-256 hashes), provider keys (only
ever as AES-GCM envelopes: a store never sees a plaintext key), the usage ledger, tenant
policies and webhooks. Request-path code uses ``KeyStore``; the CLI, the admin API and tests use
``AdminStore``, which every backend also implements. Every backend passes the same contract
suite (``tests/store_contract.py``).

Datetimes crossing this interface are timezone-aware: a store raises ``ValueError`` for a naive
one (it cannot know which zone was meant, and a wrong guess shifts every time-window query) and
returns them in UTC. Money is ``Decimal`` and stays exact through storage and sums.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from types import NoneType

from byok_middleware.storage.protocols import AdminStore, KeyStore
from byok_middleware.storage.records import (
    ADMIN_GROUP_BY,
    BUDGET_PERIODS,
    CACHE_MODES,
    GROUP_BY,
    PLATFORM_FALLBACKS,
    UNPRICED_MODES,
    AdminUsageRow,
    GatewayKeyInfo,
    KeyStatus,
    ProviderKeyRecord,
    Tenant,
    TenantPolicy,
    UsageRecord,
    UsageTotal,
    WebhookConfig,
    WebhookDelivery,
)

__all__ = [
    "ADMIN_GROUP_BY",
    "GROUP_BY",
    "KEY_CHANGE_FIELDS",
    "AdminStore",
    "AdminUsageRow",
    "GatewayKeyInfo",
    "KeyChanges",
    "KeyStatus",
    "KeyStore",
    "ProviderKeyRecord",
    "Tenant",
    "TenantPolicy",
    "TooManyKeys",
    "UsageBatchError",
    "UsageRecord",
    "UsageTotal",
    "WebhookConfig",
    "WebhookDelivery",
    "check_admin_group_by",
    "check_group_by",
    "check_limit",
    "check_policy",
    "decode_cursor",
    "encode_cursor",
    "require_aware",
    "validate_key_changes",
]


class TooManyKeys(ValueError):
    """``insert_key`` refused a key: the tenant already has ``max_keys`` of them."""

    def __init__(self, max_keys: int) -> None:
        super().__init__(f"a tenant may register at most {max_keys} provider keys")
        self.max_keys = max_keys


class UsageBatchError(ValueError):
    """``record_usage`` stored none of a batch.

    ``bad_rows`` are the indexes (into the batch) of the rows the store knows it cannot take,
    or None when the database refused the batch without saying which row it was; then the
    caller can write the rows one by one to find out. A connection failure is not this error.
    """

    def __init__(self, message: str, bad_rows: tuple[int, ...] | None) -> None:
        super().__init__(message)
        self.bad_rows = bad_rows


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


def check_limit(limit: int) -> None:
    """Raise ``ValueError`` unless ``limit >= 1`` (SQLite reads a negative LIMIT as "all")."""
    if limit < 1:
        raise ValueError("limit must be at least 1")


def check_group_by(group_by: str | None) -> None:
    """Raise ``ValueError`` unless ``group_by`` is None or one of ``GROUP_BY``."""
    if group_by is not None and group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {', '.join(GROUP_BY)}")


def check_admin_group_by(group_by: Sequence[str]) -> tuple[str, ...]:
    """``group_by`` as a tuple, if each is one of ``ADMIN_GROUP_BY`` and none repeats."""
    keys = (group_by,) if isinstance(group_by, str) else tuple(group_by)
    if any(k not in ADMIN_GROUP_BY for k in keys) or len(set(keys)) != len(keys):
        raise ValueError(f"group_by must be distinct values of {', '.join(ADMIN_GROUP_BY)}")
    return keys


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


def check_policy(policy: TenantPolicy) -> None:
    """Raise ``ValueError`` for a policy value outside its documented set, a negative budget,
    a model list that is not a tuple of strings, or a naive ``updated_at``."""
    choices: tuple[tuple[str, object, tuple[object, ...]], ...] = (
        ("budget_period", policy.budget_period, BUDGET_PERIODS),
        ("platform_fallback", policy.platform_fallback, PLATFORM_FALLBACKS),
        ("unpriced", policy.unpriced, (None, *UNPRICED_MODES)),
        ("cache", policy.cache, (None, *CACHE_MODES)),
    )
    for name, value, allowed in choices:
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}")
    for budget in (policy.budget_usd, policy.platform_budget_usd):
        if budget is not None and (not isinstance(budget, Decimal) or budget < 0):
            raise ValueError("a budget must be a Decimal of at least 0")
    models = policy.platform_models
    if models is not None and (
        not isinstance(models, tuple) or not all(isinstance(m, str) for m in models)
    ):
        raise ValueError("platform_models must be a tuple of model names")
    require_aware(policy.updated_at, "updated_at")


def encode_cursor(created_at: datetime, request_id: str) -> str:
    """The opaque ``list_requests`` cursor after the row of this time and request id."""
    text = f"{created_at.astimezone(UTC).isoformat()}|{request_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, request_id) a cursor stands for; ``ValueError`` if it is not one."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, sep, request_id = text.partition("|")
        created_at = datetime.fromisoformat(stamp)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("invalid cursor") from None
    if not sep or created_at.utcoffset() is None:
        raise ValueError("invalid cursor")
    return created_at.astimezone(UTC), request_id

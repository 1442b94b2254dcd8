"""Persistence behind the ``KeyStore`` and ``AdminStore`` Protocols, and ``store_from_url`` to
pick a backend."""

from __future__ import annotations

import importlib

from byok_middleware.errors import ConfigurationError
from byok_middleware.storage.base import (
    ADMIN_GROUP_BY,
    GROUP_BY,
    KEY_CHANGE_FIELDS,
    AdminStore,
    AdminUsageRow,
    GatewayKeyInfo,
    KeyChanges,
    KeyStatus,
    KeyStore,
    ProviderKeyRecord,
    Tenant,
    TenantPolicy,
    TooManyKeys,
    UsageBatchError,
    UsageRecord,
    UsageTotal,
    WebhookConfig,
    WebhookDelivery,
)
from byok_middleware.storage.memory import MemoryStore
from byok_middleware.storage.sqlite import SQLiteStore

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
    "MemoryStore",
    "ProviderKeyRecord",
    "SQLiteStore",
    "Tenant",
    "TenantPolicy",
    "TooManyKeys",
    "UsageBatchError",
    "UsageRecord",
    "UsageTotal",
    "WebhookConfig",
    "WebhookDelivery",
    "store_from_url",
]

_EXAMPLES = (
    "sqlite:///relative.db, sqlite:////absolute/path.db, sqlite://:memory:, memory:// or "
    "postgresql://user:password@host/db"
)


def store_from_url(url: str) -> AdminStore:
    """The store a database URL names; nothing is opened yet.

    ``sqlite:///relative.db`` and ``sqlite:////abs/path.db`` give a :class:`SQLiteStore` on that
    file, ``sqlite://:memory:`` one in memory, ``memory://`` a :class:`MemoryStore`, and
    ``postgresql://`` / ``postgres://`` a ``PostgresStore`` (the ``postgres`` extra).

    Raises:
        ConfigurationError: an unknown scheme, a malformed SQLite URL, or PostgreSQL without its
            extra installed. The message never repeats the URL, which may hold a password.
    """
    scheme, sep, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigurationError(f"the database URL has no scheme; use one of {_EXAMPLES}")
    if scheme == "memory" and not rest:
        return MemoryStore()
    if scheme == "sqlite":
        return SQLiteStore(_sqlite_path(rest))
    if scheme in {"postgresql", "postgres"}:
        return _postgres_store(url.strip())
    raise ConfigurationError(f"unsupported database URL scheme {scheme!r}; use one of {_EXAMPLES}")


def _sqlite_path(rest: str) -> str:
    # After "sqlite://": ":memory:", or "/" + path (so four slashes make an absolute path).
    if rest in {":memory:", "/:memory:"}:
        return ":memory:"
    path = rest[1:] if rest.startswith("/") else ""
    if not path or "?" in path:
        raise ConfigurationError(
            "a SQLite URL is sqlite:///relative.db, sqlite:////absolute/path.db or "
            "sqlite://:memory: (no host, no query parameters)"
        )
    return path


def _postgres_store(url: str) -> AdminStore:
    try:
        # Imported here so that SQLite users need neither asyncpg nor the module.
        module = importlib.import_module("byok_middleware.storage.postgres")
    except ImportError as exc:
        raise ConfigurationError(
            "PostgreSQL storage is not available; install it with "
            "`pip install 'byok_middleware[postgres]'`"
        ) from exc
    store: AdminStore = module.PostgresStore(url)
    return store

"""Versioned schema migrations, as data.

A backend keeps its own ordered list of :class:`Migration` (the SQL differs per database) and the
same bookkeeping: a ``schema_version`` table holding one row per applied version, and
:func:`pending` to decide what still has to run. Applying them, in one transaction that also
records the versions, is the backend's job. A migration is never edited once released; a change is
a new version appended to the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from byok_middleware.errors import ConfigurationError

__all__ = ["POSTGRES_MIGRATIONS", "SQLITE_MIGRATIONS", "Migration", "latest_version", "pending"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: the statements that take the schema from ``version - 1`` to it."""

    version: int
    description: str
    statements: tuple[str, ...]


def latest_version(migrations: Sequence[Migration]) -> int:
    """The version a fully migrated schema has (0 for an empty list)."""
    return migrations[-1].version if migrations else 0


def pending(migrations: Sequence[Migration], current: int) -> list[Migration]:
    """The migrations newer than ``current``, in the order they must run.

    Raises:
        ConfigurationError: the list is not numbered 1, 2, 3, ... (a packaging bug), or the
            database is at a version this code does not know (written by a newer release;
            running older code against it could corrupt it).
    """
    if [m.version for m in migrations] != list(range(1, len(migrations) + 1)):
        raise ConfigurationError("schema migrations must be numbered 1, 2, 3, ... in order")
    latest = latest_version(migrations)
    if current > latest:
        raise ConfigurationError(
            f"the database schema is at version {current}, newer than this byok_middleware "
            f"knows ({latest}); upgrade byok_middleware"
        )
    return [m for m in migrations if m.version > current]


# Storage formats shared by every SQLite table: datetimes are fixed-width ISO-8601 UTC text
# ("2025-01-31T23:59:59.000000Z"), so text order is time order and range queries use the indexes;
# Decimals are TEXT (exact); booleans are 0/1.
SQLITE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="tenants, gateway keys, provider keys and the usage ledger",
        statements=(
            """
            CREATE TABLE tenants (
                id          TEXT PRIMARY KEY,
                name        TEXT NOT NULL,
                created_at  TEXT NOT NULL,
                revoked_at  TEXT
            )
            """,
            # A name may be reused once its previous owner is revoked.
            "CREATE UNIQUE INDEX tenants_active_name ON tenants (name) WHERE revoked_at IS NULL",
            """
            CREATE TABLE gateway_keys (
                key_hash    TEXT PRIMARY KEY,
                tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
                created_at  TEXT NOT NULL,
                revoked_at  TEXT
            )
            """,
            "CREATE INDEX gateway_keys_tenant ON gateway_keys (tenant_id)",
            # No foreign key to tenants here or in usage: with a host's own ``identify=`` the
            # tenant ids come from the host and have no row in ``tenants``.
            """
            CREATE TABLE provider_keys (
                id                  TEXT PRIMARY KEY,
                tenant_id           TEXT NOT NULL,
                provider            TEXT NOT NULL,
                ciphertext          BLOB NOT NULL,
                is_active           INTEGER NOT NULL CHECK (is_active IN (0, 1)),
                priority            INTEGER NOT NULL,
                label               TEXT,
                always_use          INTEGER NOT NULL CHECK (always_use IN (0, 1)),
                status              TEXT NOT NULL,
                created_at          TEXT NOT NULL,
                updated_at          TEXT NOT NULL,
                last_used_at        TEXT,
                last_error          TEXT,
                cooldown_until      TEXT,
                rpm                 INTEGER,
                tpm                 INTEGER,
                monthly_budget_usd  TEXT
            )
            """,
            "CREATE INDEX provider_keys_tenant ON provider_keys (tenant_id, provider, priority)",
            # ``seq`` (the rowid) orders rows written in the same microsecond by insertion.
            """
            CREATE TABLE usage (
                seq                 INTEGER PRIMARY KEY,
                request_id          TEXT NOT NULL UNIQUE,
                tenant_id           TEXT NOT NULL,
                key_id              TEXT,
                provider            TEXT NOT NULL,
                model               TEXT NOT NULL,
                endpoint            TEXT NOT NULL,
                attribution         TEXT NOT NULL,
                prompt_tokens       INTEGER NOT NULL,
                completion_tokens   INTEGER NOT NULL,
                cached_tokens       INTEGER NOT NULL,
                cost_usd            TEXT,
                status_code         INTEGER NOT NULL,
                latency_ms          REAL NOT NULL,
                created_at          TEXT NOT NULL,
                attempts            INTEGER NOT NULL,
                cache_hit           INTEGER NOT NULL CHECK (cache_hit IN (0, 1)),
                error_type          TEXT
            )
            """,
            "CREATE INDEX usage_tenant_time ON usage (tenant_id, created_at)",
            "CREATE INDEX usage_key_time ON usage (key_id, created_at)",
        ),
    ),
)


# PostgreSQL: times are timestamptz, money NUMERIC (exact, any scale), booleans BOOLEAN, envelopes
# BYTEA. Text that is ordered or grouped on is COLLATE "C", so its order is the same byte order as
# SQLite's and Python's whatever locale the cluster was created with.
POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="tenants, gateway keys, provider keys and the usage ledger",
        statements=(
            """
            CREATE TABLE tenants (
                id          TEXT COLLATE "C" PRIMARY KEY,
                name        TEXT COLLATE "C" NOT NULL,
                created_at  TIMESTAMPTZ NOT NULL,
                revoked_at  TIMESTAMPTZ
            )
            """,
            "CREATE UNIQUE INDEX tenants_active_name ON tenants (name) WHERE revoked_at IS NULL",
            """
            CREATE TABLE gateway_keys (
                key_hash    TEXT PRIMARY KEY,
                tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
                created_at  TIMESTAMPTZ NOT NULL,
                revoked_at  TIMESTAMPTZ
            )
            """,
            "CREATE INDEX gateway_keys_tenant ON gateway_keys (tenant_id)",
            """
            CREATE TABLE provider_keys (
                id                  TEXT COLLATE "C" PRIMARY KEY,
                tenant_id           TEXT COLLATE "C" NOT NULL,
                provider            TEXT COLLATE "C" NOT NULL,
                ciphertext          BYTEA NOT NULL,
                is_active           BOOLEAN NOT NULL,
                priority            INTEGER NOT NULL,
                label               TEXT,
                always_use          BOOLEAN NOT NULL,
                status              TEXT NOT NULL,
                created_at          TIMESTAMPTZ NOT NULL,
                updated_at          TIMESTAMPTZ NOT NULL,
                last_used_at        TIMESTAMPTZ,
                last_error          TEXT,
                cooldown_until      TIMESTAMPTZ,
                rpm                 INTEGER,
                tpm                 INTEGER,
                monthly_budget_usd  NUMERIC
            )
            """,
            "CREATE INDEX provider_keys_tenant ON provider_keys (tenant_id, provider, priority)",
            # ``seq`` orders rows written in the same microsecond by insertion.
            """
            CREATE TABLE usage (
                seq                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                request_id          TEXT NOT NULL UNIQUE,
                tenant_id           TEXT COLLATE "C" NOT NULL,
                key_id              TEXT COLLATE "C",
                provider            TEXT COLLATE "C" NOT NULL,
                model               TEXT COLLATE "C" NOT NULL,
                endpoint            TEXT NOT NULL,
                attribution         TEXT COLLATE "C" NOT NULL,
                prompt_tokens       BIGINT NOT NULL,
                completion_tokens   BIGINT NOT NULL,
                cached_tokens       BIGINT NOT NULL,
                cost_usd            NUMERIC,
                status_code         INTEGER NOT NULL,
                latency_ms          DOUBLE PRECISION NOT NULL,
                created_at          TIMESTAMPTZ NOT NULL,
                attempts            INTEGER NOT NULL,
                cache_hit           BOOLEAN NOT NULL,
                error_type          TEXT
            )
            """,
            "CREATE INDEX usage_tenant_time ON usage (tenant_id, created_at)",
            "CREATE INDEX usage_key_time ON usage (key_id, created_at)",
        ),
    ),
)

"""Versioned schema migrations, as data, written once and rendered per dialect.

Each :class:`Migration` holds neutral statements (``{text_c}``, ``{time}``, ``{money}``,
``{flag:column}``, ... are the column types of ``storage.sql.Dialect``). Every backend keeps the
same bookkeeping: a ``schema_version`` table holding one row per applied version, and
:func:`pending` to decide what still has to run. Applying them, in one transaction that also
records the versions, is the backend's job. A migration is never changed once released (its
rendered schema stays what it was); a change is a new version appended to the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from byok_middleware.errors import ConfigurationError
from byok_middleware.storage.sql import POSTGRES, SQLITE, Dialect

__all__ = [
    "MIGRATIONS",
    "POSTGRES_MIGRATIONS",
    "SQLITE_MIGRATIONS",
    "Migration",
    "latest_version",
    "pending",
    "rendered",
]


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


def rendered(migrations: Sequence[Migration], dialect: Dialect) -> tuple[Migration, ...]:
    """``migrations`` with every statement in ``dialect``."""
    return tuple(
        Migration(m.version, m.description, tuple(dialect.render(s) for s in m.statements))
        for m in migrations
    )


# No foreign key to tenants from provider_keys or usage: with a host's own ``identify=`` the
# tenant ids come from the host and have no row in ``tenants``.
_V1 = Migration(
    version=1,
    description="tenants, gateway keys, provider keys and the usage ledger",
    statements=(
        """
        CREATE TABLE tenants (
            id          {text_c} PRIMARY KEY,
            name        {text_c} NOT NULL,
            created_at  {time} NOT NULL,
            revoked_at  {time}
        )
        """,
        # A name may be reused once its previous owner is revoked.
        "CREATE UNIQUE INDEX tenants_active_name ON tenants (name) WHERE revoked_at IS NULL",
        """
        CREATE TABLE gateway_keys (
            key_hash    TEXT PRIMARY KEY,
            tenant_id   {text_c} NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            created_at  {time} NOT NULL,
            revoked_at  {time}
        )
        """,
        "CREATE INDEX gateway_keys_tenant ON gateway_keys (tenant_id)",
        """
        CREATE TABLE provider_keys (
            id                  {text_c} PRIMARY KEY,
            tenant_id           {text_c} NOT NULL,
            provider            {text_c} NOT NULL,
            ciphertext          {blob} NOT NULL,
            is_active           {flag:is_active},
            priority            INTEGER NOT NULL,
            label               TEXT,
            always_use          {flag:always_use},
            status              TEXT NOT NULL,
            created_at          {time} NOT NULL,
            updated_at          {time} NOT NULL,
            last_used_at        {time},
            last_error          TEXT,
            cooldown_until      {time},
            rpm                 INTEGER,
            tpm                 INTEGER,
            monthly_budget_usd  {money}
        )
        """,
        "CREATE INDEX provider_keys_tenant ON provider_keys (tenant_id, provider, priority)",
        # ``seq`` orders rows written in the same microsecond by insertion.
        """
        CREATE TABLE usage (
            seq                 {seq},
            request_id          TEXT NOT NULL UNIQUE,
            tenant_id           {text_c} NOT NULL,
            key_id              {text_c},
            provider            {text_c} NOT NULL,
            model               {text_c} NOT NULL,
            endpoint            TEXT NOT NULL,
            attribution         {text_c} NOT NULL,
            prompt_tokens       {bigint} NOT NULL,
            completion_tokens   {bigint} NOT NULL,
            cached_tokens       {bigint} NOT NULL,
            cost_usd            {money},
            status_code         INTEGER NOT NULL,
            latency_ms          {real} NOT NULL,
            created_at          {time} NOT NULL,
            attempts            INTEGER NOT NULL,
            cache_hit           {flag:cache_hit},
            error_type          TEXT
        )
        """,
        "CREATE INDEX usage_tenant_time ON usage (tenant_id, created_at)",
        "CREATE INDEX usage_key_time ON usage (key_id, created_at)",
    ),
)

# Gateway keys get an id (for the admin API to name them; existing keys derive theirs from the
# hash), a display prefix and a last-use time. ``usage_time`` serves the operator's views of
# every tenant's ledger, newest first.
_V2 = Migration(
    version=2,
    description="ledger timing and cache savings, gateway key listing, policies and webhooks",
    statements=(
        "ALTER TABLE usage ADD COLUMN ttft_ms {real}",
        "ALTER TABLE usage ADD COLUMN cost_source TEXT",
        "ALTER TABLE usage ADD COLUMN cost_saved_usd {money}",
        "CREATE INDEX usage_time ON usage (created_at)",
        "ALTER TABLE gateway_keys ADD COLUMN id {text_c}",
        "ALTER TABLE gateway_keys ADD COLUMN prefix TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE gateway_keys ADD COLUMN last_used_at {time}",
        "UPDATE gateway_keys SET id = 'gk_' || substr(key_hash, 1, 24) WHERE id IS NULL",
        "CREATE UNIQUE INDEX gateway_keys_id ON gateway_keys (id)",
        """
        CREATE TABLE tenant_policies (
            tenant_id           {text_c} PRIMARY KEY,
            budget_usd          {money},
            platform_budget_usd {money},
            budget_period       TEXT NOT NULL,
            platform_fallback   TEXT NOT NULL,
            platform_models     TEXT,
            unpriced            TEXT,
            clamp_max_tokens    {flag:clamp_max_tokens},
            cache               TEXT,
            updated_at          {time}
        )
        """,
        """
        CREATE TABLE webhooks (
            tenant_id           {text_c} PRIMARY KEY,
            url                 TEXT NOT NULL,
            events              TEXT NOT NULL,
            secret_ciphertext   {blob} NOT NULL,
            updated_at          {time} NOT NULL
        )
        """,
        """
        CREATE TABLE webhook_deliveries (
            id                  {text_c} PRIMARY KEY,
            tenant_id           {text_c} NOT NULL,
            event               TEXT NOT NULL,
            status_code         INTEGER,
            attempt             INTEGER NOT NULL,
            error               TEXT,
            created_at          {time} NOT NULL
        )
        """,
        "CREATE INDEX webhook_deliveries_tenant_time ON webhook_deliveries (tenant_id, created_at)",
    ),
)

# Responses-API conversations kept for ``previous_response_id`` and ``GET /responses/{id}``,
# sealed with the keyring (storage/sql_responses.py); ``expires_at`` serves the purge.
_V3 = Migration(
    version=3,
    description="stored Responses-API conversations",
    statements=(
        """
        CREATE TABLE stored_responses (
            tenant_id   {text_c} NOT NULL,
            id          {text_c} NOT NULL,
            ciphertext  {blob} NOT NULL,
            created_at  {time} NOT NULL,
            expires_at  {time} NOT NULL,
            PRIMARY KEY (tenant_id, id)
        )
        """,
        "CREATE INDEX stored_responses_expiry ON stored_responses (expires_at)",
    ),
)

# The auto router (storage/sql_router.py): learned state per scope, written with compare-and-set
# on ``version``; per routed request, what its feedback needs; ``routed_requests_time`` serves
# the retention prune.
_V4 = Migration(
    version=4,
    description="the auto router's learned state and its routed requests",
    statements=(
        """
        CREATE TABLE router_state (
            scope       {text_c} PRIMARY KEY,
            state       TEXT NOT NULL,
            version     INTEGER NOT NULL,
            updated_at  {time} NOT NULL
        )
        """,
        """
        CREATE TABLE routed_requests (
            request_id  {text_c} NOT NULL,
            tenant_id   {text_c} NOT NULL,
            model       TEXT NOT NULL,
            features    TEXT NOT NULL,
            created_at  {time} NOT NULL,
            scored      {flag:scored},
            PRIMARY KEY (tenant_id, request_id)
        )
        """,
        "CREATE INDEX routed_requests_time ON routed_requests (created_at)",
    ),
)

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _V4)

SQLITE_MIGRATIONS = rendered(MIGRATIONS, SQLITE)
POSTGRES_MIGRATIONS = rendered(MIGRATIONS, POSTGRES)

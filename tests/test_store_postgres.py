"""PostgresStore against the shared store contract, plus what only a real PostgreSQL shows."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import pytest

from byok_middleware.errors import ConfigurationError
from byok_middleware.storage import KeyStore, TooManyKeys, UsageBatchError, store_from_url
from byok_middleware.storage.migrations import POSTGRES_MIGRATIONS, latest_version
from byok_middleware.storage.postgres import PostgresStore, apply_migrations
from tests.services import fresh_database, service_url
from tests.store_contract import T0, StoreContract, key, tenant, usage
from tests.store_contract_admin import AdminContract
from tests.store_contract_router import RouterContract

TABLES = (
    "tenants, gateway_keys, provider_keys, usage, tenant_policies, webhooks, webhook_deliveries, "
    "router_state, routed_requests"
)


@pytest.fixture(scope="module")
def server_url() -> str:
    return service_url("postgres")


@pytest.fixture
async def database(server_url: str) -> AsyncIterator[str]:
    """A fresh database of its own for the test."""
    async with fresh_database(server_url) as url:
        yield url


class TestPostgresStore(StoreContract, AdminContract, RouterContract):
    @pytest.fixture
    async def store(self, server_url: str) -> AsyncIterator[KeyStore]:
        # One migrated database shared by the contract tests, emptied before each one: much
        # faster than a database per test, and migrations have tests of their own below.
        store = PostgresStore(server_url)
        await store.open()
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        finally:
            await conn.close()
        yield store
        await store.close()


async def test_store_from_url_gives_a_postgres_store(database: str) -> None:
    """``postgresql://`` URLs select PostgresStore, whose repr hides the password."""
    store = store_from_url(database.replace("byok:byok@", "byok:hunter2@"))
    assert isinstance(store, PostgresStore)
    assert "hunter2" not in repr(store)
    assert "***" in repr(store)


async def test_replicas_starting_together_migrate_once(database: str) -> None:
    """Several stores opening a fresh database at once apply each migration exactly once."""
    stores = [PostgresStore(database, min_size=1, max_size=2) for _ in range(5)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
        latest = latest_version(POSTGRES_MIGRATIONS)
        for store in stores:
            assert await store.schema_version() == latest
        conn = await asyncpg.connect(database)
        try:
            versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_version")]
            assert sorted(versions) == list(range(1, latest + 1))
            assert await apply_migrations(conn, POSTGRES_MIGRATIONS) == latest
        finally:
            await conn.close()
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def test_storage_types(database: str) -> None:
    """Costs are NUMERIC, times timestamptz, envelopes bytea, flags boolean."""
    store = PostgresStore(database)
    try:
        await store.insert_key(key("k1", monthly_budget_usd=Decimal("1.5")))
        await store.record_usage([usage("r1", cost="0.000000123456789")])
        conn = await asyncpg.connect(database)
        try:
            types = dict(
                await conn.fetch(
                    "SELECT table_name || '.' || column_name, data_type "
                    "FROM information_schema.columns WHERE table_schema = 'public'"
                )
            )
            stored = await conn.fetchval("SELECT cost_usd::text FROM usage")
        finally:
            await conn.close()
        assert types["usage.cost_usd"] == "numeric"
        assert types["provider_keys.monthly_budget_usd"] == "numeric"
        assert types["usage.created_at"] == "timestamp with time zone"
        assert types["provider_keys.cooldown_until"] == "timestamp with time zone"
        assert types["provider_keys.ciphertext"] == "bytea"
        assert types["provider_keys.is_active"] == "boolean"
        assert stored == "0.000000123456789"
    finally:
        await store.close()


async def test_a_newer_schema_is_refused(database: str) -> None:
    """A database migrated by a newer release is not opened (nor changed) by this one."""
    store = PostgresStore(database)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("INSERT INTO schema_version VALUES (99, now())")
    finally:
        await conn.close()
    with pytest.raises(ConfigurationError, match="newer"):
        await store.open()


async def test_ledger_batches_from_two_replicas_never_double_count(database: str) -> None:
    """The same rows written by two stores at once (a retried flush) are stored once each."""
    first, second = PostgresStore(database), PostgresStore(database)
    try:
        rows = [usage(f"r{n}", cost="0.01") for n in range(200)]
        await asyncio.gather(
            first.record_usage(rows[:150]),
            second.record_usage(rows[50:]),
            first.record_usage(rows[100:]),
        )
        [grand] = await first.usage_totals("t-acme")
        assert await second.usage_totals("t-acme") == [grand]
        assert (grand.requests, grand.cost_usd) == (200, Decimal("2.00"))
    finally:
        await first.close()
        await second.close()


async def test_open_on_first_use_and_reopen_after_close(database: str) -> None:
    """Calls open the store on demand; close then use reopens it."""
    store = PostgresStore(database)
    await store.create_tenant(tenant("acme"), "hash")
    await store.close()
    await store.close()
    assert await store.tenant_for_key_hash("hash") == "t-acme"
    await store.record_usage([usage("r1", at=T0)])
    assert [r.request_id for r in await store.list_usage("t-acme")] == ["r1"]
    await store.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://byok:hunter2@127.0.0.1:1/byok",  # nothing listens on port 1
        "postgres://byok:hunter2@127.0.0.1:1/byok",
    ],
)
async def test_unreachable_server_is_a_clear_start_up_error(url: str) -> None:
    """An unreachable server names PostgreSQL and the URL, never the password."""
    store = store_from_url(url)
    with pytest.raises(ConfigurationError, match="PostgreSQL at") as caught:
        await store.open()
    message = str(caught.value)
    assert "127.0.0.1:1/byok" in message
    assert "hunter2" not in message
    assert "BYOK_DATABASE_URL" in message


async def test_a_malformed_url_is_a_start_up_error_without_the_password() -> None:
    """An unencoded '#' in the password makes asyncpg's parser quote part of it; the error
    says what is wrong and shows none of the password."""
    store = store_from_url("postgresql://byok:hun#ter2@127.0.0.1:1/byok")
    with pytest.raises(ConfigurationError, match="malformed") as caught:
        await store.open()
    message = str(caught.value)
    assert "hun" not in message
    assert "ter2" not in message
    assert caught.value.__suppress_context__  # a traceback does not show asyncpg's text


async def test_max_keys_holds_across_a_warm_pool_and_two_replicas(database: str) -> None:
    """Inserts racing on ten pooled connections of two replicas never pass max_keys (without
    the per-tenant lock this run ends at 55 of 50)."""
    first, second = (PostgresStore(database, min_size=10, max_size=10) for _ in range(2))
    try:
        await asyncio.gather(first.open(), second.open())
        for n in range(45):
            await first.insert_key(key(f"k-old-{n:02d}"))

        async def insert(n: int) -> None:
            with contextlib.suppress(TooManyKeys):
                await (first, second)[n % 2].insert_key(key(f"k-new-{n:02d}"), max_keys=50)

        await asyncio.gather(*(insert(n) for n in range(30)))
        assert await first.count_keys("t-acme") == 50
    finally:
        await first.close()
        await second.close()


async def test_nul_in_a_ledger_row_is_named_before_the_database_sees_it(database: str) -> None:
    """PostgreSQL text cannot hold NUL: the batch is refused naming exactly those rows."""
    store = PostgresStore(database)
    try:
        batch = [usage("r0"), usage("r1", error_type="x\x00"), usage("r2", cost_source="\x00")]
        with pytest.raises(UsageBatchError, match="NUL") as caught:
            await store.record_usage(batch)
        assert caught.value.bad_rows == (1, 2)
        assert await store.list_usage("t-acme") == []
    finally:
        await store.close()

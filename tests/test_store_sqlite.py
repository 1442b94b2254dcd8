"""SQLiteStore against the shared store contract, plus what only a real SQLite file can show."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
import types
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import aiosqlite
import pytest

from byok_middleware.errors import ConfigurationError
from byok_middleware.storage import KeyStore, MemoryStore, SQLiteStore, TooManyKeys, store_from_url
from byok_middleware.storage.base import UsageRecord
from byok_middleware.storage.migrations import SQLITE_MIGRATIONS, latest_version
from byok_middleware.storage.sql import USAGE_COLUMNS
from byok_middleware.storage.sqlite import _encode_record, _encode_usage, _ts, apply_migrations
from tests.store_contract import T0, StoreContract, key, tenant, usage
from tests.store_contract_admin import AdminContract
from tests.store_contract_router import RouterContract


class TestSQLiteStore(StoreContract, AdminContract, RouterContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[KeyStore]:
        store = SQLiteStore(tmp_path / "byok.db")
        await store.open()
        yield store
        await store.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "byok.db"


@pytest.fixture
def raw(db: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the same file, to look underneath the store."""
    with closing(sqlite3.connect(db)) as conn:
        yield conn


@pytest.fixture
async def sqlite_store(db: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(db)
    await store.open()
    yield store
    await store.close()


async def test_wal_mode_and_current_schema(
    sqlite_store: SQLiteStore, raw: sqlite3.Connection
) -> None:
    """Opening switches the file to WAL and migrates it to the latest schema version."""
    assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert await sqlite_store.schema_version() == latest_version(SQLITE_MIGRATIONS)


async def test_storage_formats(sqlite_store: SQLiteStore, raw: sqlite3.Connection) -> None:
    """Costs are exact TEXT, times fixed-width UTC ISO text, booleans 0/1."""
    await sqlite_store.insert_key(key("k1", is_active=False))
    await sqlite_store.record_usage([usage("r1", cost="0.1")])
    assert raw.execute("SELECT typeof(cost_usd), cost_usd, created_at FROM usage").fetchone() == (
        "text",
        "0.1",
        "2025-03-01T12:00:00.000000Z",
    )
    assert raw.execute("SELECT is_active, always_use FROM provider_keys").fetchone() == (0, 0)


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 12, 4, 6, 30, 1, 250_001, tzinfo=UTC),
        datetime(2026, 12, 4, 6, 30, 1, tzinfo=UTC),  # no fraction: still six digits
        datetime(2026, 12, 4, 8, 30, 1, 7, tzinfo=timezone(timedelta(hours=2))),
        datetime(5, 1, 2, 3, 4, 5, 6, tzinfo=UTC),  # a four-digit year, zero-padded
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    ],
)
def test_times_are_fixed_width_utc_text(when: datetime) -> None:
    """Every time is written ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC, so text order is time
    order, whichever way it is formatted."""
    text = _ts(when)
    assert text == when.astimezone(UTC).replace(tzinfo=None).isoformat("T", "microseconds") + "Z"
    assert len(text) == 27


async def test_reopening_keeps_data(db: Path) -> None:
    """Everything written is there after closing and opening the file again."""
    first = SQLiteStore(db)
    await first.create_tenant(tenant("acme"), "hash")
    await first.insert_key(key("k1"))
    await first.record_usage([usage("r1", cost="0.25")])
    await first.close()
    second = SQLiteStore(db)
    try:
        assert [t.name for t in await second.list_tenants()] == ["acme"]
        assert await second.get_key("t-acme", "k1") == key("k1")
        assert await second.key_spend("k1", T0) == Decimal("0.25")
    finally:
        await second.close()


async def test_two_stores_on_one_file_see_each_others_writes(db: Path) -> None:
    """Two stores (as two processes would have) share the file, reads and concurrent writes."""
    first, second = SQLiteStore(db), SQLiteStore(db)
    await asyncio.gather(first.open(), second.open())  # both may try to migrate
    try:
        await first.create_tenant(tenant("acme"), "hash")
        assert await second.tenant_for_key_hash("hash") == "t-acme"
        await second.revoke_tenant("acme", T0)
        assert await first.tenant_for_key_hash("hash") is None
        await asyncio.gather(
            *((first if n % 2 else second).record_usage([usage(f"r{n}")]) for n in range(20))
        )
        [grand] = await first.usage_totals("t-acme")
        assert grand.requests == 20
        assert grand.cost_usd == Decimal("0.20")
    finally:
        await first.close()
        await second.close()


async def test_migrations_run_twice_are_a_no_op(db: Path) -> None:
    """Applying the migrations to a migrated file changes nothing and records no version."""
    async with aiosqlite.connect(db, isolation_level=None) as conn:
        latest = latest_version(SQLITE_MIGRATIONS)
        assert await apply_migrations(conn, SQLITE_MIGRATIONS) == latest
        assert await apply_migrations(conn, SQLITE_MIGRATIONS) == latest
        versions = await conn.execute_fetchall("SELECT version FROM schema_version")
        assert [row[0] for row in versions] == list(range(1, latest + 1))
    store = SQLiteStore(db)
    try:
        assert await store.schema_version() == latest
    finally:
        await store.close()


async def test_a_newer_schema_is_refused(db: Path, raw: sqlite3.Connection) -> None:
    """A file migrated by a newer release is not opened (nor changed) by this one."""
    store = SQLiteStore(db)
    await store.open()
    await store.close()
    with raw:
        raw.execute("INSERT INTO schema_version VALUES (99, '2030-01-01T00:00:00.000000Z')")
    with pytest.raises(ConfigurationError, match="newer"):
        await store.open()


async def test_open_on_first_use_and_idempotent_open_close(db: Path) -> None:
    """Calls open the store on demand; open and close may repeat; close then use reopens."""
    store = SQLiteStore(db)
    assert not await asyncio.to_thread(db.exists)  # nothing touched before the first call
    assert await store.count_keys("t") == 0
    await store.open()
    await store.insert_key(key("k1", "t"))
    await store.close()
    await store.close()
    assert await store.count_keys("t") == 1
    await store.close()


async def test_in_memory_database() -> None:
    """``:memory:`` gives a private, working store."""
    store = SQLiteStore(":memory:")
    try:
        await store.record_usage([usage("r1", at=T0 + timedelta(seconds=1))])
        assert [r.request_id for r in await store.list_usage("t-acme")] == ["r1"]
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///byok.db", "byok.db"),
        ("sqlite:///data/byok.db", "data/byok.db"),
        ("sqlite:////var/lib/byok.db", "/var/lib/byok.db"),
        ("SQLITE:///byok.db", "byok.db"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_store_from_url_sqlite(url: str, path: str) -> None:
    """SQLite URLs map to a SQLiteStore on the path they name (three slashes: relative)."""
    store = store_from_url(url)
    assert isinstance(store, SQLiteStore)
    assert repr(store) == f"SQLiteStore(path={path!r}, closed)"


def test_store_from_url_memory() -> None:
    """``memory://`` is the in-process MemoryStore."""
    assert isinstance(store_from_url("memory://"), MemoryStore)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root:hunter2@db/byok",
        "byok.db",
        "sqlite://host/byok.db",
        "sqlite:///",
        "sqlite:///byok.db?mode=ro",
        "memory://somewhere",
    ],
)
def test_store_from_url_refuses_unknown_urls(url: str) -> None:
    """Unknown schemes and malformed SQLite URLs are a ConfigurationError, never echoing secrets."""
    with pytest.raises(ConfigurationError) as caught:
        store_from_url(url)
    assert "hunter2" not in str(caught.value)


def test_store_from_url_postgres_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the postgres extra, the error says what to install (and not the password)."""
    # None in sys.modules makes the import fail exactly as a missing module would.
    monkeypatch.setitem(sys.modules, "byok_middleware.storage.postgres", None)
    for url in ("postgresql://u:hunter2@db/byok", "postgres://u:hunter2@db/byok"):
        with pytest.raises(ConfigurationError, match=r"byok_middleware\[postgres\]") as caught:
            store_from_url(url)
        assert "hunter2" not in str(caught.value)


def test_store_from_url_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL URLs go, unchanged, to PostgresStore, imported only when asked for."""
    module = types.ModuleType("byok_middleware.storage.postgres")
    module.PostgresStore = lambda url: ("postgres-store", url)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "byok_middleware.storage.postgres", module)
    url = "postgresql://u:p@db:5432/byok"
    assert store_from_url(url) == ("postgres-store", url)  # type: ignore[comparison-overlap]


@pytest.mark.parametrize(
    "row",
    [
        usage("r1"),
        usage("r2", cost=None, key_id=None, cache_hit=True, error_type="rate_limit_exceeded"),
        usage("r3", at=T0.astimezone(timezone(timedelta(hours=5))), attempts=3),
    ],
)
def test_the_ledger_row_encoder_matches_the_generic_one(row: UsageRecord) -> None:
    """The unrolled encoder of the per-request row binds what the generic one would, in the
    column order of the INSERT (a field added to UsageRecord fails here until both agree)."""
    assert _encode_usage(row) == _encode_record(row, USAGE_COLUMNS)


async def test_max_keys_holds_across_two_stores_on_one_file(db: Path) -> None:
    """Two stores (as two processes) inserting at once never pass max_keys together."""
    first, second = SQLiteStore(db), SQLiteStore(db)
    await asyncio.gather(first.open(), second.open())
    try:
        for n in range(45):
            await first.insert_key(key(f"k-old-{n:02d}"))

        async def insert(n: int) -> None:
            with contextlib.suppress(TooManyKeys):
                await (first, second)[n % 2].insert_key(key(f"k-new-{n:02d}"), max_keys=50)

        await asyncio.gather(*(insert(n) for n in range(30)))
        assert await second.count_keys("t-acme") == 50
    finally:
        await first.close()
        await second.close()


async def test_a_version_1_file_upgrades_with_its_data(db: Path) -> None:
    """A file at schema 1 migrates to the latest: old gateway keys get an id from their hash
    and still authenticate, old ledger rows read back with the new fields empty."""
    async with aiosqlite.connect(db, isolation_level=None) as conn:
        await apply_migrations(conn, SQLITE_MIGRATIONS[:1])
        stamp = "2025-03-01T12:00:00.000000Z"
        await conn.execute("INSERT INTO tenants VALUES ('t-acme', 'acme', ?, NULL)", (stamp,))
        await conn.execute(
            "INSERT INTO gateway_keys VALUES (?, 't-acme', ?, NULL)", ("ab" * 32, stamp)
        )
        row = _encode_usage(usage("r1"))[:17]  # the version 1 columns
        await conn.execute(f"INSERT INTO usage VALUES (NULL, {', '.join('?' * 17)})", row)  # noqa: S608 -- constant
    upgraded = SQLiteStore(db)
    try:
        assert await upgraded.schema_version() == latest_version(SQLITE_MIGRATIONS)
        [info] = await upgraded.list_gateway_keys("t-acme")
        assert (info.id, info.prefix, info.status) == ("gk_" + "ab" * 12, "", "active")
        assert await upgraded.tenant_for_key_hash("ab" * 32) == "t-acme"
        assert await upgraded.list_usage("t-acme") == [usage("r1")]
    finally:
        await upgraded.close()

"""SQLiteStore against the shared store contract, plus what only a SQLite file can show."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import types
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path

import aiosqlite
import pytest

from byok_middleware.errors import ConfigurationError
from byok_middleware.storage import KeyStore, MemoryStore, SQLiteStore, store_from_url
from byok_middleware.storage.migrations import SQLITE_MIGRATIONS, latest_version
from byok_middleware.storage.sqlite import apply_migrations
from tests.store_contract import T0, StoreContract, key, tenant, usage


class TestSQLiteStore(StoreContract):
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
    """A plain sqlite3 connection to the file, for looking under the store."""
    with closing(sqlite3.connect(db)) as conn:
        yield conn


async def test_wal_mode_and_current_schema(db: Path, raw: sqlite3.Connection) -> None:
    """Opening sets WAL journal mode and migrates to the latest schema version."""
    async with_store = SQLiteStore(db)
    await with_store.open()
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert await with_store.schema_version() == latest_version(SQLITE_MIGRATIONS)
    finally:
        await with_store.close()

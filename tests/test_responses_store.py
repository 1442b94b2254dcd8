"""Stored Responses-API conversations: the store methods on every backend, and their sealing."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from byok_middleware.crypto import Keyring, generate_master_key
from byok_middleware.proxy.conversations import Conversation, Conversations
from byok_middleware.storage import MemoryStore, SQLiteStore
from byok_middleware.storage.sql_responses import ResponseStore, StoredResponse
from tests.services import fresh_database, service_url

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LATER = T0 + timedelta(days=1)


def row(tenant: str = "t1", id_: str = "resp_1", *, days: int = 30) -> StoredResponse:
    return StoredResponse(tenant, id_, b"\x01sealed", T0, T0 + timedelta(days=days))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ResponseStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        sqlite = SQLiteStore(tmp_path / "byok.db")
        await sqlite.open()
        yield sqlite
        await sqlite.close()
        return
    from byok_middleware.storage.postgres import PostgresStore

    async with fresh_database(service_url("postgres")) as url:
        postgres = PostgresStore(url)
        await postgres.open()
        yield postgres
        await postgres.close()


async def test_a_stored_response_is_found_by_its_tenant_only(store: ResponseStore) -> None:
    """get_response answers the tenant's own row; another tenant's id is None."""
    await store.put_response(row())
    found = await store.get_response("t1", "resp_1", LATER)
    assert found == row()
    assert await store.get_response("t2", "resp_1", LATER) is None
    assert await store.get_response("t1", "resp_2", LATER) is None


async def test_put_replaces_and_delete_removes(store: ResponseStore) -> None:
    """A second put of the same id replaces the row; delete is per tenant."""
    await store.put_response(row())
    newer = dataclasses.replace(row(), ciphertext=b"\x01other")
    await store.put_response(newer)
    assert await store.get_response("t1", "resp_1", LATER) == newer
    assert await store.delete_response("t2", "resp_1") is False
    assert await store.delete_response("t1", "resp_1") is True
    assert await store.delete_response("t1", "resp_1") is False
    assert await store.get_response("t1", "resp_1", LATER) is None


async def test_expired_rows_are_never_returned_and_purged(store: ResponseStore) -> None:
    """A row at or past expires_at is not returned; purge deletes exactly those rows."""
    await store.put_response(row("t1", "old", days=1))
    await store.put_response(row("t2", "new", days=30))
    assert await store.get_response("t1", "old", T0 + timedelta(days=1)) is None
    assert await store.purge_responses(T0 + timedelta(days=2)) == 1
    assert await store.get_response("t2", "new", T0 + timedelta(days=2)) is not None


async def test_naive_datetimes_are_refused(store: ResponseStore) -> None:
    """Times must be timezone-aware, as everywhere in the stores."""
    naive = dataclasses.replace(row(), created_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="created_at"):
        await store.put_response(naive)


async def test_conversations_are_sealed_and_bound_to_tenant_and_id() -> None:
    """The store sees ciphertext; a row moved to another tenant or id does not open."""
    store = MemoryStore()
    keyring = Keyring.parse(generate_master_key())
    conversations = Conversations()
    response = {"id": "resp_a", "object": "response", "output": []}
    items = [{"type": "message", "role": "user", "content": "secret-words"}]
    await conversations.save(store, keyring, T0, "t1", Conversation(response, items))
    stored = await store.get_response("t1", "resp_a", T0)
    assert stored is not None and b"secret-words" not in stored.ciphertext
    found = await conversations.find(store, keyring, T0, "t1", "resp_a")
    assert found == Conversation(response, items)
    await store.put_response(dataclasses.replace(stored, tenant_id="t2"))
    await store.put_response(dataclasses.replace(stored, id="resp_b"))
    assert await conversations.find(store, keyring, T0, "t2", "resp_a") is None
    assert await conversations.find(store, keyring, T0, "t1", "resp_b") is None
    assert stored.expires_at == T0 + conversations.retention

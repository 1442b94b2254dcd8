"""MemoryStore against the shared store contract."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from byok_middleware.storage import KeyStore, MemoryStore
from tests.store_contract import StoreContract
from tests.store_contract_admin import AdminContract
from tests.store_contract_router import RouterContract


class TestMemoryStore(StoreContract, AdminContract, RouterContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[KeyStore]:
        store = MemoryStore()
        await store.open()
        yield store
        await store.close()


def test_memory_store_satisfies_the_protocol() -> None:
    """MemoryStore is a KeyStore (every Protocol method present)."""
    assert isinstance(MemoryStore(), KeyStore)

"""The auto router's part of the store contract (``storage/sql_router.py``), inherited by each
backend's test class next to :class:`tests.store_contract.StoreContract`."""

from __future__ import annotations

from datetime import timedelta

import pytest

from byok_middleware.storage.sql_router import RoutedRequest, RouterState, RouterStore
from tests.store_contract import PLUS_TWO, T0


def routed(request_id: str, tenant_id: str = "t-acme", minutes: int = 0) -> RoutedRequest:
    return RoutedRequest(
        request_id,
        tenant_id,
        "groq/llama-3.3-70b-versatile",
        "[1.0, 0.0]",
        T0 + timedelta(minutes=minutes),
    )


class RouterContract:
    """Subclasses provide the ``store`` fixture (an opened store with the router methods)."""

    async def test_router_state_is_written_with_compare_and_set(self, store: RouterStore) -> None:
        """Version 1 creates, n+1 replaces n; a stale or repeated version changes nothing."""
        assert isinstance(store, RouterStore)
        assert await store.get_router_state("shared") is None
        first = RouterState("shared", '{"arms": {}}', 1, T0.astimezone(PLUS_TWO))
        assert await store.put_router_state(first)
        assert not await store.put_router_state(first)  # a second writer of version 1 loses
        assert not await store.put_router_state(RouterState("shared", "{}", 3, T0))
        second = RouterState("shared", '{"arms": {"a": 1}}', 2, T0 + timedelta(1))
        assert await store.put_router_state(second)
        assert await store.get_router_state("shared") == second
        assert await store.get_router_state("tenant:t-acme") is None
        with pytest.raises(ValueError, match="version"):
            await store.put_router_state(RouterState("x", "{}", 0, T0))

    async def test_routed_requests_belong_to_their_tenant(self, store: RouterStore) -> None:
        """A routed request is found by its tenant only; adding it again keeps the first."""
        await store.add_routed_requests([routed("r1"), routed("r2", "t-other")])
        await store.add_routed_requests([RoutedRequest("r1", "t-acme", "other/model", "[]", T0)])
        assert await store.get_routed_request("t-acme", "r1") == routed("r1")
        assert await store.get_routed_request("t-other", "r1") is None
        assert await store.get_routed_request("t-acme", "r2") is None
        await store.add_routed_requests([])

    async def test_a_routed_request_is_scored_once(self, store: RouterStore) -> None:
        """mark_routed_scored is True once, for the owner only, and shows on the row."""
        await store.add_routed_requests([routed("r1")])
        assert not await store.mark_routed_scored("t-other", "r1")
        assert await store.mark_routed_scored("t-acme", "r1")
        assert not await store.mark_routed_scored("t-acme", "r1")
        assert not await store.mark_routed_scored("t-acme", "nope")
        found = await store.get_routed_request("t-acme", "r1")
        assert found is not None and found.scored

    async def test_old_routed_requests_are_pruned(self, store: RouterStore) -> None:
        """Rows created before the cut-off go, of every tenant; newer ones stay."""
        await store.add_routed_requests(
            [routed("old"), routed("x", "t-b", 1), routed("new", minutes=10)]
        )
        assert await store.prune_routed_requests(T0 + timedelta(minutes=5)) == 2
        assert await store.get_routed_request("t-acme", "old") is None
        assert await store.get_routed_request("t-acme", "new") == routed("new", minutes=10)

"""Gateway API keys and the batched usage ledger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import uvloop

from byok_middleware import BYOKConfig, generate_master_key
from byok_middleware.asgi import Message
from byok_middleware.gateway import Gateway
from byok_middleware.gateway.keys import KeyService, NewKey
from byok_middleware.gateway.ledger import Ledger
from byok_middleware.identity import (
    GatewayKeyIdentity,
    create_tenant,
    hash_gateway_key,
    resolve_tenant,
)
from byok_middleware.router import Incoming
from byok_middleware.routes import new_call
from byok_middleware.storage import MemoryStore
from byok_middleware.storage.base import UsageRecord


async def _never() -> Message:
    raise AssertionError("not called")


def _scope(authorization: str | None) -> dict[str, object]:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    return {"type": "http", "headers": headers}


async def test_gateway_key_is_stored_only_as_its_hash() -> None:
    """create_tenant returns the key once; the store knows only its SHA-256."""
    store = MemoryStore()
    await store.open()
    tenant, key = await create_tenant(store, "acme")
    assert key.startswith("byok_") and len(key) > 40
    assert await store.tenant_for_key_hash(hash_gateway_key(key)) == tenant.id
    assert key not in repr(store.__dict__)


async def test_identity_accepts_only_bearer_gateway_keys() -> None:
    """Right key: the tenant; anything else: None."""
    store = MemoryStore()
    await store.open()
    tenant, key = await create_tenant(store, "acme")
    identity = GatewayKeyIdentity(store)
    assert await identity(_scope(f"Bearer {key}")) == tenant.id
    for header in (None, key, f"Basic {key}", "Bearer ", "Bearer byok_wrong", f"Bearer {key}x"):
        assert await identity(_scope(header)) is None


async def test_revocation_is_seen_after_the_cache_ttl() -> None:
    """A revoked key keeps working only until its cached lookup expires."""
    now = [0.0]
    store = MemoryStore()
    await store.open()
    tenant, key = await create_tenant(store, "acme")
    identity = GatewayKeyIdentity(store, ttl=10, monotonic=lambda: now[0])
    assert await identity(_scope(f"Bearer {key}")) == tenant.id
    await store.revoke_tenant("acme", datetime.now(UTC))
    now[0] = 11.0
    assert await identity(_scope(f"Bearer {key}")) is None


class _CountingStore(MemoryStore):
    """A real in-memory store that counts the lookups the caches make, each taking a moment."""

    def __init__(self) -> None:
        super().__init__()
        self.tenant_lookups = 0
        self.key_lists = 0

    async def tenant_for_key_hash(self, key_hash: str) -> str | None:
        self.tenant_lookups += 1
        await asyncio.sleep(0.01)
        return await super().tenant_for_key_hash(key_hash)

    async def list_keys(self, tenant_id: str) -> Sequence[Any]:
        self.key_lists += 1
        await asyncio.sleep(0.01)
        return await super().list_keys(tenant_id)


async def test_requests_past_a_cache_expiry_share_one_store_lookup() -> None:
    """At expiry the requests in flight wait for one lookup of the gateway key and one load of
    the provider keys, not one each; what they get is the fresh answer."""
    now = [0.0]
    store = _CountingStore()
    await store.open()
    tenant, key = await create_tenant(store, "acme")
    identity = GatewayKeyIdentity(store, ttl=10, monotonic=lambda: now[0])
    keyring = BYOKConfig(master_key=generate_master_key()).keyring()
    keys = KeyService(store, keyring, cache_ttl=10, monotonic=lambda: now[0])
    await keys.create(tenant.id, NewKey(provider="openai", api_key="sk-" + "k" * 40))
    assert await identity(_scope(f"Bearer {key}")) == tenant.id
    assert len(await keys.keys_for(tenant.id, "openai")) == 1
    lookups, lists = store.tenant_lookups, store.key_lists
    now[0] = 11.0
    found = await asyncio.gather(*(identity(_scope(f"Bearer {key}")) for _ in range(32)))
    loaded = await asyncio.gather(*(keys.keys_for(tenant.id, "openai") for _ in range(32)))
    assert set(found) == {tenant.id} and {len(k) for k in loaded} == {1}
    assert (store.tenant_lookups, store.key_lists) == (lookups + 1, lists + 1)
    await keys.aclose()
    await identity.aclose()


async def test_a_load_overtaken_by_an_invalidation_is_not_cached() -> None:
    """Keys read before a change was announced answer the request that asked, but the next one
    reads again."""
    store = _CountingStore()
    await store.open()
    tenant, _ = await create_tenant(store, "acme")
    keys = KeyService(store, BYOKConfig(master_key=generate_master_key()).keyring())
    loading = asyncio.ensure_future(keys.keys_for(tenant.id, "openai"))
    await asyncio.sleep(0.005)  # the load is reading (the store takes 10 ms)
    assert store.key_lists == 1
    keys.invalidate(tenant.id)
    assert await loading == ()
    await keys.keys_for(tenant.id, "openai")
    assert store.key_lists == 2
    await keys.aclose()


async def test_a_load_is_cached_when_only_another_tenant_changed() -> None:
    """An invalidation overtakes only the loads of its own tenant, and no trace of a finished
    load is kept (nothing grows with the number of tenants ever changed)."""
    store = _CountingStore()
    await store.open()
    acme, _ = await create_tenant(store, "acme")
    other, _ = await create_tenant(store, "other")
    keys = KeyService(store, BYOKConfig(master_key=generate_master_key()).keyring())
    loading = asyncio.ensure_future(keys.keys_for(acme.id, "openai"))
    await asyncio.sleep(0.005)  # the load is reading (the store takes 10 ms)
    keys.invalidate(other.id)
    await loading
    assert keys.cached_keys(acme.id, "openai") == ()
    assert keys._reading == {}
    await keys.aclose()


async def test_the_key_cache_holds_a_bounded_number_of_tenants() -> None:
    """Decrypted keys are cached for at most ``max_cached_tenants`` tenants (the oldest goes
    first), and an expired tenant's keys leave memory when the next tenant is cached."""
    now = [0.0]
    store = _CountingStore()
    await store.open()
    keyring = BYOKConfig(master_key=generate_master_key()).keyring()
    keys = KeyService(store, keyring, cache_ttl=10, max_cached_tenants=2, monotonic=lambda: now[0])
    tenants = [(await create_tenant(store, name))[0].id for name in ("a", "b", "c", "d")]
    for tenant in tenants[:3]:
        await keys.keys_for(tenant, "openai")
    assert repr(keys) == "KeyService(cached_tenants=2)"
    assert keys.cached_keys(tenants[0], "openai") is None  # the oldest went first
    assert keys.cached_keys(tenants[1], "openai") == keys.cached_keys(tenants[2], "openai") == ()
    now[0] = 11.0  # b and c expire; caching d drops both
    await keys.keys_for(tenants[3], "openai")
    assert repr(keys) == "KeyService(cached_tenants=1)"
    lists = store.key_lists
    await keys.keys_for(tenants[3], "openai")
    assert store.key_lists == lists  # a hit
    await keys.aclose()


async def test_resolve_tenant_takes_sync_and_async_callables() -> None:
    """identify= may be a plain function or a coroutine function."""

    async def async_identify(scope: object) -> str:
        return "t-async"

    assert await resolve_tenant(lambda scope: "t-sync", {}) == "t-sync"
    assert await resolve_tenant(async_identify, {}) == "t-async"
    assert await resolve_tenant(lambda scope: "", {}) is None


def _row(request_id: str) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        tenant_id="t",
        key_id=None,
        provider="openai",
        model="gpt-4o",
        endpoint="/chat/completions",
        attribution="xantly",
        prompt_tokens=1,
        completion_tokens=1,
        cached_tokens=0,
        cost_usd=Decimal("0.1"),
        status_code=200,
        latency_ms=1.0,
        created_at=datetime.now(UTC),
    )


async def test_ledger_batches_off_the_request_path_and_flushes_on_close() -> None:
    """record() never awaits; close() writes every queued row exactly once."""
    store = MemoryStore()
    await store.open()
    ledger = Ledger(store, interval=60, batch=1000)
    ledger.start()
    for index in range(250):
        ledger.record(_row(f"r{index}"))
    assert await store.list_usage("t") == []  # nothing written on the request path
    await ledger.close()
    rows = await store.list_usage("t", limit=1000)
    assert len(rows) == 250
    totals = await store.usage_totals("t")
    assert totals[0].cost_usd == Decimal("25.0")


async def test_ledger_writes_in_the_background() -> None:
    """Rows reach the store within the flush interval without a close."""
    store = MemoryStore()
    await store.open()
    ledger = Ledger(store, interval=0.05)
    ledger.record(_row("bg"))
    for _ in range(100):
        if await store.list_usage("t"):
            break
        await asyncio.sleep(0.02)
    assert len(await store.list_usage("t")) == 1
    await ledger.close()


class _SlowStore(MemoryStore):
    """A store whose ledger writes take a while and are counted (rows per transaction)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []

    async def record_usage(self, rows: Sequence[UsageRecord]) -> None:
        self.writes.append(len(rows))
        await asyncio.sleep(0.01)
        await super().record_usage(rows)


async def test_a_flush_writes_what_was_queued_not_what_arrives_meanwhile() -> None:
    """Under steady traffic a flush is one transaction per batch: rows queued while it writes
    wait for the next flush instead of each costing a transaction of their own."""
    store = _SlowStore()
    await store.open()
    ledger = Ledger(store, interval=60, batch=1000)
    for index in range(50):
        ledger.record(_row(f"first{index}"))

    async def traffic() -> None:
        for index in range(20):
            ledger.record(_row(f"later{index}"))
            await asyncio.sleep(0.002)

    await asyncio.gather(ledger.flush(), traffic())
    assert store.writes == [50]
    await ledger.close()
    assert sum(store.writes) == 70
    assert len(await store.list_usage("t", limit=100)) == 70


async def test_concurrent_flushes_lose_no_row() -> None:
    """Two flushes at once (the background writer and GET /usage) write each row once."""
    store = _SlowStore()
    await store.open()
    ledger = Ledger(store, interval=60, batch=7)
    for index in range(30):
        ledger.record(_row(f"r{index}"))
    await asyncio.gather(ledger.flush(), ledger.flush())
    assert len(await store.list_usage("t", limit=100)) == 30
    assert sum(store.writes) == 30
    await ledger.close()


def test_ledger_latency_is_measured_below_a_millisecond_under_uvloop() -> None:
    """uvloop's loop.time() counts whole milliseconds, so latencies measured with it are whole
    numbers (a sub-millisecond call is 0 or 1 ms). The ledger measures with perf_counter."""

    async def scenario() -> list[float]:
        gateway = Gateway(BYOKConfig(master_key=generate_master_key()), store=MemoryStore())
        rows: list[UsageRecord] = []
        gateway.ledger.record = rows.append  # type: ignore[method-assign]
        for index in range(3):
            call = new_call(Incoming({}, _never, _never, "t1", f"req_{index}"), "/chat")
            busy_until = time.perf_counter() + 0.0015
            while time.perf_counter() < busy_until:  # 1.5 ms of work, bounded
                pass
            gateway.record(call, candidate=None, usage=None, cost=None, status_code=200)
        return [row.latency_ms for row in rows]

    latencies = uvloop.run(scenario())
    assert all(1.5 <= latency < 1000 for latency in latencies)
    assert any(latency != int(latency) for latency in latencies)  # all three whole: 1 in 10^9

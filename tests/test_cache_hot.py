"""The hot layer: repeated exact hits served from memory, within every promise of the cache.

No backend read on a hot hit; tenants never share an entry; the TTL and the layer's own short
life are honoured; a refresh replaces the answer; bounds in entries and bytes; a clear reaches
the replica that made it at once, another replica through the invalidation bus (Redis, two
real gateways on one SQLite file) or, without a bus, within ``hot_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from byok_middleware.cache import (
    CacheEntry,
    CacheMode,
    CacheSettings,
    MemoryBackend,
    ResponseCache,
    SQLiteBackend,
    StoredEntry,
)
from byok_middleware.cache.hot import HotEntries, body_digest
from byok_middleware.crypto import Keyring, generate_master_key
from byok_middleware.jsoncodec import dumps
from byok_middleware.testing import FakeUpstream
from tests.conftest import Gateway
from tests.services import service_url
from tests.test_cache_store import ANSWER, FakeClock, answer, body

ARGS = ("openai", "gpt-4o")


class CountingBackend(MemoryBackend):
    """A memory backend that counts reads."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    async def get(self, tenant_id: str, key: str, now: float) -> StoredEntry | None:
        self.gets += 1
        return await super().get(tenant_id, key, now)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.parse("k1:" + generate_master_key())


def make_cache(backend: Any, keyring: Keyring, clock: FakeClock, **settings: Any) -> ResponseCache:
    return ResponseCache(
        backend, keyring, CacheSettings(mode=CacheMode.EXACT, **settings), clock=clock
    )


async def test_a_repeated_hit_reads_the_backend_once(keyring: Keyring) -> None:
    """The second and later hits come from memory, the same answer and the same metadata."""
    backend = CountingBackend()
    cache = make_cache(backend, keyring, FakeClock())
    await cache.store("t1", *ARGS, body(), answer(), cost_usd=Decimal("0.002"))
    first = await cache.lookup("t1", *ARGS, body())
    again = [await cache.lookup("t1", *ARGS, body()) for _ in range(3)]
    assert backend.gets == 1 and cache.metrics.hot_hits == 3 and cache.metrics.exact_hits == 4
    assert first is not None and all(h is not None for h in again)
    for hit in again:
        assert hit is not None and hit.key == first.key and hit.entry.cost_usd == Decimal("0.002")
        assert hit.entry.response["choices"][0]["message"]["content"] == ANSWER
    assert cache.metrics.saved_usd == Decimal("0.008")


async def test_no_hot_hit_across_tenants(keyring: Keyring) -> None:
    """Tenant B never gets tenant A's hot entry, nor one for another model."""
    cache = make_cache(MemoryBackend(), keyring, FakeClock())
    await cache.store("tenant-a", *ARGS, body(), answer(), cost_usd=None)
    assert await cache.lookup("tenant-a", *ARGS, body()) is not None  # now hot
    assert await cache.lookup("tenant-b", *ARGS, body()) is None
    assert await cache.lookup("tenant-a", "openai", "gpt-4o-mini", body()) is None
    assert await cache.lookup("tenant-a", *ARGS, body(), kind="embeddings") is None
    assert cache.metrics.hot_hits == 0


async def test_the_ttl_ends_a_hot_entry(keyring: Keyring) -> None:
    """A hot entry never serves past the entry's TTL, though its hot life is longer."""
    clock = FakeClock()
    cache = make_cache(MemoryBackend(), keyring, clock, ttl_seconds=60, hot_seconds=30)
    await cache.store("t1", *ARGS, body(), answer(), cost_usd=None)
    clock.advance(59)
    assert await cache.lookup("t1", *ARGS, body()) is not None  # read, now hot
    clock.advance(0.9)
    assert await cache.lookup("t1", *ARGS, body()) is not None
    assert cache.metrics.hot_hits == 1
    clock.advance(0.1)
    assert await cache.lookup("t1", *ARGS, body()) is None


async def test_a_hot_entry_goes_back_to_the_backend_after_hot_seconds(keyring: Keyring) -> None:
    """After ``hot_seconds`` a hit reads the backend again; ``hot_seconds`` 0 turns it off."""
    clock = FakeClock()
    backend = CountingBackend()
    cache = make_cache(backend, keyring, clock, hot_seconds=5)
    await cache.store("t1", *ARGS, body(), answer(), cost_usd=None)
    await cache.lookup("t1", *ARGS, body())
    clock.advance(4.9)
    await cache.lookup("t1", *ARGS, body())
    assert backend.gets == 1
    clock.advance(0.1)
    await cache.lookup("t1", *ARGS, body())
    assert backend.gets == 2
    off = make_cache(CountingBackend(), keyring, clock, hot_seconds=0)
    await off.store("t1", *ARGS, body(), answer(), cost_usd=None)
    for _ in range(3):
        assert await off.lookup("t1", *ARGS, body()) is not None
    assert off.metrics.hot_hits == 0


async def test_a_refresh_replaces_the_hot_answer(keyring: Keyring) -> None:
    """A store over the same key (x-byok-cache: refresh) is what the next hit serves."""
    cache = make_cache(MemoryBackend(), keyring, FakeClock())
    await cache.store("t1", *ARGS, body(), answer("old"), cost_usd=None)
    assert await cache.lookup("t1", *ARGS, body()) is not None
    await cache.store("t1", *ARGS, body(), answer("new"), cost_usd=None)
    hit = await cache.lookup("t1", *ARGS, body())
    assert hit is not None and hit.entry.response["choices"][0]["message"]["content"] == "new"


async def test_an_equal_body_in_another_order_hits_too(keyring: Keyring) -> None:
    """The memo only shortcuts the key: an equal body spelt differently still hits."""
    cache = make_cache(MemoryBackend(), keyring, FakeClock())
    await cache.store("t1", *ARGS, body(temperature=1.0, seed=3), answer(), cost_usd=None)
    assert await cache.lookup("t1", *ARGS, body(temperature=1.0, seed=3)) is not None
    reordered = dict(reversed(list(body(seed=3, temperature=1).items())))
    assert await cache.lookup("t1", *ARGS, reordered) is not None
    assert body_digest({"n": 10**30}) is None  # orjson refuses it: the key the long way


async def test_the_hit_json_is_the_answer_with_the_metadata_spliced(keyring: Keyring) -> None:
    """The bytes served equal the JSON of ``as_json``, hot or not, and hold no old metadata."""
    cache = make_cache(MemoryBackend(), keyring, FakeClock())
    await cache.store("t1", *ARGS, body(), answer(), cost_usd=Decimal("0.5"))
    cold = await cache.lookup("t1", *ARGS, body())
    hot = await cache.lookup("t1", *ARGS, body())
    assert cold is not None and hot is not None and hot.json is not None
    for hit in (cold, hot):
        meta = hit.metadata("req-1")
        served = hit.json_body("xantly_metadata", meta)
        assert served == dumps(hit.as_json("xantly_metadata", meta))
        assert orjson.loads(served)["xantly_metadata"] == meta
    empty = CacheEntry("chat", {}, None, *ARGS, 0.0)
    assert orjson.loads(type(hot)(empty, "k").json_body("m", {"a": 1})) == {"m": {"a": 1}}


def test_hot_entries_are_bounded_in_entries_and_bytes() -> None:
    """Least recently used out past ``max_entries`` or ``max_bytes``; too large never enters."""
    entry = CacheEntry("chat", {"text": "x" * 1000}, None, *ARGS, 0.0)
    hot = HotEntries(seconds=10, max_entries=3, max_bytes=10_000)
    for key in "abcd":
        hot.fill("t", key, entry, now=0, expires_at=100, generation=hot.generation("t"))
    assert len(hot) == 3 and hot.get("t", "a", 1) is None and hot.get("t", "b", 1) is not None
    small = HotEntries(seconds=10, max_entries=100, max_bytes=2_600)
    for key in "abc":
        small.fill("t", key, entry, now=0, expires_at=100, generation=small.generation("t"))
    assert len(small) == 2 and small.bytes <= 2_600
    big = CacheEntry("chat", {"text": "x" * 5000}, None, *ARGS, 0.0)
    assert (
        small.fill("t", "z", big, now=0, expires_at=100, generation=small.generation("t")) is None
    )


def test_a_fill_that_raced_a_clear_is_refused() -> None:
    """A backend read begun before a tenant's clear, a new answer's store (discard) or a
    clear of all never enters."""
    entry = CacheEntry("chat", {"a": 1}, None, *ARGS, 0.0)
    hot = HotEntries(seconds=10, max_entries=10, max_bytes=10_000)
    before = hot.generation("t1")
    hot.drop_tenant("t1")
    assert hot.fill("t1", "k", entry, now=0, expires_at=9, generation=before) is None
    before = hot.generation("t1")
    hot.discard("t1", "k")
    assert hot.fill("t1", "k", entry, now=0, expires_at=9, generation=before) is None
    other = hot.generation("t2")
    hot.clear()
    assert hot.fill("t2", "k", entry, now=0, expires_at=9, generation=other) is None
    assert hot.fill("t2", "k", entry, now=0, expires_at=9, generation=hot.generation("t2"))
    assert "a" not in repr(hot) and "1" not in repr(hot.get("t2", "k", 1)).split("size")[0]


async def test_a_clear_on_another_replica_without_a_bus_ends_within_hot_seconds(
    keyring: Keyring, tmp_path: Path
) -> None:
    """Two replicas on one SQLite file, no bus: after A clears, B serves its hot copy for at
    most ``hot_seconds``; ``forget`` (what the bus calls) ends it at once."""
    path = str(tmp_path / "replicas.db")
    clock = FakeClock()
    one = make_cache(SQLiteBackend(path), keyring, clock, hot_seconds=5)
    two = make_cache(SQLiteBackend(path), keyring, clock, hot_seconds=5)
    try:
        await one.store("t1", *ARGS, body(), answer(), cost_usd=None)
        await one.store("t2", *ARGS, body(), answer(), cost_usd=None)
        for tenant in ("t1", "t2"):
            assert await two.lookup(tenant, *ARGS, body()) is not None  # hot in two
        assert await one.clear_tenant("t1") == 1
        assert await one.lookup("t1", *ARGS, body()) is None  # the clearing replica: at once
        clock.advance(4.9)
        assert await two.lookup("t1", *ARGS, body()) is not None  # the bounded staleness
        clock.advance(0.1)
        assert await two.lookup("t1", *ARGS, body()) is None
        assert await two.lookup("t2", *ARGS, body()) is not None
        two.forget("t2")
        await one.clear_tenant("t2")
        assert await two.lookup("t2", *ARGS, body()) is None
    finally:
        await one.close()
        await two.close()


QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _chat(gateway: Gateway, **headers: str) -> Any:
    payload = {"model": "openai/gpt-4o", "messages": QUESTION}
    with gateway.client("acme") as http:
        return http.post("/v1/chat/completions", json=payload, headers=headers)


def test_delete_reaches_another_replicas_hot_layer_through_redis(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """Two gateways on one SQLite file and one Redis: after DELETE /byok/cache on the first,
    the second's hot copy stops serving well before ``hot_seconds`` (an hour here)."""
    redis_url = service_url("redis")
    # No write-behind delay: the second replica reads the first's answer straight after it.
    cache = CacheSettings(mode=CacheMode.EXACT, hot_seconds=3600, store_delay_seconds=0)
    first = start_gateway(cache=cache, redis_url=redis_url)
    second = start_gateway(cache=cache, redis_url=redis_url, master_key=first.config.master_key)
    second.tenants = first.tenants
    assert _chat(first).headers["x-byok-cache"] == "miss"
    for _ in range(2):
        assert _chat(second).headers["x-byok-cache"] == "hit"  # read once, then hot
    with first.client("acme") as http:
        assert http.delete("/v1/byok/cache").status_code == 204
    deadline = time.monotonic() + 10
    status = "hit"
    while status == "hit" and time.monotonic() < deadline:
        # no-store: look up, never store the miss's answer, so the poll changes nothing.
        status = _chat(second, **{"x-byok-cache": "no-store"}).headers["x-byok-cache"]
        if status == "hit":
            time.sleep(0.05)
    assert status == "miss"

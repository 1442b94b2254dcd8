"""The cache's storage: every backend's promises, sealing at rest, TTL, LRU by bytes, sharing."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from byok_middleware.cache import (
    CacheBackend,
    CacheMode,
    CacheSettings,
    MemoryBackend,
    ResponseCache,
    SQLiteBackend,
    StoredEntry,
    request_keys,
)
from byok_middleware.cache.writer import BatchBackend
from byok_middleware.crypto import Keyring, generate_master_key
from tests.services import fresh_database, service_url

T0 = datetime(2030, 1, 1, tzinfo=UTC)
CANARY = "sk-canary-CACHE-0123456789abcdefDO-NOT-LEAK"
PROMPT = "Summarise the quarterly numbers of ACME-PROMPT-MARKER please"
ANSWER = "ACME-ANSWER-MARKER grew by twelve percent"


class FakeClock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def body(text: str = PROMPT, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}


def answer(text: str = ANSWER) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1893456000,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        "xantly_metadata": {"cost_usd": 0.001, "key_id": "key-1"},
    }


def stored(tenant: str, key: str, size: int = 1000, *, expires: float = 1e12) -> StoredEntry:
    return StoredEntry(
        tenant_id=tenant, key=key, sealed=b"x" * size, created_at=0.0, expires_at=expires
    )


# ---------------------------------------------------------------- backend contract


BackendFactory = Callable[[int], CacheBackend]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def make_backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[BackendFactory]:
    """Builds backends of one kind with a byte budget; all share one store where it has one."""
    made: list[CacheBackend] = []
    url = ""
    if request.param == "postgres":
        manager = fresh_database(service_url("postgres"))
        url = await manager.__aenter__()

    def factory(max_bytes: int) -> CacheBackend:
        backend: CacheBackend
        if request.param == "memory":
            backend = MemoryBackend(max_bytes=max_bytes)
        elif request.param == "sqlite":
            backend = SQLiteBackend(
                str(tmp_path / "cache.db"), max_bytes=max_bytes, touch_seconds=0
            )
        else:
            from byok_middleware.cache.postgres import PostgresBackend

            backend = PostgresBackend(url, max_bytes=max_bytes, touch_seconds=0)
        made.append(backend)
        return backend

    try:
        yield factory
    finally:
        for backend in made:
            await backend.close()
        if request.param == "postgres":
            await manager.__aexit__(None, None, None)


async def test_backend_put_many_writes_a_batch_the_later_entry_winning(
    make_backend: BackendFactory,
) -> None:
    """put_many stores a batch at once: a later entry of the same key replaces the earlier,
    the totals count each live entry once, and eviction to the byte budget is reported."""
    backend = make_backend(2500)
    assert isinstance(backend, BatchBackend)
    batch = [stored("t1", "a", 1000), stored("t1", "b", 1000), stored("t1", "a", 900)]
    assert await backend.put_many(batch, now=1.0) == 0
    got = await backend.get("t1", "a", now=2.0)
    assert got is not None and len(got.sealed) == 900
    usage = await backend.usage()
    assert usage.entries == 2 and usage.bytes == batch[1].size + batch[2].size
    assert await backend.put_many([stored("t2", "c", 1000)], now=3.0) == 1  # LRU "b" goes
    assert await backend.get("t1", "b", now=4.0) is None
    assert await backend.put_many([], now=5.0) == 0


async def test_backend_put_get_replace_delete(make_backend: BackendFactory) -> None:
    """An entry reads back as stored, a second put replaces it, delete removes it."""
    backend = make_backend(10**6)
    await backend.put(stored("t1", "k1", 10), now=1.0)
    await backend.put(stored("t1", "k1", 20), now=2.0)
    got = await backend.get("t1", "k1", now=3.0)
    assert got is not None and got.sealed == b"x" * 20
    usage = await backend.usage()
    assert usage.entries == 1 and usage.bytes == got.size
    assert await backend.get("t2", "k1", now=3.0) is None  # another tenant, same key
    await backend.delete("t1", "k1")
    assert await backend.get("t1", "k1", now=3.0) is None
    assert (await backend.usage()).bytes == 0


async def test_backend_never_returns_an_expired_entry(make_backend: BackendFactory) -> None:
    """At or after expires_at the entry is gone, and its bytes no longer count."""
    backend = make_backend(10**6)
    await backend.put(stored("t1", "k1", expires=100.0), now=1.0)
    assert await backend.get("t1", "k1", now=99.9) is not None
    assert await backend.get("t1", "k1", now=100.0) is None
    assert (await backend.usage()).entries == 0


async def test_backend_evicts_least_recently_used_by_bytes(make_backend: BackendFactory) -> None:
    """Over the byte budget, the least recently used entries go first, whatever their age."""
    size = stored("t1", "k1").size
    backend = make_backend(3 * size + size // 2)
    for now, key in enumerate(("k1", "k2", "k3"), start=1):
        assert await backend.put(stored("t1", key), now=float(now)) == 0
    assert await backend.get("t1", "k1", now=10.0) is not None  # k1 is now the freshest
    assert await backend.put(stored("t2", "k4"), now=11.0) == 1
    assert await backend.get("t1", "k2", now=12.0) is None
    for key, tenant in (("k1", "t1"), ("k3", "t1"), ("k4", "t2")):
        assert await backend.get(tenant, key, now=12.0) is not None
    usage = await backend.usage()
    assert usage.entries == 3 and usage.bytes <= usage.max_bytes
    # One entry bigger than the whole budget is not kept.
    await backend.put(stored("t1", "huge", 10 * size), now=13.0)
    assert await backend.get("t1", "huge", now=14.0) is None
    assert (await backend.usage()).bytes <= usage.max_bytes


async def test_backend_clear_tenant_touches_only_that_tenant(make_backend: BackendFactory) -> None:
    """clear_tenant removes one tenant's entries and reports how many."""
    backend = make_backend(10**6)
    for key in ("a", "b"):
        await backend.put(stored("t1", key), now=1.0)
    await backend.put(stored("t2", "a"), now=1.0)
    assert await backend.clear_tenant("t1") == 2
    assert await backend.get("t1", "a", now=2.0) is None
    assert await backend.get("t2", "a", now=2.0) is not None
    assert (await backend.usage()).entries == 1


async def test_backend_lists_new_vectors_in_order(make_backend: BackendFactory) -> None:
    """vectors() pages one tenant's semantic entries after a sequence number, live ones only."""
    backend = make_backend(10**6)

    def semantic(tenant: str, key: str, expires: float = 1e12) -> StoredEntry:
        return StoredEntry(tenant, key, b"s", 0.0, expires, group="g", vector=b"v-" + key.encode())

    await backend.put(semantic("t1", "a"), now=1.0)
    await backend.put(stored("t1", "exact-only"), now=1.0)
    await backend.put(semantic("t2", "other-tenant"), now=1.0)
    await backend.put(semantic("t1", "b", expires=5.0), now=1.0)
    await backend.put(semantic("t1", "c"), now=1.0)
    rows = await backend.vectors("t1", 0, now=2.0, limit=10)
    assert [r.key for r in rows] == ["a", "b", "c"] and rows[0].vector == b"v-a"
    assert [r.key for r in await backend.vectors("t1", rows[0].seq, now=6.0, limit=10)] == ["c"]
    assert len(await backend.vectors("t1", 0, now=2.0, limit=2)) == 2


async def test_two_sqlite_backends_share_one_file(tmp_path: Path) -> None:
    """Two processes' connections to one file see each other's entries and totals."""
    first = SQLiteBackend(str(tmp_path / "shared.db"))
    second = SQLiteBackend(str(tmp_path / "shared.db"))
    try:
        await first.put(stored("t1", "k"), now=1.0)
        assert await second.get("t1", "k", now=2.0) is not None
        assert (await second.usage()).entries == 1
    finally:
        await first.close()
        await second.close()


def last_used(path: Path, key: str) -> float:
    with sqlite3.connect(path) as conn:
        found = conn.execute("SELECT last_used FROM byok_cache_v1 WHERE key = ?", (key,))
        return float(found.fetchone()[0])


async def test_a_sqlite_hit_writes_its_use_time_later_and_before_an_eviction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hit is a read alone: the use time waits in memory, and is written at the start of the
    next store (whose eviction must see it), after TOUCH_DELAY, or on close."""
    import byok_middleware.cache.sqlite as sqlite_backend

    monkeypatch.setattr(sqlite_backend, "TOUCH_DELAY", 3600.0)  # only a store or close writes
    path = tmp_path / "touch.db"
    size = stored("t1", "k1").size
    backend = SQLiteBackend(str(path), max_bytes=3 * size + size // 2, touch_seconds=0)
    try:
        for now, key in enumerate(("k1", "k2", "k3"), start=1):
            await backend.put(stored("t1", key), now=float(now))
        assert await backend.get("t1", "k1", now=10.0) is not None
        assert last_used(path, "k1") == 1.0  # not written on the hit's path
        assert await backend.put(stored("t1", "k4"), now=11.0) == 1
        assert await backend.get("t1", "k2", now=12.0) is None  # k1 was used later: k2 went
        assert last_used(path, "k1") == 10.0
        assert await backend.get("t1", "k3", now=13.0) is not None
    finally:
        await backend.close()
    assert last_used(path, "k3") == 13.0  # close wrote what was pending

    monkeypatch.setattr(sqlite_backend, "TOUCH_DELAY", 0.01)
    backend = SQLiteBackend(str(path), max_bytes=3 * size + size // 2, touch_seconds=0)
    try:
        assert await backend.get("t1", "k4", now=20.0) is not None
        for _ in range(200):  # bounded: ~2 s
            if last_used(path, "k4") == 20.0:
                break
            await asyncio.sleep(0.01)
        assert last_used(path, "k4") == 20.0  # written behind, without a store
    finally:
        await backend.close()


# ---------------------------------------------------------------- the facade


def read_files(folder: Path, prefix: str) -> bytes:
    """Every byte of the database, its WAL and shared-memory files."""
    return b"".join(p.read_bytes() for p in folder.iterdir() if p.name.startswith(prefix))


def make_cache(
    backend: CacheBackend,
    keyring: Keyring,
    clock: FakeClock,
    *,
    ttl: float = 3600,
) -> ResponseCache:
    settings = CacheSettings(mode=CacheMode.EXACT, ttl_seconds=ttl, lru_touch_seconds=0)
    return ResponseCache(backend, keyring, settings, clock=clock)


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.parse("k1:" + generate_master_key())


async def test_exact_hit_returns_the_answer_without_our_metadata(keyring: Keyring) -> None:
    """A stored answer comes back for an equal request; hit metadata shows the money saved."""
    cache = make_cache(MemoryBackend(), keyring, FakeClock())
    assert await cache.lookup("t1", "openai", "gpt-4o", body()) is None
    assert await cache.store(
        "t1", "openai", "gpt-4o", body(), answer(), cost_usd=Decimal("0.00125")
    )
    hit = await cache.lookup("t1", "openai", "gpt-4o", body(stream=True, user="u"))
    assert hit is not None and hit.similarity is None
    assert hit.headers() == [(b"x-byok-cache", b"hit")]
    assert "xantly_metadata" not in hit.entry.response
    meta = hit.metadata("req-new")
    assert meta["cache_hit"] is True and meta["cost_usd"] == 0.0 and meta["attempts"] == 0
    assert meta["cost_saved_usd"] == 0.00125 and meta["cost_attribution"] == "cache"
    assert (meta["provider_used"], meta["model_used"], meta["request_id"]) == (
        "openai",
        "gpt-4o",
        "req-new",
    )
    plain = hit.as_json("xantly_metadata", meta)
    assert plain["choices"][0]["message"]["content"] == ANSWER
    assert plain["xantly_metadata"] == meta
    assert cache.metrics.exact_hits == 1 and cache.metrics.saved_usd == Decimal("0.00125")


async def test_no_hit_across_tenants(keyring: Keyring) -> None:
    """Tenant B never gets tenant A's answer, even for an identical request."""
    cache = make_cache(MemoryBackend(), keyring, FakeClock())
    await cache.store("tenant-a", "openai", "gpt-4o", body(), answer(), cost_usd=None)
    assert await cache.lookup("tenant-b", "openai", "gpt-4o", body()) is None
    assert await cache.lookup("tenant-a", "openai", "gpt-4o", body()) is not None


async def test_mode_off_and_bad_answers_store_nothing(keyring: Keyring) -> None:
    """Off means no lookup or store; errors, cut and truncated answers are never stored."""
    cache = make_cache(MemoryBackend(), keyring, FakeClock())
    args = ("t1", "openai", "gpt-4o", body())
    assert not await cache.store(*args, answer(), cost_usd=None, mode=CacheMode.OFF)
    assert not await cache.store(*args, answer(), cost_usd=None, status=502)
    assert not await cache.store(*args, None, cost_usd=None)
    truncated = answer()
    truncated["choices"][0]["finish_reason"] = "length"
    assert not await cache.store(*args, truncated, cost_usd=None)
    assert await cache.lookup(*args) is None and cache.metrics.rejected == 3
    await cache.store(*args, answer(), cost_usd=None)
    assert await cache.lookup(*args, mode=CacheMode.OFF) is None


async def test_ttl_expiry_with_an_injected_clock(keyring: Keyring) -> None:
    """An entry serves until its TTL has passed on the injected clock, then it is a miss."""
    clock = FakeClock()
    cache = make_cache(MemoryBackend(), keyring, clock, ttl=60)
    await cache.store("t1", "openai", "gpt-4o", body(), answer(), cost_usd=None)
    clock.advance(59.9)
    assert await cache.lookup("t1", "openai", "gpt-4o", body()) is not None
    clock.advance(0.1)
    assert await cache.lookup("t1", "openai", "gpt-4o", body()) is None


async def test_lru_by_bytes_through_the_facade(keyring: Keyring, tmp_path: Path) -> None:
    """With a byte budget for about two answers, the least recently used one is evicted."""
    clock = FakeClock()
    probe = make_cache(MemoryBackend(), keyring, clock)
    await probe.store("t1", "openai", "gpt-4o", body("q0"), answer(), cost_usd=None)
    one = (await probe.sizes()).backend.bytes
    backend = SQLiteBackend(str(tmp_path / "lru.db"), max_bytes=int(one * 2.5), touch_seconds=0)
    cache = make_cache(backend, keyring, clock)
    try:
        for text in ("q1", "q2"):
            clock.advance(1)
            await cache.store("t1", "openai", "gpt-4o", body(text), answer(), cost_usd=None)
        clock.advance(1)
        assert await cache.lookup("t1", "openai", "gpt-4o", body("q1")) is not None
        clock.advance(1)
        await cache.store("t1", "openai", "gpt-4o", body("q3"), answer(), cost_usd=None)
        assert await cache.lookup("t1", "openai", "gpt-4o", body("q2")) is None
        assert await cache.lookup("t1", "openai", "gpt-4o", body("q1")) is not None
        assert await cache.lookup("t1", "openai", "gpt-4o", body("q3")) is not None
        assert cache.metrics.evicted == 1
        sizes = await cache.sizes()
        assert sizes.backend.entries == 2 and sizes.backend.bytes <= sizes.backend.max_bytes
    finally:
        await cache.close()


async def test_sealed_at_rest_in_the_sqlite_file(keyring: Keyring, tmp_path: Path) -> None:
    """The raw database file holds no prompt, no answer and no provider key in clear."""
    path = tmp_path / "byok.db"
    cache = make_cache(SQLiteBackend(str(path)), keyring, FakeClock())
    leaky = answer()
    leaky["xantly_metadata"]["echo"] = CANARY  # even if a caller forgot to strip something
    request = body(PROMPT + " " + CANARY)
    try:
        assert await cache.store("t1", "openai", "gpt-4o", request, leaky, cost_usd=None)
        assert await cache.lookup("t1", "openai", "gpt-4o", request) is not None
    finally:
        await cache.close()
    raw = read_files(tmp_path, "byok.db")
    assert len(raw) > 0
    for secret in (PROMPT, ANSWER, CANARY, "ACME", "Summarise", "sk-canary"):
        assert secret.encode() not in raw, secret
    with sqlite3.connect(path) as db:
        (sealed,) = db.execute("SELECT entry FROM byok_cache_v1").fetchone()
    assert ANSWER.encode() not in sealed and sealed[0] == 1  # the keyring's envelope


async def test_a_row_moved_to_another_tenant_does_not_open(
    keyring: Keyring, tmp_path: Path
) -> None:
    """The AAD binds an entry to its tenant and key: a copied row is dropped, not served."""
    path = tmp_path / "moved.db"
    cache = make_cache(SQLiteBackend(str(path)), keyring, FakeClock())
    try:
        await cache.store("t1", "openai", "gpt-4o", body(), answer(), cost_usd=None)
        victim_key = request_keys("t1", "openai", "gpt-4o", body()).exact
        attacker_key = request_keys("t2", "openai", "gpt-4o", body())
        with sqlite3.connect(path) as db:
            db.execute(
                "INSERT INTO byok_cache_v1 (tenant_id, key, grp, entry, vector, size, "
                "created_at, expires_at, last_used) SELECT 't2', ?, grp, entry, vector, size, "
                "created_at, expires_at, last_used FROM byok_cache_v1 WHERE key = ?",
                (attacker_key.exact, victim_key),
            )
        assert await cache.lookup("t2", "openai", "gpt-4o", body()) is None
        assert cache.metrics.dropped == 1
    finally:
        await cache.close()


async def test_rotation_drops_entries_of_a_removed_master_key(tmp_path: Path) -> None:
    """Entries sealed under a key still in the ring open; once it is removed they are dropped."""
    old, new = generate_master_key(), generate_master_key()
    path = str(tmp_path / "rotate.db")
    clock = FakeClock()
    first = make_cache(SQLiteBackend(path), Keyring.parse(f"old:{old}"), clock)
    await first.store("t1", "openai", "gpt-4o", body(), answer(), cost_usd=None)
    await first.close()
    both = make_cache(SQLiteBackend(path), Keyring.parse(f"new:{new},old:{old}"), clock)
    assert await both.lookup("t1", "openai", "gpt-4o", body()) is not None
    await both.close()
    only_new = make_cache(SQLiteBackend(path), Keyring.parse(f"new:{new}"), clock)
    try:
        assert await only_new.lookup("t1", "openai", "gpt-4o", body()) is None
        assert only_new.metrics.dropped == 1
        assert (await only_new.sizes()).backend.entries == 0
    finally:
        await only_new.close()


async def test_two_caches_over_one_sqlite_file_share_hits(keyring: Keyring, tmp_path: Path) -> None:
    """What one replica stores, another replica on the same file serves; clearing is shared."""
    path = str(tmp_path / "replicas.db")
    clock = FakeClock()
    one = make_cache(SQLiteBackend(path), keyring, clock)
    two = make_cache(SQLiteBackend(path), keyring, clock)
    try:
        await one.store("t1", "openai", "gpt-4o", body(), answer(), cost_usd=Decimal("0.002"))
        hit = await two.lookup("t1", "openai", "gpt-4o", body())
        assert hit is not None and hit.entry.cost_usd == Decimal("0.002")
        assert await two.clear_tenant("t1") == 1
        assert await one.lookup("t1", "openai", "gpt-4o", body()) is None
    finally:
        await one.close()
        await two.close()


async def test_embeddings_are_cached_exactly(keyring: Keyring) -> None:
    """An embeddings answer is stored and served under its own kind, never as a chat answer."""
    cache = make_cache(MemoryBackend(), keyring, FakeClock())
    request = {"model": "text-embedding-3-small", "input": "hello"}
    response = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}]}
    args = ("t1", "openai", "text-embedding-3-small", request)
    assert await cache.store(*args, response, cost_usd=None, kind="embeddings")
    hit = await cache.lookup(*args, kind="embeddings")
    assert hit is not None and hit.entry.response["data"][0]["embedding"] == [0.1]
    assert await cache.lookup(*args) is None


async def test_memory_backend_lists_only_the_live_row_of_a_replaced_entry() -> None:
    """Replacing one semantic entry many times leaves one row to list, not the history."""
    backend = MemoryBackend()
    for i in range(3000):
        vector = f"v{i}".encode()
        await backend.put(StoredEntry("t1", "k", b"s", 0.0, 1e12, "g", vector), now=float(i))
    rows = await backend.vectors("t1", 0, now=1.0, limit=10)
    assert [(r.key, r.vector) for r in rows] == [("k", b"v2999")]

"""The write-behind queue: a deferred store serves at once, is written in a batch, keeps the
cache's guarantees (sealed at rest, TTL, tenant clears) and never fails a request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from byok_middleware.cache import (
    CacheMode,
    CacheSettings,
    MemoryBackend,
    ResponseCache,
    SQLiteBackend,
    StoredEntry,
)
from byok_middleware.crypto import Keyring, generate_master_key
from tests.test_cache_store import ANSWER, PROMPT, FakeClock, answer, body, read_files

ARGS = ("openai", "gpt-4o")


class CountingBackend(MemoryBackend):
    """A memory backend that counts its batch writes and can be told to fail them."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.fail = False

    async def put_many(self, entries: Sequence[StoredEntry], now: float) -> int:
        if self.fail:
            raise OSError("disk full")
        self.batches.append(len(entries))
        return await super().put_many(entries, now)


def make(
    backend: MemoryBackend | SQLiteBackend, *, delay: float = 60, batch: int = 64
) -> ResponseCache:
    settings = CacheSettings(
        mode=CacheMode.EXACT, ttl_seconds=100, store_delay_seconds=delay, store_batch=batch
    )
    return ResponseCache(backend, Keyring.parse(generate_master_key()), settings, clock=FakeClock())


async def test_a_deferred_store_serves_at_once_and_is_written_in_one_batch() -> None:
    """Deferred answers hit in this process before their write; flush writes them together."""
    backend = CountingBackend()
    cache = make(backend)
    for text in ("q1", "q2", "q3"):
        assert await cache.store("t1", *ARGS, body(text), answer(), cost_usd=None, defer=True)
    assert backend.batches == [] and (await backend.usage()).entries == 0
    hit = await cache.lookup("t1", *ARGS, body("q2"))
    assert hit is not None and hit.entry.response["choices"][0]["message"]["content"] == ANSWER
    await cache.flush()
    assert backend.batches == [3] and (await backend.usage()).entries == 3
    await cache.close()


async def test_the_writer_writes_after_the_delay_or_at_a_full_batch() -> None:
    """The background writer runs by itself: at ``store_batch`` rows, or after the delay."""
    backend = CountingBackend()
    cache = make(backend, delay=60, batch=2)
    await cache.store("t1", *ARGS, body("a"), answer(), cost_usd=None, defer=True)
    await cache.store("t1", *ARGS, body("b"), answer(), cost_usd=None, defer=True)
    for _ in range(100):
        if backend.batches:
            break
        await asyncio.sleep(0.01)
    assert backend.batches == [2]
    await cache.close()
    quick = CountingBackend()
    cache = make(quick, delay=0.05)
    await cache.store("t1", *ARGS, body("c"), answer(), cost_usd=None, defer=True)
    await asyncio.sleep(0.3)
    assert quick.batches == [1]
    await cache.close()


async def test_pending_entries_expire_and_a_clear_drops_only_its_tenant() -> None:
    """A pending entry stops serving at its TTL; DELETE of one tenant drops its pending rows
    and none of them is written afterwards, another tenant's stay."""
    backend = CountingBackend()
    cache = make(backend)
    clock = FakeClock()
    cache._clock = clock  # the test moves time
    await cache.store("t1", *ARGS, body(), answer(), cost_usd=None, defer=True)
    await cache.store("t2", *ARGS, body(), answer(), cost_usd=None, defer=True)
    assert await cache.clear_tenant("t1") == 0
    assert await cache.lookup("t1", *ARGS, body()) is None
    assert await cache.lookup("t2", *ARGS, body()) is not None
    await cache.flush()
    assert [k[0] for k in backend._entries] == ["t2"]
    await cache.store("t3", *ARGS, body(), answer(), cost_usd=None, defer=True)
    clock.advance(101)
    assert await cache.lookup("t3", *ARGS, body()) is None
    await cache.close()


async def test_a_failed_write_is_logged_and_forgotten(caplog: pytest.LogCaptureFixture) -> None:
    """A backend that refuses a batch: the answers are dropped with a warning (no content in
    it), the cache keeps working, and the next batch is written."""
    backend = CountingBackend()
    cache = make(backend, delay=0.01)
    backend.fail = True
    with caplog.at_level(logging.WARNING, logger="byok_middleware.cache"):
        await cache.store("t1", *ARGS, body(), answer(), cost_usd=Decimal("0.1"), defer=True)
        for _ in range(100):
            if cache._writes.failures:
                break
            await asyncio.sleep(0.01)
    assert cache.metrics.write_failures == 1 and "disk full" in caplog.text
    assert PROMPT not in caplog.text and ANSWER not in caplog.text
    assert await cache.lookup("t1", *ARGS, body()) is None  # forgotten, not half-stored
    backend.fail = False
    await cache.store("t1", *ARGS, body(), answer(), cost_usd=None, defer=True)
    await cache.close()
    assert backend.batches == [1]


async def test_close_writes_what_is_pending_sealed(tmp_path: Path) -> None:
    """Closing writes the queue to the SQLite file; what lands there is sealed."""
    cache = make(SQLiteBackend(str(tmp_path / "c.db")))
    await cache.store("t1", *ARGS, body(), answer(), cost_usd=None, defer=True)
    await cache.close()
    raw = read_files(tmp_path, "c.db")
    assert b"byok_cache_v1" in raw and PROMPT.encode() not in raw and ANSWER.encode() not in raw
    reopened = SQLiteBackend(str(tmp_path / "c.db"))
    assert (await reopened.usage()).entries == 1
    await reopened.close()


async def test_a_pending_semantic_entry_serves_a_paraphrase_on_its_exact_similarity() -> None:
    """Before its write, a deferred semantic entry serves a paraphrase, with the exact cosine of
    the stored vectors (not the quantised index's), and a loosely related question misses."""
    from tests.test_cache_semantic import LOOSE, PARAPHRASE, QUESTION, VECTORS, TableEmbedder

    backend = CountingBackend()
    settings = CacheSettings(
        mode=CacheMode.SEMANTIC, semantic_sync_seconds=0, store_delay_seconds=60
    )
    cache = ResponseCache(
        backend, Keyring.parse(generate_master_key()), settings, embedder=TableEmbedder()
    )
    assert await cache.lookup("t1", *ARGS, body(QUESTION)) is None
    assert await cache.store("t1", *ARGS, body(QUESTION), answer(), cost_usd=None, defer=True)
    assert backend.batches == []
    hit = await cache.lookup("t1", *ARGS, body(PARAPHRASE))
    exact = sum(a * b for a, b in zip(VECTORS[QUESTION], VECTORS[PARAPHRASE], strict=True))
    assert hit is not None and hit.similarity == pytest.approx(exact, abs=1e-6)
    assert await cache.lookup("t1", *ARGS, body(LOOSE)) is None
    await cache.close()
    assert backend.batches == [1]

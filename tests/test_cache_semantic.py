"""The semantic layer with deterministic vectors: paraphrases hit, other questions miss."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy
import pytest

from byok_middleware.cache import (
    CacheMode,
    CacheSettings,
    EmbeddingUnavailable,
    MemoryBackend,
    ProviderEmbedder,
    ResponseCache,
    SQLiteBackend,
)
from byok_middleware.cache.backend import CacheBackend, StoredEntry
from byok_middleware.crypto import Keyring, generate_master_key
from byok_middleware.errors import NoProviderKey

QUESTION = "What is the capital of France?"
PARAPHRASE = "Which city is France's capital?"
LOOSE = "Tell me about French cities"  # related, but below the threshold
OTHER = "How tall is Mount Everest?"


def unit(*values: float) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


VECTORS = {
    QUESTION: unit(1.0, 0.10, 0.0, 0.0),
    PARAPHRASE: unit(1.0, 0.12, 0.03, 0.0),  # cosine ~0.9995 with QUESTION
    LOOSE: unit(1.0, 0.55, 0.0, 0.2),  # cosine ~0.87
    OTHER: unit(0.0, 0.0, 1.0, 0.1),
}


class TableEmbedder:
    """Deterministic vectors from a table of known texts; counts its calls."""

    name = "test/table-embedder"

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, tenant_id: str, text: str) -> Sequence[float]:
        self.calls += 1
        for known, vector in VECTORS.items():
            if known in text:
                return vector
        raise EmbeddingUnavailable("no vector for this text")


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}


def answer(text: str = "Paris.") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
    }


def make_cache(
    backend: CacheBackend | None = None, embedder: TableEmbedder | None = None
) -> ResponseCache:
    settings = CacheSettings(mode=CacheMode.SEMANTIC, semantic_sync_seconds=0)
    return ResponseCache(
        backend or MemoryBackend(),
        Keyring.parse("k:" + KEY),
        settings,
        embedder=embedder or TableEmbedder(),
        clock=lambda: datetime(2030, 1, 1, tzinfo=UTC),
    )


KEY = generate_master_key()


async def seeded(cache: ResponseCache, tenant: str = "t1", **extra: Any) -> None:
    assert await cache.lookup(tenant, "openai", "gpt-4o", body(QUESTION, **extra)) is None
    assert await cache.store(
        tenant, "openai", "gpt-4o", body(QUESTION, **extra), answer(), cost_usd=None
    )


async def test_a_paraphrase_hits_and_a_different_question_misses() -> None:
    """Above the threshold the stored answer serves, with its similarity; below, a miss."""
    cache = make_cache()
    await seeded(cache)
    hit = await cache.lookup("t1", "openai", "gpt-4o", body(PARAPHRASE))
    assert hit is not None and hit.similarity is not None
    assert 0.99 < hit.similarity <= 1.0
    assert hit.entry.response["choices"][0]["message"]["content"] == "Paris."
    header = dict(hit.headers())[b"x-byok-cache-similarity"]
    assert 0.99 < float(header) <= 1.0
    assert await cache.lookup("t1", "openai", "gpt-4o", body(OTHER)) is None
    assert await cache.lookup("t1", "openai", "gpt-4o", body(LOOSE)) is None
    assert (cache.metrics.semantic_hits, cache.metrics.misses) == (1, 3)


async def test_the_threshold_is_the_operators() -> None:
    """A lower BYOK_CACHE_MIN_SIMILARITY lets a looser question hit."""
    settings = CacheSettings(mode=CacheMode.SEMANTIC, min_similarity=0.8, semantic_sync_seconds=0)
    cache = ResponseCache(MemoryBackend(), Keyring.parse(KEY), settings, embedder=TableEmbedder())
    await seeded(cache)
    hit = await cache.lookup("t1", "openai", "gpt-4o", body(LOOSE))
    assert hit is not None and hit.similarity is not None and 0.8 < hit.similarity < 0.95


async def test_one_embedding_per_miss_and_store() -> None:
    """The vector made for a missed lookup is reused by its store."""
    embedder = TableEmbedder()
    cache = make_cache(embedder=embedder)
    await seeded(cache)
    assert embedder.calls == 1
    assert await cache.lookup("t1", "openai", "gpt-4o", body(QUESTION)) is not None
    assert embedder.calls == 1  # an exact hit needs no embedding


@pytest.mark.parametrize(
    "extra",
    [
        {"tools": [{"type": "function", "function": {"name": "lookup_capital"}}]},
        {"n": 2},
    ],
)
async def test_tools_and_n_bypass_the_semantic_layer(extra: dict[str, Any]) -> None:
    """With tools or n > 1 a paraphrase is a miss, and nothing is embedded."""
    embedder = TableEmbedder()
    cache = make_cache(embedder=embedder)
    await seeded(cache, **extra)
    assert await cache.lookup("t1", "openai", "gpt-4o", body(PARAPHRASE, **extra)) is None
    assert await cache.lookup("t1", "openai", "gpt-4o", body(QUESTION, **extra)) is not None
    assert embedder.calls == 0


async def test_a_candidate_must_match_every_non_text_parameter() -> None:
    """Same meaning but another temperature, model or system role: a miss."""
    cache = make_cache()
    await seeded(cache, temperature=0)
    assert await cache.lookup("t1", "openai", "gpt-4o", body(PARAPHRASE, temperature=0))
    assert await cache.lookup("t1", "openai", "gpt-4o", body(PARAPHRASE, temperature=1)) is None
    assert await cache.lookup("t1", "openai", "gpt-4o-mini", body(PARAPHRASE)) is None
    system = {"messages": [{"role": "system", "content": PARAPHRASE}], "temperature": 0}
    assert await cache.lookup("t1", "openai", "gpt-4o", {**body(""), **system}) is None


async def test_no_semantic_hit_across_tenants() -> None:
    """Tenant B's paraphrase never finds tenant A's answer."""
    cache = make_cache()
    await seeded(cache, "tenant-a")
    assert await cache.lookup("tenant-b", "openai", "gpt-4o", body(PARAPHRASE)) is None
    assert await cache.lookup("tenant-b", "openai", "gpt-4o", body(QUESTION)) is None
    assert await cache.lookup("tenant-a", "openai", "gpt-4o", body(PARAPHRASE)) is not None


async def test_exact_mode_makes_no_semantic_lookup() -> None:
    """A tenant whose policy says exact gets exact hits only, even on a semantic cache."""
    embedder = TableEmbedder()
    cache = make_cache(embedder=embedder)
    await seeded(cache)
    calls = embedder.calls
    assert await cache.lookup("t1", "openai", "gpt-4o", body(PARAPHRASE), CacheMode.EXACT) is None
    assert embedder.calls == calls


async def test_an_embedding_failure_leaves_the_exact_layer_working() -> None:
    """No vector (no key for the embedding model, upstream down): exact hits still serve."""

    async def no_key(tenant_id: str, model: str, text: str) -> Sequence[float]:
        raise NoProviderKey("no key for openai")

    embedder = ProviderEmbedder("openai/text-embedding-3-small", no_key)
    settings = CacheSettings(mode=CacheMode.SEMANTIC)
    cache = ResponseCache(MemoryBackend(), Keyring.parse(KEY), settings, embedder=embedder)
    assert await cache.lookup("t1", "openai", "gpt-4o", body(QUESTION)) is None
    assert await cache.store("t1", "openai", "gpt-4o", body(QUESTION), answer(), cost_usd=None)
    assert await cache.lookup("t1", "openai", "gpt-4o", body(QUESTION)) is not None
    assert await cache.lookup("t1", "openai", "gpt-4o", body(PARAPHRASE)) is None
    assert cache.metrics.embed_failures == 3


async def test_two_replicas_on_one_sqlite_file_share_semantic_hits(tmp_path: Path) -> None:
    """A replica's index catches up with vectors another replica stored."""
    path = str(tmp_path / "semantic.db")
    one, two = make_cache(SQLiteBackend(path)), make_cache(SQLiteBackend(path))
    try:
        await seeded(one)
        hit = await two.lookup("t1", "openai", "gpt-4o", body(PARAPHRASE))
        assert hit is not None and hit.similarity is not None
        assert (await two.sizes()).indexed["t1"] == 1
    finally:
        await one.close()
        await two.close()


async def test_cleared_and_evicted_entries_leave_the_index() -> None:
    """After clear_tenant, or once the backend lost an entry, the index no longer offers it."""
    backend = MemoryBackend()
    cache = make_cache(backend)
    await seeded(cache)
    assert await cache.clear_tenant("t1") == 1
    assert await cache.lookup("t1", "openai", "gpt-4o", body(PARAPHRASE)) is None
    await seeded(cache)
    key = (await cache.lookup("t1", "openai", "gpt-4o", body(QUESTION)) or pytest.fail("hit")).key
    await backend.delete("t1", key)
    assert await cache.lookup("t1", "openai", "gpt-4o", body(PARAPHRASE)) is None
    assert (await cache.sizes()).indexed["t1"] == 0


class CountingSQLite(SQLiteBackend):
    """Counts the rows a lookup asks the backend for."""

    reads = 0

    async def get(self, tenant_id: str, key: str, now: float) -> StoredEntry | None:
        self.reads += 1
        return await super().get(tenant_id, key, now)


class RandomEmbedder:
    """Random unit vectors of 384 dimensions for ``question i``, noisy copies for ``copy i``."""

    name = "test/random-embedder"

    def __init__(self, count: int) -> None:
        rng = numpy.random.default_rng(11)
        rows = rng.standard_normal((count, 384)).astype(numpy.float32)
        self.rows = rows / numpy.linalg.norm(rows, axis=1, keepdims=True)
        noise = rng.standard_normal((count, 384)).astype(numpy.float32)
        copies = self.rows + 0.05 * noise / numpy.linalg.norm(noise, axis=1, keepdims=True)
        self.copies = copies / numpy.linalg.norm(copies, axis=1, keepdims=True)

    async def embed(self, tenant_id: str, text: str) -> Sequence[float]:
        kind, number = text.removeprefix("user: ").split()
        return (self.rows if kind == "question" else self.copies)[int(number)].tolist()


async def test_near_duplicates_among_many_hit_reading_one_entry_each(tmp_path: Path) -> None:
    """Among 2,000 random entries on SQLite, a noisy copy (cosine ~0.999) of any of them hits
    that entry, and the lookup reads two rows: the exact key's (absent) and the one candidate's.
    (At 100,000 entries the index's recall is measured by ``benchmarks.cache_bench``.)"""
    count = 2000
    embedder = RandomEmbedder(count)
    backend = CountingSQLite(str(tmp_path / "many.db"))
    cache = ResponseCache(
        backend,
        Keyring.parse("k:" + KEY),
        CacheSettings(mode=CacheMode.SEMANTIC, semantic_sync_seconds=0),
        embedder=embedder,
    )
    try:
        for i in range(count):
            text = f"question {i}"
            await cache.store("t1", "openai", "gpt-4o", body(text), answer(text), cost_usd=None)
        for i in range(0, count, 20):
            backend.reads = 0
            hit = await cache.lookup("t1", "openai", "gpt-4o", body(f"copy {i}"))
            assert hit is not None and hit.similarity is not None and hit.similarity > 0.99
            assert hit.entry.response["choices"][0]["message"]["content"] == f"question {i}"
            assert backend.reads == 2
    finally:
        await cache.close()

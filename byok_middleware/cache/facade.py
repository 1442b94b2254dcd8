"""``ResponseCache``: the one object the request pipeline talks to.

Before the upstream call the pipeline asks :meth:`ResponseCache.lookup`; after a good answer it
hands the answer to :meth:`ResponseCache.store`. The cache never decides who pays for a miss and
never raises on its own account during a request: an entry that cannot be opened (a master key
gone from the keyring, tampering) is dropped and counts as a miss, and an embedding that cannot be
made leaves the request to the exact layer.

A repeated exact request is answered from the hot layer (``cache/hot.py``) when it can be: no
backend read, no decryption, no canonical JSON, and the answer's JSON already written.

A store called with ``defer=True`` (the request path's) seals the answer and leaves its write to
``cache/writer.py``: batched, after the response, in one backend call; this process serves the
entry from there meanwhile. Without ``defer`` a store returns once its row is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from byok_middleware.cache.backend import CacheBackend, StoredEntry
from byok_middleware.cache.entry import (
    CacheEntry,
    is_storable,
    open_entry,
    open_vector,
    seal_entry,
    seal_vector,
)
from byok_middleware.cache.hit import Hit
from byok_middleware.cache.hot import HotEntries, KeyMemo, body_digest
from byok_middleware.cache.keys import CacheKind, RequestKeys, request_keys
from byok_middleware.cache.metrics import CacheMetrics, CacheSizes
from byok_middleware.cache.semantic import (
    Embedder,
    EmbeddingUnavailable,
    SemanticIndex,
    cosine,
    vector_bytes,
)
from byok_middleware.cache.settings import CacheMode, CacheSettings
from byok_middleware.cache.sync import SYNC_PAGE, PageReader
from byok_middleware.cache.writer import Pending, PendingWrites
from byok_middleware.clock import Clock, utcnow
from byok_middleware.crypto import DecryptionError, Keyring
from byok_middleware.errors import ConfigurationError

__all__ = ["CacheMetrics", "CacheSizes", "Hit", "ResponseCache"]

logger = logging.getLogger("byok_middleware.cache")

# A lookup waits for at most this much catching up (an HNSW insert costs ~0.8 ms at 100,000
# vectors, so 2 x 64 is ~0.1 s at worst); the rest runs behind, in pages of SYNC_PAGE.
_SYNC_INLINE_PAGES, _SYNC_INLINE_PAGE = 2, 64
_VECTOR_MEMO = 1024
_KEY_MEMO = 4096


class ResponseCache:
    """Exact and semantic response cache over a :class:`CacheBackend`, sealed with ``keyring``.

    ``embedder`` is the default for semantic requests; ``lookup``/``store`` take one per call too
    (the engine's provider embedder bound to the request's key rules). ``metadata_field`` is
    stripped from answers before they are stored.
    """

    def __init__(
        self,
        backend: CacheBackend,
        keyring: Keyring,
        settings: CacheSettings | None = None,
        *,
        clock: Clock = utcnow,
        embedder: Embedder | None = None,
        index: SemanticIndex | None = None,
        metadata_field: str = "xantly_metadata",
    ) -> None:
        self.backend = backend
        self.settings = settings or CacheSettings()
        self.metrics = CacheMetrics()
        self._keyring = keyring
        self._clock = clock
        self._embedder = embedder
        self._metadata_field = metadata_field
        self._index = index
        if index is None and self.settings.mode is CacheMode.SEMANTIC:
            self._index = SemanticIndex()  # fails at start-up, not per request, without the extra
        self._vectors: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._hot = HotEntries(
            seconds=self.settings.hot_seconds,
            max_entries=self.settings.hot_entries,
            max_bytes=self.settings.hot_bytes,
        )
        self._memo = KeyMemo(_KEY_MEMO if self._hot.enabled else 0)
        self._background: set[asyncio.Task[None]] = set()
        self._writes = PendingWrites(
            backend,
            delay=self.settings.store_delay_seconds,
            batch=self.settings.store_batch,
            now=self._now,
            on_evicted=self._evicted,
            on_failure=self._write_failed,
        )

    def __repr__(self) -> str:
        return f"ResponseCache(mode={self.settings.mode.value}, backend={self.backend!r})"

    async def open(self) -> None:
        await self.backend.open()

    def _evicted(self, count: int) -> None:
        self.metrics.evicted += count

    def _write_failed(self) -> None:
        self.metrics.write_failures += 1

    async def flush(self) -> None:
        """Write the answers stored with ``defer`` now (closing does it too)."""
        await self._writes.flush()

    async def close(self) -> None:
        await self._writes.close()
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.backend.close()

    def _now(self) -> float:
        # The default clock's reading as epoch seconds, without building a datetime per lookup.
        return time.time() if self._clock is utcnow else self._clock().timestamp()

    def _semantic_index(self) -> SemanticIndex | None:
        if self._index is None:
            try:
                self._index = SemanticIndex()
            except ConfigurationError:
                logger.warning("semantic cache asked for without its extra; using exact only")
                return None
        return self._index

    def _keys(
        self,
        tenant_id: str,
        provider: str,
        model: str,
        body: Mapping[str, Any],
        mode: CacheMode,
        kind: CacheKind,
        embedder: Embedder | None,
    ) -> RequestKeys:
        semantic = mode is CacheMode.SEMANTIC and embedder is not None and kind == "chat"
        return request_keys(
            tenant_id,
            provider,
            model,
            body,
            kind=kind,
            semantic=semantic and self._semantic_index() is not None,
            embedder=embedder.name if embedder is not None else "",
        )

    async def _open(self, row: StoredEntry, kind: CacheKind) -> CacheEntry | None:
        try:
            entry = open_entry(self._keyring, row.tenant_id, row.key, row.sealed)
        except (DecryptionError, ValueError, KeyError):
            # Sealed under a master key no longer in the keyring, or tampered with: drop it.
            self.metrics.dropped += 1
            await self.backend.delete(row.tenant_id, row.key)
            return None
        return entry if entry.kind == kind else None

    async def lookup(
        self,
        tenant_id: str,
        provider: str,
        model: str,
        body: Mapping[str, Any],
        mode: CacheMode | None = None,
        *,
        kind: CacheKind = "chat",
        embed: Embedder | None = None,
    ) -> Hit | None:
        """The stored answer for this request of ``tenant_id`` resolved to ``provider``/``model``:
        exact first, then (``mode`` semantic, eligible request) the nearest neighbour at or
        above ``min_similarity`` with the same non-text parameters. ``mode`` None is the
        operator's setting; pass the tenant policy's mode where it overrides."""
        mode = self.settings.mode if mode is None else mode
        if mode is CacheMode.OFF:
            return None
        self.metrics.lookups += 1
        now = self._now()
        memo_key = self._memo_key(tenant_id, provider, model, kind, body)
        if memo_key is not None and (key := self._memo.get(memo_key)) is not None:
            hot = self._hot.get(tenant_id, key, now)
            if hot is not None and hot.entry.kind == kind:
                self.metrics.hot_hits += 1
                self.metrics.exact_hits += 1
                if hot.entry.cost_usd:
                    self.metrics.saved_usd += hot.entry.cost_usd
                return hot.hit
        embedder = embed or self._embedder
        keys = self._keys(tenant_id, provider, model, body, mode, kind, embedder)
        if memo_key is not None:
            self._memo.put(memo_key, keys.exact)
        pending = self._writes.get(tenant_id, keys.exact, now)
        if pending is not None and pending.entry.kind == kind:
            return self._hit(pending.entry, keys.exact, None)  # stored here, not yet written
        generation = self._hot.generation(tenant_id)
        row = await self.backend.get(tenant_id, keys.exact, now)
        entry = await self._open(row, kind) if row is not None else None
        if row is not None and entry is not None:
            filled = self._hot.fill(
                tenant_id,
                keys.exact,
                entry,
                now=now,
                expires_at=row.expires_at,
                generation=generation,
            )
            if filled is not None:
                return self._hit(entry, keys.exact, None, filled.hit.json)
            return self._hit(entry, keys.exact, None)
        if keys.group is not None and keys.text is not None and embedder is not None:
            hit = await self._semantic_lookup(tenant_id, keys, embedder, now)
            if hit is not None:
                return hit
        self.metrics.misses += 1
        return None

    def _memo_key(
        self, tenant_id: str, provider: str, model: str, kind: CacheKind, body: Mapping[str, Any]
    ) -> tuple[str, str, str, str, bytes] | None:
        if not self._hot.enabled:
            return None
        digest = body_digest(body)
        return None if digest is None else (tenant_id, provider, model, kind, digest)

    def _hit(
        self, entry: CacheEntry, key: str, similarity: float | None, json: bytes | None = None
    ) -> Hit:
        if similarity is None:
            self.metrics.exact_hits += 1
        else:
            self.metrics.semantic_hits += 1
        if entry.cost_usd:
            self.metrics.saved_usd += entry.cost_usd
        return Hit(entry=entry, key=key, similarity=similarity, json=json)

    async def _embed(self, tenant_id: str, text: str, embedder: Embedder) -> bytes | None:
        try:
            return vector_bytes(await embedder.embed(tenant_id, text))
        except EmbeddingUnavailable as exc:
            self.metrics.embed_failures += 1
            logger.warning("cache embedding unavailable (%s); exact layer only", exc)
            return None

    async def _semantic_lookup(
        self, tenant_id: str, keys: RequestKeys, embedder: Embedder, now: float
    ) -> Hit | None:
        index = self._semantic_index()
        if index is None or keys.group is None or keys.text is None:
            return None
        vector = await self._embed(tenant_id, keys.text, embedder)
        if vector is None:
            return None
        self._remember_vector(tenant_id, keys.exact, vector)
        await self.sync_tenant(tenant_id, inline_pages=_SYNC_INLINE_PAGES, page=_SYNC_INLINE_PAGE)
        candidates = index.search(tenant_id, keys.group, vector, self.settings.semantic_candidates)
        floor = self.settings.min_similarity - index.QUANTISATION_MARGIN
        for key, approximate in candidates:
            if approximate < floor:
                break  # best first: the rest are further still
            pending = self._writes.get(tenant_id, key, now)
            row = (
                pending.row if pending is not None else await self.backend.get(tenant_id, key, now)
            )
            if row is None or row.group != keys.group:
                index.remove(tenant_id, key)  # gone from the backend: evicted, expired, replaced
                continue
            similarity = self._similarity(row, vector)
            if similarity is None or similarity < self.settings.min_similarity:
                continue  # the index's figure is approximate; the stored vector decides
            entry = pending.entry if pending is not None else await self._open(row, "chat")
            if entry is not None:
                return self._hit(entry, key, min(similarity, 1.0))
        return None

    def _similarity(self, row: StoredEntry, vector: bytes) -> float | None:
        """The exact cosine of ``vector`` and the row's stored one (None if it cannot be read)."""
        if row.vector is None:
            return None
        try:
            stored = open_vector(self._keyring, row.tenant_id, row.key, row.vector)
        except (DecryptionError, ValueError):
            self.metrics.dropped += 1
            return None
        return cosine(stored, vector)

    def _remember_vector(self, tenant_id: str, key: str, vector: bytes) -> None:
        # The miss's vector, for its store: one embedding call per missed request, not two.
        self._vectors[(tenant_id, key)] = vector
        self._vectors.move_to_end((tenant_id, key))
        while len(self._vectors) > _VECTOR_MEMO:
            self._vectors.popitem(last=False)

    async def sync_tenant(
        self, tenant_id: str, *, inline_pages: int | None = None, page: int = SYNC_PAGE
    ) -> None:
        """Bring this process's index of ``tenant_id`` up to what the backend holds (what other
        replicas stored). At most every ``semantic_sync_seconds``; ``inline_pages`` bounds the
        pages read before returning, the rest is read by a background task."""
        index = self._semantic_index()
        if index is None:
            return
        tenant = index.tenant(tenant_id)
        started = time.monotonic()
        if tenant.lock.locked() or started - tenant.synced_at < self.settings.semantic_sync_seconds:
            return
        async with tenant.lock:
            reader = PageReader(self.backend, self._keyring, index, self.metrics, self._now)
            if await reader.catch_up(tenant_id, tenant, inline_pages=inline_pages, page=page):
                tenant.synced_at = started
                return
        task = asyncio.create_task(self.sync_tenant(tenant_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def store(
        self,
        tenant_id: str,
        provider: str,
        model: str,
        body: Mapping[str, Any],
        response: Mapping[str, Any] | None,
        *,
        cost_usd: Decimal | None,
        status: int = 200,
        mode: CacheMode | None = None,
        kind: CacheKind = "chat",
        embed: Embedder | None = None,
        defer: bool = False,
    ) -> bool:
        """Store a good answer (see ``is_storable``); True when stored. ``response`` is the
        chat completion (a stream assembled by ``StreamAssembler``, None if it was cut) or the
        embeddings answer; ``cost_usd`` what this call cost, shown as saved on later hits.
        ``defer``: return once the row is sealed and queued (this process serves it at once);
        the write follows in a batch (``CacheSettings.store_delay_seconds``)."""
        mode = self.settings.mode if mode is None else mode
        if mode is CacheMode.OFF:
            return False
        if not is_storable(kind, status, response) or response is None:
            self.metrics.rejected += 1
            return False
        now = self._now()
        embedder = embed or self._embedder
        keys = self._stored_keys(tenant_id, provider, model, body, mode, kind, embedder)
        answer = {k: v for k, v in response.items() if k != self._metadata_field}
        entry = CacheEntry(kind, answer, cost_usd, provider, model, now)
        vector: bytes | None = None
        if keys.group is not None and keys.text is not None and embedder is not None:
            vector = self._vectors.pop((tenant_id, keys.exact), None)
            if vector is None:
                vector = await self._embed(tenant_id, keys.text, embedder)
        row = StoredEntry(
            tenant_id=tenant_id,
            key=keys.exact,
            sealed=seal_entry(self._keyring, tenant_id, keys.exact, entry),
            created_at=now,
            expires_at=now + self.settings.ttl_seconds,
            group=keys.group if vector is not None else None,
            vector=None
            if vector is None
            else seal_vector(self._keyring, tenant_id, keys.exact, vector),
        )
        full = self._writes.add(Pending(row, entry))
        self._hot.discard(tenant_id, keys.exact)  # a refresh: the old answer stops serving here
        self.metrics.stores += 1
        if vector is not None and keys.group is not None and self._index is not None:
            self._index.add(tenant_id, keys.exact, keys.group, vector)
        if full or not defer:
            await self._writes.flush()
        return True

    def _stored_keys(
        self,
        tenant_id: str,
        provider: str,
        model: str,
        body: Mapping[str, Any],
        mode: CacheMode,
        kind: CacheKind,
        embedder: Embedder | None,
    ) -> RequestKeys:
        """The keys for a store: an exact-only store reuses the key its lookup computed (the
        memo), instead of writing the canonical JSON a second time."""
        if mode is not CacheMode.SEMANTIC or embedder is None or kind != "chat":
            memo_key = self._memo_key(tenant_id, provider, model, kind, body)
            if memo_key is not None and (key := self._memo.get(memo_key)) is not None:
                return RequestKeys(exact=key, group=None, text=None)
        return self._keys(tenant_id, provider, model, body, mode, kind, embedder)

    async def clear_tenant(self, tenant_id: str) -> int:
        """Remove every entry of ``tenant_id`` (``DELETE /byok/cache``); how many there were.
        This process's hot layer forgets the tenant; other replicas' need :meth:`forget` (the
        engine publishes the clear on its invalidation bus)."""
        self._hot.drop_tenant(tenant_id)
        async with self._writes.lock:  # after a write in progress, before any later one
            self._writes.drop_tenant(tenant_id)
            removed = await self.backend.clear_tenant(tenant_id)
        self._hot.drop_tenant(tenant_id)  # and refuse fills read before the rows went
        if self._index is not None:
            self._index.drop_tenant(tenant_id)
        for memo_key in [k for k in self._vectors if k[0] == tenant_id]:
            del self._vectors[memo_key]
        return removed

    def forget(self, tenant_id: str | None = None) -> None:
        """Drop the hot layer's entries of ``tenant_id`` (None: of every tenant); the backend
        is untouched. For a clear made by another replica, or a bus that may have missed one."""
        if tenant_id is None:
            self._hot.clear()
        else:
            self._hot.drop_tenant(tenant_id)

    async def sizes(self) -> CacheSizes:
        await self._writes.flush()
        indexed = self._index.sizes() if self._index is not None else {}
        return CacheSizes(backend=await self.backend.usage(), indexed=indexed)

"""Catching up: this process's vector index follows what other replicas stored.

Sans-HTTP. ``PageReader.catch_up`` reads a tenant's semantic rows stored after the index's last
sequence number, page by page, opens their vectors (sealed like the answers) and indexes the
ones this process does not hold yet. An HNSW insert costs ~0.8 ms at 100,000 vectors, so the
vectors go in ``ADD_CHUNK`` at a time with a turn of the event loop between chunks: other
requests are served meanwhile. A vector that cannot be opened is counted and left out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from byok_middleware.cache.backend import CacheBackend
from byok_middleware.cache.entry import open_vector
from byok_middleware.cache.metrics import CacheMetrics
from byok_middleware.cache.semantic import SemanticIndex, TenantIndex
from byok_middleware.crypto import DecryptionError, Keyring

__all__ = ["ADD_CHUNK", "SYNC_PAGE", "PageReader"]

SYNC_PAGE = 512  # rows read per page by a catch-up that runs behind
ADD_CHUNK = 64  # vectors indexed between two turns of the event loop


class PageReader:
    """Reads a tenant's new vectors from ``backend`` into ``index``."""

    __slots__ = ("_backend", "_index", "_keyring", "_metrics", "_now")

    def __init__(
        self,
        backend: CacheBackend,
        keyring: Keyring,
        index: SemanticIndex,
        metrics: CacheMetrics,
        now: Callable[[], float],
    ) -> None:
        self._backend = backend
        self._keyring = keyring
        self._index = index
        self._metrics = metrics
        self._now = now

    async def catch_up(
        self, tenant_id: str, tenant: TenantIndex, *, inline_pages: int | None, page: int
    ) -> bool:
        """Read up to ``inline_pages`` pages of ``page`` rows (None: all); True when the
        backend had no more. The caller holds ``tenant.lock``."""
        pages = 0
        while inline_pages is None or pages < inline_pages:
            rows = await self._backend.vectors(tenant_id, tenant.synced_seq, self._now(), page)
            fresh = []
            for row in rows:
                tenant.synced_seq = max(tenant.synced_seq, row.seq)
                if self._index.has(tenant_id, row.key):
                    continue  # stored by this process (same key, same text, same vector)
                try:
                    vector = open_vector(self._keyring, tenant_id, row.key, row.vector)
                except (DecryptionError, ValueError):
                    self._metrics.dropped += 1
                    continue
                fresh.append((row.key, row.group, vector))
            for start in range(0, len(fresh), ADD_CHUNK):
                if start:
                    await asyncio.sleep(0)  # other requests run between two chunks
                self._index.add_many(tenant_id, fresh[start : start + ADD_CHUNK])
            pages += 1
            if len(rows) < page:
                return True
        return False

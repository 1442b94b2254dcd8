"""The cache's counters and sizes, as ``ResponseCache.metrics`` and ``sizes()`` report them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from byok_middleware.cache.backend import BackendUsage

__all__ = ["CacheMetrics", "CacheSizes"]


@dataclass(slots=True)
class CacheMetrics:
    """Counters since start, this process only."""

    lookups: int = 0
    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    stores: int = 0
    rejected: int = 0  # answers not good enough to store
    evicted: int = 0  # by size or expiry, during stores
    dropped: int = 0  # entries that could not be opened (e.g. their master key is gone)
    embed_failures: int = 0
    hot_hits: int = 0  # exact hits answered by the hot layer (counted in exact_hits too)
    write_failures: int = 0  # batches of stored answers the backend refused (then dropped)
    saved_usd: Decimal = field(default_factory=Decimal)


@dataclass(frozen=True, slots=True)
class CacheSizes:
    backend: BackendUsage
    indexed: Mapping[str, int]  # tenant id -> vectors in this process's index

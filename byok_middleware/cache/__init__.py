"""The response cache: exact and semantic, per tenant, sealed at rest, bounded by bytes and TTL.

Below the HTTP layer (no ASGI, no pydantic). The request pipeline calls
:meth:`ResponseCache.lookup` before the upstream call and :meth:`ResponseCache.store` after a good
answer; see README "Response cache" for the contract (env names, header, metadata).
"""

from byok_middleware.cache.backend import (
    BackendUsage,
    CacheBackend,
    MemoryBackend,
    StoredEntry,
    VectorRow,
)
from byok_middleware.cache.entry import CacheEntry, is_storable
from byok_middleware.cache.facade import CacheMetrics, CacheSizes, Hit, ResponseCache
from byok_middleware.cache.keys import CacheKind, RequestKeys, canonical_json, request_keys
from byok_middleware.cache.semantic import (
    Embedder,
    EmbeddingUnavailable,
    ProviderEmbedder,
    SemanticIndex,
)
from byok_middleware.cache.settings import (
    CONTROL_HEADER,
    SIMILARITY_HEADER,
    CacheControl,
    CacheMode,
    CacheSettings,
    parse_control,
    status_header,
)
from byok_middleware.cache.sqlite import SQLiteBackend
from byok_middleware.cache.stream import StreamAssembler, replay_as_sse

__all__ = [
    "CONTROL_HEADER",
    "SIMILARITY_HEADER",
    "BackendUsage",
    "CacheBackend",
    "CacheControl",
    "CacheEntry",
    "CacheKind",
    "CacheMetrics",
    "CacheMode",
    "CacheSettings",
    "CacheSizes",
    "Embedder",
    "EmbeddingUnavailable",
    "Hit",
    "MemoryBackend",
    "ProviderEmbedder",
    "RequestKeys",
    "ResponseCache",
    "SQLiteBackend",
    "SemanticIndex",
    "StoredEntry",
    "StreamAssembler",
    "VectorRow",
    "canonical_json",
    "is_storable",
    "parse_control",
    "replay_as_sse",
    "request_keys",
    "status_header",
]

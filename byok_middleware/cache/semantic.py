"""The semantic layer: embedders, and one nearest-neighbour index per tenant and parameter group.

The index is usearch's HNSW (the ``semantic`` extra), cosine metric. A tenant's vectors live in
indexes of that tenant only, one per *group* (the hash of everything but the conversation's
text: model, roles, sampling and format parameters, embedding model), so a candidate always
matches on every non-text parameter and no search ever crosses tenants. Labels map back to entry
keys; an entry that is gone from the backend (evicted, expired, replaced) is dropped from the
index when a search meets it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from byok_middleware.errors import BYOKError

__all__ = [
    "Embedder",
    "EmbeddingUnavailable",
    "ProviderEmbedder",
    "SemanticIndex",
    "cosine",
    "vector_bytes",
]


class EmbeddingUnavailable(Exception):
    """The text could not be embedded now; the request goes on with the exact layer only."""


@runtime_checkable
class Embedder(Protocol):
    """Turns a conversation's text into a vector for one tenant.

    ``name`` identifies the embedding model: it is part of the group hash, so vectors of two
    models are never compared. ``embed`` raises :class:`EmbeddingUnavailable` when it cannot.
    """

    @property
    def name(self) -> str: ...

    async def embed(self, tenant_id: str, text: str) -> Sequence[float]: ...


EmbedCall = Callable[[str, str, str], Awaitable[Sequence[float]]]


@dataclass(frozen=True, slots=True)
class ProviderEmbedder:
    """Embeds with a provider model through ``call(tenant_id, model, text)``, which the engine
    supplies: it resolves the tenant's key (or the platform key where the policy allows), calls
    the embeddings endpoint and records the call in the ledger like any other."""

    model: str
    call: EmbedCall

    @property
    def name(self) -> str:
        return self.model

    async def embed(self, tenant_id: str, text: str) -> Sequence[float]:
        try:
            return await self.call(tenant_id, self.model, text)
        except BYOKError as exc:  # no key, upstream down, ...: the exact layer still works
            raise EmbeddingUnavailable(exc.error_type) from exc


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:  # pragma: no cover - the extra brings it
        raise EmbeddingUnavailable("numpy is not installed") from exc
    return numpy


def vector_bytes(vector: Sequence[float]) -> bytes:
    """A vector as little-endian float32 bytes (what is sealed and stored)."""
    return bytes(_numpy().asarray(vector, dtype="<f4").tobytes())


def cosine(one: bytes, two: bytes) -> float | None:
    """The exact cosine similarity of two float32 vectors' bytes; None when they differ in
    length or one is zero."""
    np = _numpy()
    a, b = np.frombuffer(one, dtype="<f4"), np.frombuffer(two, dtype="<f4")
    if len(a) != len(b):
        return None
    norms = float(np.linalg.norm(a)) * float(np.linalg.norm(b))
    return float(np.dot(a, b)) / norms if norms > 0 else None


@dataclass(slots=True)
class _Group:
    index: Any  # usearch.index.Index
    ndim: int
    keys: dict[int, str] = field(default_factory=dict)  # label -> entry key


class TenantIndex:
    """One tenant's indexes (one per group), its labels, and how far it is synced."""

    __slots__ = ("groups", "labels", "lock", "next_label", "synced_at", "synced_seq")

    def __init__(self) -> None:
        self.groups: dict[str, _Group] = {}
        self.labels: dict[str, tuple[str, int]] = {}  # entry key -> (group, label)
        self.next_label = 1
        self.synced_seq = 0
        self.synced_at = float("-inf")
        self.lock = asyncio.Lock()

    @property
    def size(self) -> int:
        return len(self.labels)


class SemanticIndex:
    """Per-tenant vector indexes in this process; the backend is the truth they are synced from.

    ``dtype`` is what usearch stores per dimension: ``i8`` (a quarter of ``f32``'s memory) made
    a search at 100,000 vectors of 384 dimensions about 1.5x faster than ``f16`` and an insert
    1.8x faster (``benchmarks.cache_bench``); its similarities are approximate (within about
    0.01), so the cache re-ranks a candidate on its stored float32 vector before the threshold.

    ``connectivity`` (links per node) and ``expansion_search`` (candidates a search keeps) set
    the recall: with 16 links and a search of 64 (usearch's default), 85% of 2,000 noisy copies
    (cosine ~0.999) of 100,000 random 384-dimension vectors were found; with 32 links and 48,
    96%, for a search ~1.4x as long (32 at a search of 32: 92%, as fast as before; 16 links
    need a search of 128 for 95%, 2.3x as long). Random vectors are the worst case of a graph
    index; an embedding model's clustered vectors are found more easily. The price is the
    insert: ~2.3x as long, and the graph ~25% larger (66 MB at 100,000 vectors).
    """

    QUANTISATION_MARGIN = 0.02  # i8 cosines were within 0.0094 of the exact ones (384 dims)

    def __init__(
        self,
        *,
        dtype: str = "i8",
        connectivity: int = 32,
        expansion_add: int = 64,
        expansion_search: int = 48,
    ) -> None:
        try:
            from usearch.index import Index
        except ImportError as exc:
            from byok_middleware.errors import ConfigurationError

            raise ConfigurationError(
                "BYOK_CACHE=semantic needs the vector index; install it with "
                "`pip install 'byok_middleware[semantic]'`"
            ) from exc
        self._index_type = Index
        self._dtype = dtype
        self._connectivity = connectivity
        self._expansion_add = expansion_add
        self._expansion_search = expansion_search
        self._np = _numpy()
        self._tenants: dict[str, TenantIndex] = {}

    def tenant(self, tenant_id: str) -> TenantIndex:
        found = self._tenants.get(tenant_id)
        if found is None:
            found = self._tenants[tenant_id] = TenantIndex()
        return found

    def drop_tenant(self, tenant_id: str) -> None:
        self._tenants.pop(tenant_id, None)

    def sizes(self) -> dict[str, int]:
        return {tenant_id: t.size for tenant_id, t in self._tenants.items()}

    def add(self, tenant_id: str, key: str, group: str, vector: bytes) -> None:
        """Index ``vector`` (float32 bytes) under ``key``, replacing what ``key`` had."""
        self.add_many(tenant_id, [(key, group, vector)])

    def add_many(self, tenant_id: str, rows: Sequence[tuple[str, str, bytes]]) -> None:
        """Index (key, group, float32 bytes) rows, one batch per group (a replica catching up
        adds a page at a time)."""
        tenant = self.tenant(tenant_id)
        batches: dict[str, list[tuple[str, Any]]] = {}
        for key, group, vector in rows:
            self.remove(tenant_id, key)
            batches.setdefault(group, []).append((key, self._np.frombuffer(vector, dtype="<f4")))
        for group, batch in batches.items():
            slot = tenant.groups.get(group)
            if slot is None:
                index = self._index_type(
                    ndim=len(batch[0][1]),
                    metric="cos",
                    dtype=self._dtype,
                    connectivity=self._connectivity,
                    expansion_add=self._expansion_add,
                    expansion_search=self._expansion_search,
                )
                slot = tenant.groups[group] = _Group(index=index, ndim=len(batch[0][1]))
            # Another model's vector under the same name is never comparable: left out.
            fitting = [(key, array) for key, array in batch if len(array) == slot.ndim]
            if not fitting:
                continue
            labels = list(range(tenant.next_label, tenant.next_label + len(fitting)))
            tenant.next_label += len(fitting)
            matrix = self._np.stack([array for _, array in fitting])
            slot.index.add(self._np.asarray(labels, dtype="uint64"), matrix, threads=1)
            for label, (key, _) in zip(labels, fitting, strict=True):
                slot.keys[label] = key
                tenant.labels[key] = (group, label)

    def remove(self, tenant_id: str, key: str) -> None:
        tenant = self._tenants.get(tenant_id)
        found = tenant.labels.pop(key, None) if tenant is not None else None
        if tenant is None or found is None:
            return
        group, label = found
        slot = tenant.groups.get(group)
        if slot is not None and slot.keys.pop(label, None) is not None:
            slot.index.remove(label)

    def has(self, tenant_id: str, key: str) -> bool:
        tenant = self._tenants.get(tenant_id)
        return tenant is not None and key in tenant.labels

    def search(
        self, tenant_id: str, group: str, vector: bytes, count: int
    ) -> list[tuple[str, float]]:
        """Up to ``count`` (entry key, cosine similarity) of ``tenant_id`` in ``group``, best
        first; ``vector`` is float32 bytes."""
        tenant = self._tenants.get(tenant_id)
        slot = tenant.groups.get(group) if tenant is not None else None
        if slot is None or not slot.keys:
            return []
        query = self._np.frombuffer(vector, dtype="<f4")
        if len(query) != slot.ndim:
            return []
        matches = slot.index.search(query, count=count, threads=1)
        found = []
        for label, distance in zip(matches.keys, matches.distances, strict=True):
            key = slot.keys.get(int(label))
            if key is not None:
                found.append((key, 1.0 - float(distance)))
        return found

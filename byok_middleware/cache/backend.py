"""Where sealed entries live: the ``CacheBackend`` Protocol and the in-memory backend.

A backend stores opaque sealed bytes under (tenant id, entry key); it never sees plaintext. Every
backend keeps the same promises:

- ``get`` never returns an expired entry (it deletes it), and marks the entry used, so eviction is
  least recently used first. SQL backends rewrite the use time only when it is older than
  ``touch_seconds``, so a hit is a read in the steady state; SQLite writes it behind the hit
  (batched, before its next eviction), so even that hit waits for no write.
- ``put`` replaces an entry of the same key, drops expired entries, then evicts the least recently
  used until the sealed bytes of all tenants fit in ``max_bytes``; it returns how many it evicted.
  The backends here also have ``put_many`` (``cache/writer.py``'s ``BatchBackend``): the same for
  several entries at once, one transaction where there are transactions.
- ``vectors`` lists a tenant's semantic entries stored after a sequence number, oldest first, so
  that each process can keep its vector index in step with what other processes stored.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["BackendUsage", "CacheBackend", "MemoryBackend", "StoredEntry", "VectorRow"]


@dataclass(frozen=True, slots=True, repr=False)
class StoredEntry:
    """A sealed entry as a backend holds it. ``group`` hashes the non-text part of a semantic
    request (None for exact-only entries); ``vector`` is the sealed embedding."""

    tenant_id: str
    key: str
    sealed: bytes
    created_at: float
    expires_at: float
    group: str | None = None
    vector: bytes | None = None

    @property
    def size(self) -> int:
        """The bytes this entry counts against ``max_bytes``."""
        extra = len(self.group or "") + len(self.tenant_id) + len(self.key)
        return len(self.sealed) + len(self.vector or b"") + extra

    def __repr__(self) -> str:
        return (
            f"StoredEntry(tenant_id={self.tenant_id!r}, key={self.key[:12]!r}…, size={self.size})"
        )


@dataclass(frozen=True, slots=True)
class VectorRow:
    seq: int
    key: str
    group: str
    vector: bytes  # sealed


@dataclass(frozen=True, slots=True)
class BackendUsage:
    entries: int
    bytes: int
    max_bytes: int


@runtime_checkable
class CacheBackend(Protocol):
    """Storage of sealed entries; see the module docstring for the promises."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, tenant_id: str, key: str, now: float) -> StoredEntry | None: ...

    async def put(self, entry: StoredEntry, now: float) -> int: ...

    async def delete(self, tenant_id: str, key: str) -> None: ...

    async def clear_tenant(self, tenant_id: str) -> int: ...

    async def vectors(
        self, tenant_id: str, after_seq: int, now: float, limit: int
    ) -> list[VectorRow]: ...

    async def usage(self) -> BackendUsage: ...


@dataclass(slots=True)
class _Tenant:
    seqs: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


class MemoryBackend:
    """Entries in this process only (one replica, or tests): an ordered dict in LRU order."""

    def __init__(self, *, max_bytes: int = 256 * 1024 * 1024) -> None:
        self._max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], tuple[int, StoredEntry]] = OrderedDict()
        self._tenants: dict[str, _Tenant] = {}
        self._bytes = 0
        self._seq = 0

    def __repr__(self) -> str:
        return f"MemoryBackend(entries={len(self._entries)}, bytes={self._bytes})"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _remove(self, tenant_id: str, key: str) -> None:
        found = self._entries.pop((tenant_id, key), None)
        if found is not None:
            self._bytes -= found[1].size

    async def get(self, tenant_id: str, key: str, now: float) -> StoredEntry | None:
        found = self._entries.get((tenant_id, key))
        if found is None:
            return None
        if found[1].expires_at <= now:
            self._remove(tenant_id, key)
            return None
        self._entries.move_to_end((tenant_id, key))
        return found[1]

    async def put_many(self, entries: Sequence[StoredEntry], now: float) -> int:
        evicted = 0
        for entry in entries:
            evicted += await self.put(entry, now)
        return evicted

    async def put(self, entry: StoredEntry, now: float) -> int:
        self._remove(entry.tenant_id, entry.key)
        self._seq += 1
        self._entries[(entry.tenant_id, entry.key)] = (self._seq, entry)
        self._bytes += entry.size
        if entry.vector is not None:
            tenant = self._tenants.setdefault(entry.tenant_id, _Tenant())
            tenant.seqs.append(self._seq)
            tenant.keys.append(entry.key)
            if len(tenant.seqs) > 2 * len(self._entries) + 1024:
                self._compact(entry.tenant_id, tenant)
        evicted = 0
        # Least recently used first; an entry larger than the whole budget evicts itself too.
        while self._bytes > self._max_bytes and self._entries:
            (tenant_id, key), _ = next(iter(self._entries.items()))
            self._remove(tenant_id, key)
            evicted += 1
        return evicted

    def _compact(self, tenant_id: str, tenant: _Tenant) -> None:
        # The sequence list keeps replaced and evicted keys until it outgrows the live entries.
        live = [
            (seq, key)
            for seq, key in zip(tenant.seqs, tenant.keys, strict=True)
            if (found := self._entries.get((tenant_id, key))) is not None and found[0] == seq
        ]
        tenant.seqs = [seq for seq, _ in live]
        tenant.keys = [key for _, key in live]

    async def delete(self, tenant_id: str, key: str) -> None:
        self._remove(tenant_id, key)

    async def clear_tenant(self, tenant_id: str) -> int:
        doomed = [k for k in self._entries if k[0] == tenant_id]
        for _, key in doomed:
            self._remove(tenant_id, key)
        self._tenants.pop(tenant_id, None)
        return len(doomed)

    async def vectors(
        self, tenant_id: str, after_seq: int, now: float, limit: int
    ) -> list[VectorRow]:
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return []
        rows = []
        start = bisect.bisect_right(tenant.seqs, after_seq)
        for seq, key in zip(tenant.seqs[start:], tenant.keys[start:], strict=True):
            found = self._entries.get((tenant_id, key))
            if found is None or found[0] != seq or found[1].expires_at <= now:
                continue  # replaced, evicted or expired since
            entry = found[1]
            if entry.group is not None and entry.vector is not None:
                rows.append(VectorRow(seq=seq, key=key, group=entry.group, vector=entry.vector))
            if len(rows) >= limit:
                break
        return rows

    async def usage(self) -> BackendUsage:
        return BackendUsage(
            entries=len(self._entries), bytes=self._bytes, max_bytes=self._max_bytes
        )

"""The hot layer: recently hit exact entries, opened, in this process only. Sans-I/O.

An exact hit through the backend costs a read (a thread hop for SQLite, a round trip for
PostgreSQL), an AES-GCM decryption and the canonical JSON of the request. The hot layer keeps what
those produced for a short while, so a repeated request is answered from memory:

- :class:`KeyMemo` maps (tenant, provider/model, kind, SHA-256 of the request body as orjson
  writes it) to the entry key. The key is a pure function of that body, so the memo is never
  stale; it holds hashes only.
- :class:`HotEntries` holds opened entries by (tenant, entry key) with the answer's JSON already
  written. Bounded in entries and bytes (least recently used out), each entry serves for at most
  ``seconds`` after it was read from the backend and never past its TTL. ``drop_tenant`` empties
  a tenant (``DELETE /byok/cache`` here, or on another replica through the invalidation bus);
  a fill that raced with a drop is refused (a per-tenant generation). Nothing here is logged or
  shown in a ``repr``: an answer is a tenant's data.

The backend keeps the only copy at rest, sealed; what other replicas change reaches this layer
through the bus (a clear) or within ``seconds`` (a ``refresh`` or an eviction elsewhere).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import orjson

from byok_middleware.cache.entry import CacheEntry
from byok_middleware.cache.hit import Hit

__all__ = ["HotEntries", "HotEntry", "KeyMemo", "body_digest"]

_MAX_GENERATIONS = 100_000  # tenants with a counter; past it they all restart (an epoch)
_OVERHEAD = 256  # bytes counted per entry beyond its JSON: the key, the objects around it


def body_digest(body: Mapping[str, Any]) -> bytes | None:
    """SHA-256 of ``body`` as orjson writes it (insertion order), or None when orjson refuses a
    value (the caller then computes the key the long way). NaN and infinities are written as
    ``null``, as the upstream body is, so they share a digest with ``null`` on purpose."""
    try:
        raw = orjson.dumps(body)
    except TypeError:  # orjson.JSONEncodeError: big integers, non-string keys, other types
        return None
    return hashlib.sha256(raw).digest()


class KeyMemo:
    """(tenant, provider, model, kind, body digest) -> entry key, the ``limit`` most recent."""

    __slots__ = ("_keys", "_limit")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._keys: OrderedDict[tuple[str, str, str, str, bytes], str] = OrderedDict()

    def __repr__(self) -> str:
        return f"KeyMemo(size={len(self._keys)})"

    def get(self, memo_key: tuple[str, str, str, str, bytes]) -> str | None:
        return self._keys.get(memo_key)

    def put(self, memo_key: tuple[str, str, str, str, bytes], key: str) -> None:
        if self._limit <= 0:
            return
        self._keys[memo_key] = key
        if len(self._keys) > self._limit:
            self._keys.popitem(last=False)  # the oldest; a hit re-puts nothing, so FIFO suffices


class HotEntry:
    """An opened entry as the ``Hit`` every lookup gets (the answer's JSON written, without
    metadata), with when it stops serving."""

    __slots__ = ("entry", "hit", "size", "until")

    def __init__(self, entry: CacheEntry, key: str, until: float) -> None:
        self.entry = entry
        self.hit = Hit(entry=entry, key=key, json=orjson.dumps(entry.response))
        self.size = len(self.hit.json or b"") + _OVERHEAD
        self.until = until

    def __repr__(self) -> str:
        return f"HotEntry({self.entry!r}, size={self.size})"


class HotEntries:
    """Opened entries by (tenant, entry key): at most ``max_entries`` and ``max_bytes`` of JSON,
    each for at most ``seconds`` (0 turns the layer off)."""

    __slots__ = (
        "_bytes",
        "_entries",
        "_epoch",
        "_generations",
        "max_bytes",
        "max_entries",
        "seconds",
    )

    def __init__(self, *, seconds: float, max_entries: int, max_bytes: int) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], HotEntry] = OrderedDict()
        self._generations: dict[str, int] = {}  # bumped by drop_tenant
        self._epoch = 0  # bumped by clear
        self._bytes = 0

    def __repr__(self) -> str:
        return f"HotEntries(entries={len(self._entries)}, bytes={self._bytes})"

    @property
    def enabled(self) -> bool:
        return self.seconds > 0 and self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, tenant_id: str, key: str, now: float) -> HotEntry | None:
        """The entry while it may serve (``now`` before its time and its TTL), else None."""
        hot = self._entries.get((tenant_id, key))
        if hot is None:
            return None
        if now >= hot.until:
            self._remove((tenant_id, key))
            return None
        self._entries.move_to_end((tenant_id, key))
        return hot

    def generation(self, tenant_id: str) -> tuple[int, int]:
        """Read before the backend read that may ``fill``: a drop in between refuses the fill."""
        return self._epoch, self._generations.get(tenant_id, 0)

    def fill(
        self,
        tenant_id: str,
        key: str,
        entry: CacheEntry,
        *,
        now: float,
        expires_at: float,
        generation: tuple[int, int],
    ) -> HotEntry | None:
        """Keep an entry just read from the backend; None when off, too large or raced a drop."""
        if not self.enabled or generation != self.generation(tenant_id):
            return None
        hot = HotEntry(entry, key, min(now + self.seconds, expires_at))
        if hot.size > self.max_bytes:
            return None
        self._remove((tenant_id, key))
        self._entries[(tenant_id, key)] = hot
        self._bytes += hot.size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))
        return hot

    def discard(self, tenant_id: str, key: str) -> None:
        """Forget one entry (replaced by a new answer), and refuse the tenant's fills read
        before now (one of them may hold the old answer)."""
        self._bump(tenant_id)
        self._remove((tenant_id, key))

    def drop_tenant(self, tenant_id: str) -> None:
        """Forget every entry of ``tenant_id``, and refuse fills read before now."""
        self._bump(tenant_id)
        for doomed in [k for k in self._entries if k[0] == tenant_id]:
            self._remove(doomed)

    def _bump(self, tenant_id: str) -> None:
        if tenant_id not in self._generations and len(self._generations) >= _MAX_GENERATIONS:
            self._generations.clear()
            self._epoch += 1  # forgetting the counters must not let an old fill through
        self._generations[tenant_id] = self._generations.get(tenant_id, 0) + 1

    def clear(self) -> None:
        """Forget everything (the bus may have missed a clear)."""
        self._epoch += 1
        self._entries.clear()
        self._bytes = 0

    def _remove(self, hot_key: tuple[str, str]) -> None:
        hot = self._entries.pop(hot_key, None)
        if hot is not None:
            self._bytes -= hot.size

"""``Hit``: a stored answer found for a request, and how it is written back to the client.

Sans-I/O. An exact hit from the hot layer carries its answer's JSON already written, so the
plain answer is those bytes with this request's metadata spliced in as the last member.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from byok_middleware.cache.entry import CacheEntry
from byok_middleware.cache.settings import SIMILARITY_HEADER
from byok_middleware.cache.stream import as_completion, replay_as_sse
from byok_middleware.jsoncodec import dumps

__all__ = ["Hit"]


@lru_cache(maxsize=8)
def _member(metadata_field: str) -> bytes:
    """``"<field>":``, the start of the metadata member (one field name per gateway)."""
    return orjson.dumps(metadata_field) + b":"


@dataclass(frozen=True, slots=True)
class Hit:
    """A stored answer for this request; ``similarity`` is None for an exact hit. ``json`` is
    the answer's JSON when the hot layer has it written already."""

    entry: CacheEntry
    key: str
    similarity: float | None = None
    json: bytes | None = field(default=None, repr=False)

    def headers(self) -> list[tuple[bytes, bytes]]:
        """``x-byok-cache: hit`` and, for a semantic hit, ``x-byok-cache-similarity``."""
        headers = [(b"x-byok-cache", b"hit")]
        if self.similarity is not None:
            headers.append((SIMILARITY_HEADER.encode(), f"{self.similarity:.4f}".encode()))
        return headers

    def metadata(self, request_id: str) -> dict[str, Any]:
        """The metadata object of a hit: nothing paid now, the original's cost saved."""
        saved = self.entry.cost_usd
        return {
            "cost_attribution": "cache",
            "provider_used": self.entry.provider,
            "model_used": self.entry.model,
            "cost_usd": 0.0,
            "cost_saved_usd": None if saved is None else float(saved),
            "key_id": None,
            "cache_hit": True,
            "request_id": request_id,
            "attempts": 0,
        }

    def as_json(self, metadata_field: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """The answer with ``metadata``; shares nested values with the entry: read, never write."""
        return as_completion(self.entry, metadata_field, metadata)

    def json_body(self, metadata_field: str, metadata: Mapping[str, Any]) -> bytes:
        """``as_json`` written as JSON: the stored answer's bytes with the metadata spliced in
        as the last member (the answer never holds ``metadata_field``: ``store`` strips it)."""
        answer = self.json if self.json is not None else orjson.dumps(self.entry.response)
        meta = metadata if type(metadata) is dict else dict(metadata)
        member = _member(metadata_field) + dumps(meta)
        if answer == b"{}":
            return b"{" + member + b"}"
        return answer[:-1] + b"," + member + b"}"

    def as_sse(
        self, include_usage: bool, metadata_field: str, metadata: Mapping[str, Any]
    ) -> list[bytes]:
        return replay_as_sse(self.entry, include_usage, metadata_field, metadata)

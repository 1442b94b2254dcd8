"""A cached answer, how it is sealed at rest, and which answers may become one.

Sans-I/O. An entry is sealed with the gateway's keyring (the AES-256-GCM envelope of provider keys,
:mod:`byok_middleware.crypto`), with associated data binding it to its tenant and entry key: a row
copied to another tenant or key fails to open instead of serving one tenant another's answer.
A semantic entry's vector is sealed separately (under its own AAD) so that the index can be built
without opening the answers.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from byok_middleware.cache.keys import CacheKind
from byok_middleware.crypto import Keyring, associated_data

__all__ = [
    "NORMAL_FINISH_REASONS",
    "CacheEntry",
    "is_storable",
    "open_entry",
    "open_vector",
    "seal_entry",
    "seal_vector",
]

NORMAL_FINISH_REASONS = frozenset({"stop", "tool_calls"})
_FORMAT = 1


@dataclass(frozen=True, slots=True, repr=False)
class CacheEntry:
    """One stored answer: the chat completion (or embeddings) JSON as the client would get it
    without metadata, what the original call cost, who served it and when."""

    kind: CacheKind
    response: Mapping[str, Any]
    cost_usd: Decimal | None
    provider: str
    model: str
    created_at: float  # epoch seconds

    def __repr__(self) -> str:
        # The answer is a tenant's data: never in a log line.
        return f"CacheEntry(kind={self.kind!r}, provider={self.provider!r}, model={self.model!r})"

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "v": _FORMAT,
                "kind": self.kind,
                "response": self.response,
                "cost_usd": None if self.cost_usd is None else str(self.cost_usd),
                "provider": self.provider,
                "model": self.model,
                "created_at": self.created_at,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> CacheEntry:
        """Raises ValueError on anything not written by ``to_json`` of this format."""
        data = orjson.loads(raw)
        if not isinstance(data, dict) or data.get("v") != _FORMAT:
            raise ValueError("unknown cache entry format")
        cost = data.get("cost_usd")
        return cls(
            kind=data["kind"],
            response=data["response"],
            cost_usd=None if cost is None else Decimal(cost),
            provider=data["provider"],
            model=data["model"],
            created_at=float(data["created_at"]),
        )


def _aad(tenant_id: str, key: str, part: str) -> bytes:
    return associated_data(tenant_id, key, part)


def seal_entry(keyring: Keyring, tenant_id: str, key: str, entry: CacheEntry) -> bytes:
    """The entry encrypted under the keyring's primary key, bound to tenant and key."""
    return keyring.encrypt(entry.to_json().decode("utf-8"), _aad(tenant_id, key, "cache-entry"))


def open_entry(keyring: Keyring, tenant_id: str, key: str, sealed: bytes) -> CacheEntry:
    """Raises DecryptionError (unknown master key, tampering, moved row) or ValueError."""
    return CacheEntry.from_json(keyring.decrypt(sealed, _aad(tenant_id, key, "cache-entry")))


def seal_vector(keyring: Keyring, tenant_id: str, key: str, vector: bytes) -> bytes:
    """A float32 vector's bytes, sealed like the entry but under their own AAD."""
    text = base64.b64encode(vector).decode("ascii")
    return keyring.encrypt(text, _aad(tenant_id, key, "cache-vector"))


def open_vector(keyring: Keyring, tenant_id: str, key: str, sealed: bytes) -> bytes:
    """Raises DecryptionError or binascii.Error."""
    text = keyring.decrypt(sealed, _aad(tenant_id, key, "cache-vector"))
    return base64.b64decode(text, validate=True)


def _chat_is_good(response: Mapping[str, Any]) -> bool:
    choices = response.get("choices")
    if response.get("object") != "chat.completion" or not isinstance(choices, Sequence):
        return False
    if not choices or "error" in response:
        return False
    for choice in choices:
        if not isinstance(choice, Mapping):
            return False
        if choice.get("finish_reason") not in NORMAL_FINISH_REASONS:
            return False  # length, content_filter, null (cut): not an answer to replay
        message = choice.get("message")
        if not isinstance(message, Mapping) or message.get("refusal"):
            return False
    return True


def _embeddings_are_good(response: Mapping[str, Any]) -> bool:
    data = response.get("data")
    if not isinstance(data, Sequence) or not data or "error" in response:
        return False
    return all(isinstance(item, Mapping) and "embedding" in item for item in data)


def is_storable(kind: CacheKind, status: int, response: Mapping[str, Any] | None) -> bool:
    """Only good answers are stored: HTTP 200, complete, every choice finished normally
    (``stop`` or ``tool_calls``), no refusal; embeddings with every vector present.

    A stream that ended without ``[DONE]`` comes here as ``None`` (see ``StreamAssembler``).
    """
    if status != 200 or response is None:
        return False
    if kind == "chat":
        return _chat_is_good(response)
    return _embeddings_are_good(response)

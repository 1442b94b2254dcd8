"""Who is calling: gateway API keys by default, or the host app's own auth through ``identify=``.

Threat model: a caller presents ``Authorization: Bearer byok_...``. Only SHA-256 hashes of gateway
keys are stored, so a stolen database does not yield usable keys; the lookup is by hash, so an
unknown key and a wrong key take the same path and the same time, and the client is told only
"invalid gateway key", never whether a tenant exists.
"""

from __future__ import annotations

import hashlib
import inspect
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from hashlib import blake2s as _blake2s
from types import CoroutineType
from typing import TypeGuard

from byok_middleware.asgi import Scope, raw_header
from byok_middleware.clock import utcnow
from byok_middleware.storage.base import KeyStore, Tenant

__all__ = [
    "GATEWAY_KEY_PREFIX",
    "GatewayKeyIdentity",
    "Identify",
    "create_tenant",
    "hash_gateway_key",
    "is_awaitable",
    "new_gateway_key",
    "resolve_tenant",
    "tenant_or_none",
]

GATEWAY_KEY_PREFIX = "byok_"
Identify = Callable[[Scope], "Awaitable[str | None] | str | None"]


def new_gateway_key() -> str:
    """A fresh gateway API key: the prefix and 256 random bits."""
    return GATEWAY_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_gateway_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


async def create_tenant(store: KeyStore, name: str) -> tuple[Tenant, str]:
    """Create a tenant and its first gateway key; the key is returned once and never stored."""
    key = new_gateway_key()
    tenant = Tenant(id=uuid.uuid4().hex, name=name, created_at=utcnow())
    await store.create_tenant(tenant, hash_gateway_key(key))
    return tenant, key


@dataclass(slots=True)
class _Entry:
    tenant_id: str
    expires: float


class GatewayKeyIdentity:
    """The default ``identify``: a bearer gateway key looked up by its hash.

    Positive lookups are cached for ``ttl`` seconds (at most ``max_entries``, oldest dropped
    first) so the steady state reads no database; a revoked key therefore stops working within
    ``ttl`` in other processes and at once in this one (``forget``). The cache is keyed by a
    BLAKE2s digest of the raw ``Authorization`` value: a hit parses nothing and holds no key in
    clear, and the store still sees only the SHA-256 of the key itself.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        ttl: float = 30.0,
        max_entries: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._max = max_entries
        self._now = monotonic
        self._cache: dict[bytes, _Entry] = {}

    def __repr__(self) -> str:
        return f"GatewayKeyIdentity(cached={len(self._cache)})"

    async def __call__(self, scope: Scope) -> str | None:
        raw = raw_header(scope, b"authorization")
        if not raw:
            return None
        digest = _blake2s(raw).digest()
        entry = self._cache.get(digest)
        if entry is not None and entry.expires > self._now():
            return entry.tenant_id
        scheme, _, token = raw.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(GATEWAY_KEY_PREFIX):
            return None
        tenant_id = await self._store.tenant_for_key_hash(hash_gateway_key(token))
        if tenant_id is None:
            self._cache.pop(digest, None)
            return None
        self._cache.pop(digest, None)  # re-inserted last: the oldest entries go first
        self._cache[digest] = _Entry(tenant_id, self._now() + self._ttl)
        while len(self._cache) > self._max:
            del self._cache[next(iter(self._cache))]
        return tenant_id

    def forget(self) -> None:
        """Drop every cached lookup (after a revocation in this process)."""
        self._cache.clear()


async def resolve_tenant(identify: Identify, scope: Scope) -> str | None:
    """Call a sync or async ``identify`` and normalise its answer to a non-empty string or None."""
    result: object = identify(scope)
    if is_awaitable(result):
        result = await result
    return tenant_or_none(result)


def is_awaitable(value: object) -> TypeGuard[Awaitable[object]]:
    """``inspect.isawaitable``, with a coroutine (the default identify's answer) found by an
    exact type check first: the ABC checks cost more than the rest of an identification."""
    return type(value) is CoroutineType or inspect.isawaitable(value)


def tenant_or_none(result: object) -> str | None:
    """An ``identify`` answer (awaited) as a non-empty tenant id, or None."""
    if result is None or result == "":
        return None
    return result if type(result) is str else str(result)

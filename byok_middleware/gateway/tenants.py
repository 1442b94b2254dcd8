"""Gateway API keys: which tenant a bearer token belongs to, with a short-lived cache.

Threat model: a caller presents ``Authorization: Bearer byok_...``. Only SHA-256 hashes of gateway
keys are stored, so a stolen database does not yield usable keys; the lookup is by hash, so an
unknown key and a wrong key take the same path and the same time, and the caller learns only that
the key is invalid, never whether a tenant exists.

The HTTP layer (``identity.GatewayKeyIdentity``) reads the header; this module never sees a scope.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from hashlib import blake2s

from byok_middleware.gateway.sharing import SharedCalls
from byok_middleware.storage.base import KeyStore

__all__ = ["GATEWAY_KEY_PREFIX", "GatewayKeys", "Identify", "hash_gateway_key", "new_gateway_key"]

GATEWAY_KEY_PREFIX = "byok_"

Identify = Callable[..., "Awaitable[str | None] | str | None"]
"""The host's ``identify(scope) -> tenant id | None`` (sync or async); opaque to the engine."""


def new_gateway_key() -> str:
    """A fresh gateway API key: the prefix and 256 random bits."""
    return GATEWAY_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_gateway_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class _Entry:
    tenant_id: str
    expires: float


class GatewayKeys:
    """Bearer gateway keys looked up by their hash.

    Positive lookups are cached for ``ttl`` seconds (at most ``max_entries``, oldest dropped
    first) so the steady state reads no database; a revoked key therefore stops working within
    ``ttl`` in other processes and at once in this one (``forget``). Requests that find the
    same key missing or expired share one lookup instead of each querying the store. The cache
    is keyed by a BLAKE2s digest of the raw ``Authorization`` value: a hit parses nothing and
    holds no key in clear, and the store still sees only the SHA-256 of the key itself.
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
        self._generation = 0  # bumped by ``forget``: a lookup begun before it caches nothing
        self._lookups: SharedCalls[bytes, str | None] = SharedCalls()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cached={len(self._cache)})"

    async def tenant_for(self, authorization: bytes | None) -> str | None:
        """The tenant of a raw ``Authorization`` header value, or None."""
        if not authorization:
            return None
        digest = blake2s(authorization).digest()
        entry = self._cache.get(digest)
        if entry is not None and entry.expires > self._now():
            return entry.tenant_id
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(GATEWAY_KEY_PREFIX):
            return None  # not one of ours: no lookup to share
        # Missing or expired: the requests in flight with this key share one lookup.
        return await self._lookups.run(digest, lambda: self._lookup(digest, token))

    async def _lookup(self, digest: bytes, token: str) -> str | None:
        generation = self._generation
        tenant_id = await self._store.tenant_for_key_hash(hash_gateway_key(token))
        if generation != self._generation:
            return tenant_id  # forgotten meanwhile: answer this request, cache nothing
        self._cache.pop(digest, None)  # re-inserted last: the oldest entries go first
        if tenant_id is None:
            return None
        self._cache[digest] = _Entry(tenant_id, self._now() + self._ttl)
        while len(self._cache) > self._max:
            del self._cache[next(iter(self._cache))]
        return tenant_id

    def forget(self) -> None:
        """Drop every cached lookup (after a revocation in this process)."""
        self._cache.clear()
        self._generation += 1

    async def aclose(self) -> None:
        """Cancel the shared lookups still running."""
        await self._lookups.aclose()

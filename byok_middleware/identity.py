"""Who is calling: gateway API keys by default, or the host app's own auth through ``identify=``.

Threat model: a caller presents ``Authorization: Bearer byok_...``. Only SHA-256 hashes of gateway
keys are stored, so a stolen database does not yield usable keys; the lookup is by hash, so an
unknown key and a wrong key take the same path and the same time, and the client is told only
"invalid gateway key", never whether a tenant exists.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable
from types import CoroutineType
from typing import TypeGuard

from byok_middleware.asgi import Scope, raw_header
from byok_middleware.clock import utcnow
from byok_middleware.gateway.tenants import (
    GATEWAY_KEY_PREFIX,
    GatewayKeys,
    hash_gateway_key,
    new_gateway_key,
)
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

Identify = Callable[[Scope], "Awaitable[str | None] | str | None"]


class GatewayKeyIdentity(GatewayKeys):
    """The default ``identify``: the bearer gateway key of the request, looked up by its hash
    (``gateway.tenants.GatewayKeys`` holds the cache and the threat model)."""

    async def __call__(self, scope: Scope) -> str | None:
        return await self.tenant_for(raw_header(scope, b"authorization"))


async def create_tenant(store: KeyStore, name: str) -> tuple[Tenant, str]:
    """Create a tenant and its first gateway key; the key is returned once and never stored."""
    key = new_gateway_key()
    tenant = Tenant(id=uuid.uuid4().hex, name=name, created_at=utcnow())
    await store.create_tenant(tenant, hash_gateway_key(key))
    return tenant, key


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

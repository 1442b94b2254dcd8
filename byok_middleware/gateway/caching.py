"""The response cache's place in the engine: which backend, the embedder, and the hit's row.

``CacheStep`` wraps ``cache.ResponseCache`` with what only the engine knows: the store's
database (entries live beside the ledger: the same SQLite file, or the same PostgreSQL), the
tenant's policy (its ``cache`` field overrides ``BYOK_CACHE``), an embedder that calls the
embedding model under the tenant's own key rules and records that call in the ledger like any
other, and the ledger row of a hit (attribution ``cache``, cost 0, the original's cost saved).

A hit consumes no budget and no rate limit and never changes which key would pay for a miss:
the lookup runs before planning, and a miss continues down the ordinary path.

A tenant's ``DELETE /byok/cache`` is published on the gateway's invalidation bus, so every
replica's hot layer (opened entries kept for a few seconds, ``cache/hot.py``) forgets the tenant
(``forget``, called from ``Gateway._on_invalidation``). With the in-process bus other replicas
do not hear it: they stop serving what they hold within ``hot_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from byok_middleware.cache import CacheBackend, CacheMode, Hit, ResponseCache
from byok_middleware.cache.backend import MemoryBackend
from byok_middleware.cache.keys import CacheKind
from byok_middleware.cache.semantic import Embedder, EmbeddingUnavailable, ProviderEmbedder
from byok_middleware.cache.settings import CacheControl
from byok_middleware.errors import BYOKError
from byok_middleware.gateway.calls import Call, Candidate
from byok_middleware.jsoncodec import dumps, loads
from byok_middleware.pricing import usage_from_openai
from byok_middleware.providers.specs import Endpoint
from byok_middleware.shared import EVERY_TENANT
from byok_middleware.storage.base import UsageRecord

if TYPE_CHECKING:
    from byok_middleware.gateway.core import Gateway

__all__ = ["CacheStep", "cache_backend"]

logger = logging.getLogger("byok_middleware.cache")

_MAX_EMBEDDING_BYTES = 8 * 1024 * 1024
_ZERO = Decimal(0)


def cache_backend(database_url: str, max_bytes: int) -> CacheBackend:
    """The backend beside the store: the SQLite file, PostgreSQL, or memory (``memory://``)."""
    if database_url.startswith("sqlite:///"):
        from byok_middleware.cache.sqlite import SQLiteBackend

        return SQLiteBackend(database_url.removeprefix("sqlite:///"), max_bytes=max_bytes)
    if database_url.startswith(("postgres://", "postgresql://")):
        from byok_middleware.cache.postgres import PostgresBackend

        return PostgresBackend(database_url, max_bytes=max_bytes)
    return MemoryBackend(max_bytes=max_bytes)


class CacheStep:
    """The cache as the request path uses it; built by ``Gateway`` when a cache is configured."""

    def __init__(self, gateway: Gateway, cache: ResponseCache) -> None:
        self._gateway = gateway
        self.cache = cache

    async def clear(self, tenant_id: str) -> int:
        """``DELETE /byok/cache``: the tenant's entries go here and, through the bus, from every
        replica's hot layer; how many entries the backend held."""
        removed = await self.cache.clear_tenant(tenant_id)
        await self._gateway.bus.publish(tenant_id)
        return removed

    def forget(self, tenant_id: str) -> None:
        """The bus said ``tenant_id`` changed (or, for ``EVERY_TENANT``, that it may have missed
        changes): drop what the hot layer holds of it."""
        self.cache.forget(None if tenant_id == EVERY_TENANT else tenant_id)

    async def mode(self, tenant_id: str) -> CacheMode:
        """The tenant's mode: its policy's ``cache`` field, else the operator's ``BYOK_CACHE``."""
        policy = self._gateway.spend.cached_policy(tenant_id)  # no await in the steady state
        if policy is False:
            policy = await self._gateway.spend.policy(tenant_id)
        chosen = getattr(policy, "cache", None) if policy is not None else None
        return CacheMode(chosen) if chosen else self.cache.settings.mode

    def _embedder_for(self, call: Call, mode: CacheMode, kind: CacheKind) -> Embedder | None:
        # Only the semantic layer embeds: an exact lookup or store builds no embedder.
        return self.embedder(call) if mode is CacheMode.SEMANTIC and kind == "chat" else None

    def embedder(self, call: Call) -> ProviderEmbedder:
        """An embedder paying like any embeddings request of ``call``'s tenant."""

        async def embed(tenant_id: str, model: str, text: str) -> list[float]:
            return await self._embed(tenant_id, model, text)

        return ProviderEmbedder(self.cache.settings.embedding_model, embed)

    async def lookup(
        self, call: Call, body: Mapping[str, Any], control: CacheControl, kind: CacheKind
    ) -> tuple[Hit | None, CacheMode]:
        """The stored answer for ``body`` (resolved onto ``call``), and the mode that applied."""
        mode = await self.mode(call.tenant_id)
        if mode is CacheMode.OFF or not control.lookup:
            return None, mode
        hit = await self.cache.lookup(
            call.tenant_id,
            call.provider,
            call.model,
            body,
            mode,
            kind=kind,
            embed=self._embedder_for(call, mode, kind),
        )
        return hit, mode

    async def store(
        self,
        call: Call,
        body: Mapping[str, Any],
        answer: Mapping[str, Any] | None,
        *,
        cost: Decimal | None,
        mode: CacheMode,
        kind: CacheKind,
        routed: tuple[str, str],
    ) -> None:
        """Keep a good answer; failures to store are logged, never the client's problem."""
        provider, model = routed
        try:
            await self.cache.store(
                call.tenant_id,
                provider,
                model,
                body,
                answer,
                cost_usd=cost,
                mode=mode,
                kind=kind,
                embed=self._embedder_for(call, mode, kind),
                defer=True,  # written in a batch after the response, off the request's path
            )
        except (OSError, ValueError, BYOKError) as exc:
            logger.warning("could not store a cache entry (%s): %s", call.request_id, exc)

    def record_hit(self, call: Call, hit: Hit) -> None:
        """The hit's own ledger row: served by the cache, cost 0, the original's cost saved."""
        entry = hit.entry
        usage = entry.response.get("usage") if isinstance(entry.response, dict) else None
        tokens = usage if isinstance(usage, dict) else {}
        self._gateway.ledger.record(
            row := UsageRecord(
                request_id=call.request_id,
                tenant_id=call.tenant_id,
                key_id=None,
                provider=entry.provider,
                model=entry.model,
                endpoint=call.endpoint,
                attribution="cache",
                prompt_tokens=_count(tokens.get("prompt_tokens")),
                completion_tokens=_count(tokens.get("completion_tokens")),
                cached_tokens=0,
                cost_usd=_ZERO,
                status_code=200,
                latency_ms=round((time.perf_counter() - call.started) * 1000, 3),
                created_at=self._gateway.clock(),
                attempts=0,
                cache_hit=True,
                cost_source="cache",
                cost_saved_usd=entry.cost_usd,
            )
        )
        if self._gateway.telemetry is not None:
            self._gateway.telemetry.finish(call, row)  # metrics count the hit and what it saved

    async def _embed(self, tenant_id: str, model: str, text: str) -> list[float]:
        """One embeddings call through the ordinary path: routed, paid by the tenant's key rules
        (policy included), failed over, priced and recorded. Raises ``EmbeddingUnavailable``."""
        gateway = self._gateway
        call = Call(
            tenant_id=tenant_id,
            request_id=f"{_next_id()}-embed",
            endpoint=Endpoint.EMBEDDINGS.value,
            started=time.perf_counter(),
        )
        try:
            gateway.route_model(call, model, Endpoint.EMBEDDINGS)
            payload = {"model": "", "input": text}

            def build(candidate: Candidate) -> tuple[bytes, dict[str, str]]:
                payload["model"] = candidate.model or call.model
                return dumps(payload), {"content-type": "application/json"}

            forwarded = await gateway.forward(call, path=Endpoint.EMBEDDINGS.value, build=build)
            try:
                raw = await forwarded.response.aread()
            finally:
                await forwarded.response.aclose()
            if len(raw) > _MAX_EMBEDDING_BYTES:
                raise EmbeddingUnavailable("the embedding answer is too large")
            data = loads(raw)
            vector = data["data"][0]["embedding"]
            usage = usage_from_openai(data.get("usage"), provider=call.provider)
            gateway.record(
                call,
                candidate=forwarded.candidate,
                usage=usage,
                cost=gateway.cost(call, usage),
                status_code=forwarded.response.status_code,
            )
        except BYOKError as exc:
            if call.attempts:
                gateway.record(
                    call,
                    candidate=call.candidate,
                    usage=None,
                    cost=Decimal(0),
                    status_code=exc.status_code,
                    error_type=exc.error_type,
                )
            raise EmbeddingUnavailable(exc.message) from None
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise EmbeddingUnavailable(f"the embedding answer was malformed: {exc}") from None
        if not isinstance(vector, list):
            raise EmbeddingUnavailable("the embedding answer holds no float vector")
        return [float(v) for v in vector]


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


_ids = iter(range(1, 1 << 62))


def _next_id() -> str:
    return f"req_cache{next(_ids):012d}"


EmbedCall = Callable[[str, str, str], Awaitable[list[float]]]

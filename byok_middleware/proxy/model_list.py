"""``GET /models``: the models the calling tenant can reach, from every provider it can pay for.

A provider is listed when the tenant could call it right now: it has an active key there, or the
platform key may be used (the same plan chat uses). Each such provider's own ``/models`` is
fetched concurrently (Anthropic's shape converted), ids are prefixed ``provider/`` so they can be
sent back as ``model`` unchanged, and the list is cached for ``ttl`` seconds per provider and
paying key (by key id, or "platform"; never by key text). A provider that fails or times out is
left out and named under ``providers_skipped`` rather than failing the whole list.

Listing models is free and spans several providers and keys, so no ledger row is written and
the metadata differs from a single call's: ``cost_usd`` is 0 and ``x-byok-cost-usd: 0``,
``x-byok-provider-used`` names every provider listed, and attribution and key id are given per
provider in the body's metadata object (no single ``x-byok-cost-attribution`` header).

``GET /models/{id}`` answers one id of that list (``openai/gpt-4o``), from the same cache, with
the serving provider's attribution in its metadata; an id the tenant cannot reach is a 404.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from byok_middleware.asgi import dumps, send_bytes
from byok_middleware.errors import BYOKError, NotFound
from byok_middleware.gateway import Call, Gateway
from byok_middleware.gateway.calls import Candidate
from byok_middleware.providers.anthropic import openai_model_list
from byok_middleware.providers.specs import PROVIDERS, Endpoint, WireFormat, split_model
from byok_middleware.proxy.pipeline import read_json
from byok_middleware.router import Incoming

__all__ = ["ModelCatalog", "prefixed_models"]

logger = logging.getLogger("byok_middleware.gateway.models")

_CacheKey = tuple[str, str]  # (provider, key id or "platform")


@dataclass(frozen=True, slots=True)
class _Listed:
    provider: str
    models: list[dict[str, Any]]
    attribution: str
    key_id: str | None
    cache_hit: bool


def prefixed_models(provider: str, body: Any) -> list[dict[str, Any]]:
    """OpenAI model entries from ``provider``'s ``/models`` answer, ids prefixed ``provider/``."""
    if not isinstance(body, dict):
        return []
    if PROVIDERS[provider].wire is WireFormat.ANTHROPIC:
        entries: list[Any] = openai_model_list(body)
    else:
        data = body.get("data")
        entries = data if isinstance(data, list) else []
    models = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        model_id = entry["id"]
        if provider == "google":
            model_id = model_id.removeprefix("models/")  # Gemini accepts both spellings
        models.append({**entry, "id": f"{provider}/{model_id}", "object": "model"})
    return models


def _no_body(candidate: Candidate) -> tuple[bytes, dict[str, str]]:
    return b"", {"accept": "application/json"}


class ModelCatalog:
    """The ``GET /models`` handler with its per-key cache (one per middleware instance).

    Args:
        ttl: seconds a provider's list is reused for the same paying key.
        fetch_timeout: seconds one provider may take before it is skipped.
        max_entries: cache entries kept (least recently used dropped first).
        clock: monotonic seconds (tests inject one).
    """

    def __init__(
        self,
        *,
        ttl: float = 300.0,
        fetch_timeout: float = 10.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.fetch_timeout = fetch_timeout
        self.max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[_CacheKey, tuple[float, list[dict[str, Any]]]] = OrderedDict()

    def __repr__(self) -> str:
        return f"ModelCatalog(ttl={self.ttl}, entries={len(self._cache)})"

    def _cached(self, key: _CacheKey) -> list[dict[str, Any]] | None:
        entry = self._cache.get(key)
        if entry is None or entry[0] <= self._clock():
            return None
        self._cache.move_to_end(key)
        return entry[1]

    def _store(self, key: _CacheKey, models: list[dict[str, Any]]) -> None:
        self._cache[key] = (self._clock() + self.ttl, models)
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def _list(self, gateway: Gateway, incoming: Incoming, provider: str) -> _Listed | None:
        # A dry run (no round-robin turn taken): forward below plans the same first candidate.
        plan = await gateway.plan(incoming.tenant_id, provider, advance=False)
        if not plan.candidates:
            return None  # the tenant cannot reach this provider
        first = plan.candidates[0]
        cached = self._cached((provider, first.key_id or "platform"))
        if cached is not None:
            return _Listed(provider, cached, first.attribution, first.key_id, cache_hit=True)
        call = Call(
            tenant_id=incoming.tenant_id,
            request_id=incoming.request_id,
            endpoint=Endpoint.MODELS.value,
            started=time.perf_counter(),
            provider=provider,
        )
        path = Endpoint.MODELS.value
        if PROVIDERS[provider].wire is WireFormat.ANTHROPIC:
            path += "?limit=1000"  # Anthropic pages its list, 20 by default
        async with asyncio.timeout(self.fetch_timeout):
            forwarded = await gateway.forward(call, path=path, build=_no_body, method="GET")
            _, body = await read_json(forwarded)
        models = prefixed_models(provider, body)
        served = forwarded.candidate
        self._store((provider, served.key_id or "platform"), models)
        return _Listed(provider, models, served.attribution, served.key_id, cache_hit=False)

    async def _try_list(
        self, gateway: Gateway, incoming: Incoming, provider: str
    ) -> _Listed | str | None:
        """The provider's models; a client-safe reason (str) when it failed."""
        try:
            return await self._list(gateway, incoming, provider)
        except BYOKError as exc:
            # The message is already redacted and written for the client; the key never is.
            logger.warning(
                "model list of %s skipped (%s): %s", provider, incoming.request_id, exc.code
            )
            return exc.message
        except TimeoutError:
            logger.warning("model list of %s timed out (%s)", provider, incoming.request_id)
            return f"{provider} did not answer within {self.fetch_timeout:g} s"

    async def handle(self, gateway: Gateway, incoming: Incoming) -> None:
        results = await asyncio.gather(
            *(self._try_list(gateway, incoming, provider) for provider in PROVIDERS)
        )
        data: list[dict[str, Any]] = []
        providers: dict[str, dict[str, Any]] = {}
        skipped: dict[str, str] = {}
        for provider, result in zip(PROVIDERS, results, strict=True):
            if isinstance(result, str):
                skipped[provider] = result
            elif result is not None:
                data.extend(result.models)
                providers[provider] = {
                    "cost_attribution": result.attribution,
                    "key_id": result.key_id,
                    "cache_hit": result.cache_hit,
                }
        metadata = {
            "cost_usd": 0,
            "request_id": incoming.request_id,
            "providers": providers,
            "providers_skipped": skipped,
        }
        body = {"object": "list", "data": data, gateway.config.metadata_field: metadata}
        headers = [
            (b"x-byok-request-id", incoming.request_id.encode()),
            (b"x-byok-provider-used", ",".join(providers).encode()),
            (b"x-byok-cost-usd", b"0"),
        ]
        await send_bytes(incoming.send, 200, dumps(body), extra_raw=headers)

    async def retrieve(self, gateway: Gateway, incoming: Incoming) -> None:
        """``GET /models/{id}``: one entry of the tenant's list, else 404."""
        model_id = incoming.params["id"]
        provider, _ = split_model(model_id)
        listed = await self._try_list(gateway, incoming, provider) if provider else None
        found = None
        if isinstance(listed, _Listed):
            found = next((m for m in listed.models if m["id"] == model_id), None)
        if found is None or not isinstance(listed, _Listed):
            raise NotFound(
                f"The model '{model_id}' does not exist or the caller cannot reach it; "
                f"GET {gateway.config.prefix}/models lists the ids to use",
                param="model",
                code="model_not_found",
            )
        metadata = {
            "cost_attribution": listed.attribution,
            "provider_used": listed.provider,
            "key_id": listed.key_id,
            "cost_usd": 0,
            "cache_hit": listed.cache_hit,
            "request_id": incoming.request_id,
        }
        body = {**found, gateway.config.metadata_field: metadata}
        headers = [
            (b"x-byok-request-id", incoming.request_id.encode()),
            (b"x-byok-provider-used", listed.provider.encode()),
            (b"x-byok-cost-attribution", listed.attribution.encode()),
            (b"x-byok-cost-usd", b"0"),
        ]
        await send_bytes(incoming.send, 200, dumps(body), extra_raw=headers)

"""The gateway runtime: collaborators wired together, opened once, shared by every request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import httpx

from byok_middleware.clock import Clock, utcnow
from byok_middleware.config import BYOKConfig
from byok_middleware.crypto import SecretStr
from byok_middleware.errors import BYOKError, NoProviderKey, UpstreamUnavailable
from byok_middleware.identity import GatewayKeyIdentity, Identify
from byok_middleware.keys.service import KeyService
from byok_middleware.pricing import GenaiPrices, PriceSource, Usage
from byok_middleware.proxy.ledger import Ledger
from byok_middleware.proxy.routing import RoutePlan, plan_route
from byok_middleware.proxy.upstream import (
    RETRYABLE_STATUSES,
    Candidate,
    auth_headers,
    normalize_error,
    upstream_url,
)
from byok_middleware.redaction import Redactor
from byok_middleware.state import Counters, InvalidationBus, LocalBus, MemoryCounters
from byok_middleware.storage import KeyStore, store_from_url
from byok_middleware.storage.base import UsageRecord

__all__ = ["Call", "Forwarded", "Gateway", "default_transport"]

logger = logging.getLogger("byok_middleware.gateway")

BuildRequest = Callable[[Candidate], tuple[bytes, dict[str, str]]]
"""Builds the upstream body and headers for one candidate (auth headers are added after)."""


def default_transport() -> httpx.AsyncBaseTransport:
    """The production upstream transport: httpx's API over aiohttp (DESIGN.md §7)."""
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport(limits=httpx.Limits(max_connections=512, keepalive_expiry=30))


@dataclass(slots=True)
class Call:
    """Per-request facts the proxy handlers share (never stored on the middleware)."""

    tenant_id: str
    request_id: str
    endpoint: str
    started: float
    provider: str = ""
    model: str = ""
    attempts: int = 0
    redactor: Redactor = field(default_factory=Redactor)


@dataclass(slots=True)
class Forwarded:
    """A successful upstream response (still open) and who paid for it."""

    response: httpx.Response
    candidate: Candidate


class Gateway:
    """Everything a request needs: store, keys, identity, upstream client, prices and ledger."""

    def __init__(
        self,
        config: BYOKConfig,
        *,
        store: KeyStore | None = None,
        identify: Identify | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        prices: PriceSource | None = None,
        clock: Clock = utcnow,
        bus: InvalidationBus | None = None,
        counters: Counters | None = None,
    ) -> None:
        self.config = config
        self.keyring = config.keyring()  # fails fast, naming BYOK_MASTER_KEY
        self.store = store if store is not None else store_from_url(config.database_url)
        self.clock = clock
        self.prices: PriceSource = prices if prices is not None else GenaiPrices()
        self.keys = KeyService(
            self.store,
            self.keyring,
            clock=clock,
            cache_ttl=config.key_cache_ttl,
            max_keys_per_tenant=config.max_keys_per_tenant,
        )
        self.gateway_keys: GatewayKeyIdentity | None = None
        if identify is None:
            self.gateway_keys = GatewayKeyIdentity(self.store, ttl=config.key_cache_ttl)
            identify = self.gateway_keys
        self.identify: Identify = identify
        self.ledger = Ledger(self.store)
        self.bus: InvalidationBus = bus if bus is not None else LocalBus()
        self.counters: Counters = counters if counters is not None else MemoryCounters()
        self.keys.on_change(self.bus.publish)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self.platform_keys = {p: SecretStr(k) for p, k in config.platform_keys.items()}
        self.platform_redactor = Redactor(config.platform_keys.values())

    def __repr__(self) -> str:
        return f"Gateway(prefix={self.config.prefix!r}, store={type(self.store).__name__})"

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("the gateway is not open")
        return self._client

    async def open(self) -> None:
        await self.store.open()
        await self.bus.start(self._on_invalidation)
        timeout = httpx.Timeout(self.config.upstream_timeout, connect=self.config.connect_timeout)
        self._client = httpx.AsyncClient(
            transport=self._transport if self._transport is not None else default_transport(),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )
        self.ledger.start()

    def _on_invalidation(self, tenant_id: str) -> None:
        # Another replica (or this one) changed the tenant's keys: reload them on next use.
        self.keys.invalidate(tenant_id)

    async def close(self) -> None:
        await self.ledger.close()
        await self.bus.close()
        await self.counters.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        await self.store.close()

    def redactor_for(self, candidate: Candidate) -> Redactor:
        return Redactor([candidate.secret.reveal(), *self.config.platform_keys.values()])

    async def plan(self, tenant_id: str, provider: str) -> RoutePlan:
        keys = await self.keys.keys_for(tenant_id, provider)
        return plan_route(
            provider,
            keys,
            platform_key=self.platform_keys.get(provider),
            allow_platform_fallback=self.config.allow_platform_fallback,
            platform_attribution=self.config.platform_attribution,
            now=self.clock(),
        )

    def no_key_error(self, plan: RoutePlan) -> NoProviderKey:
        provider = plan.provider
        why = f" ({plan.platform_reason})" if plan.platform_reason else ""
        return NoProviderKey(
            f"No {provider} key is available for this tenant{why}. Register one with "
            f'POST {self.config.prefix}/byok/providers {{"provider": "{provider}", '
            '"api_key": "..."}',
            param="model",
        )

    async def forward(
        self,
        call: Call,
        *,
        path: str,
        build: BuildRequest,
        method: str = "POST",
    ) -> Forwarded:
        """Send the call to the first candidate that answers 2xx, failing over on retryable errors.

        Raises the last candidate's error (OpenAI-shaped, redacted) when none succeeds.
        """
        plan = await self.plan(call.tenant_id, call.provider)
        if not plan.candidates:
            raise self.no_key_error(plan)
        base = self.config.base_url(call.provider)
        url = upstream_url(base, call.provider, path)
        last_error: BYOKError | None = None
        for candidate in plan.candidates:
            call.attempts += 1
            call.redactor = self.redactor_for(candidate)
            content, headers = build(candidate)
            headers.update(auth_headers(call.provider, candidate.secret))
            request = self.client.build_request(method, url, content=content, headers=headers)
            try:
                response = await self.client.send(request, stream=True)
            except httpx.TimeoutException:
                last_error = UpstreamUnavailable(
                    f"{call.provider} did not answer in time", status_code=504, code="timeout"
                )
                continue
            except httpx.TransportError:
                last_error = UpstreamUnavailable(f"{call.provider} could not be reached")
                continue
            if response.status_code < 400:
                return Forwarded(response, candidate)
            try:
                body = await response.aread()
            except httpx.HTTPError:
                body = b""
            finally:
                await response.aclose()
            last_error = normalize_error(
                call.provider,
                response.status_code,
                body,
                redactor=call.redactor,
                attribution=candidate.attribution,
                retry_after=response.headers.get("retry-after"),
            )
            if response.status_code not in RETRYABLE_STATUSES:
                break
        if last_error is None:  # pragma: no cover - plan.candidates is non-empty
            raise RuntimeError("no attempt was made")
        raise last_error

    def cost(self, call: Call, usage: Usage | None) -> Decimal | None:
        if usage is None:
            return None
        return self.prices.cost(call.provider, call.model, usage, when=self.clock())

    def record(
        self,
        call: Call,
        *,
        candidate: Candidate | None,
        usage: Usage | None,
        cost: Decimal | None,
        status_code: int,
        error_type: str | None = None,
    ) -> None:
        """Queue the ledger row of a finished call (never awaits)."""
        loop = asyncio.get_running_loop()
        self.ledger.record(
            UsageRecord(
                request_id=call.request_id,
                tenant_id=call.tenant_id,
                key_id=candidate.key_id if candidate else None,
                provider=call.provider,
                model=call.model,
                endpoint=call.endpoint,
                attribution=candidate.attribution if candidate else "none",
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
                cached_tokens=usage.cached_tokens if usage else 0,
                cost_usd=cost,
                status_code=status_code,
                latency_ms=round((loop.time() - call.started) * 1000, 3),
                created_at=self.clock(),
                attempts=max(call.attempts, 1),
                error_type=error_type,
            )
        )

"""The composition root: collaborators wired together, opened once, shared by every request.

A proxied call goes through four engine steps, each one method here, and the HTTP layer
(``proxy/``) only reads requests and writes answers around them:

1. ``route_model``: resolve the model name to the providers that may serve it;
2. ``plan``: the candidates (keys, then the platform key) allowed now, by priority and price;
3. ``forward``: the first candidate that answers 2xx, failing over (``gateway/failover.py``);
4. ``cost`` and ``record``: price the usage and queue the ledger row.

New request-path features hook in at these steps: budgets reserve in ``forward`` before each
attempt and settle in ``record``; a response cache answers before ``plan`` and stores after a
good answer; a router picks ``call.routes`` in ``route_model``.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Unpack

import httpx

from byok_middleware.cache import CacheMode, ResponseCache
from byok_middleware.clock import utcnow
from byok_middleware.config import BYOKConfig
from byok_middleware.crypto import SecretStr
from byok_middleware.errors import BYOKError, ConfigurationError, UnsupportedEndpoint
from byok_middleware.gateway.autorouting import AutoRouting, is_auto
from byok_middleware.gateway.budget_alerts import BudgetAlerts
from byok_middleware.gateway.budgets import BudgetBackend, MemoryBudgets
from byok_middleware.gateway.caching import CacheStep, cache_backend
from byok_middleware.gateway.calls import (
    BuildRequest,
    Call,
    Candidate,
    Forwarded,
    KeyUse,
    ModelRoute,
)
from byok_middleware.gateway.failover import Failover
from byok_middleware.gateway.health import HealthRecorder
from byok_middleware.gateway.journal import Journal, journal_directory
from byok_middleware.gateway.keys import KeyService, ResolvedKey
from byok_middleware.gateway.ledger import Ledger
from byok_middleware.gateway.ledger_rows import MAX_TOKENS
from byok_middleware.gateway.limits import LimitTracker
from byok_middleware.gateway.models import ModelCatalogue, resolve_routes
from byok_middleware.gateway.observing import Telemetry, build_telemetry
from byok_middleware.gateway.options import EngineOptions
from byok_middleware.gateway.planning import (
    ProviderOption,
    RoutePlan,
    RoutePolicy,
    no_candidate_error,
    plan_candidates,
)
from byok_middleware.gateway.spend import SpendControl, cost_source
from byok_middleware.gateway.tenants import GatewayKeys, Identify
from byok_middleware.gateway.transport import AiohttpUpstream, HttpxUpstream, UpstreamClient
from byok_middleware.gateway.upstream import Upstreams
from byok_middleware.pricing import GenaiPrices, PriceSource, Usage
from byok_middleware.providers.specs import PROVIDERS, Endpoint, split_model
from byok_middleware.shared import EVERY_TENANT
from byok_middleware.state import Counters, InvalidationBus, LocalBus, MemoryCounters
from byok_middleware.storage import store_from_url
from byok_middleware.storage.base import UsageRecord

__all__ = [
    "Call",
    "Candidate",
    "Forwarded",
    "Gateway",
    "KeyUse",
    "providers_offering",
    "unsupported_endpoint",
    "upstream_client",
]

logger = logging.getLogger("byok_middleware.gateway")

# How long a shutdown waits for the ledger to store queued rows (they stay journalled after).
LEDGER_CLOSE_GRACE = 10.0


def upstream_client(
    config: BYOKConfig, transport: httpx.AsyncBaseTransport | None
) -> UpstreamClient:
    """aiohttp directly in production; an injected httpx transport (tests) through httpx."""
    timeout, connect = config.upstream_timeout, config.connect_timeout
    cap, deadline = config.max_upstream_body_bytes, config.upstream_deadline
    if transport is not None:
        return HttpxUpstream(
            transport,
            timeout=timeout,
            connect_timeout=connect,
            max_body_bytes=cap,
            deadline=deadline,
        )
    return AiohttpUpstream(
        timeout=timeout, connect_timeout=connect, max_body_bytes=cap, deadline=deadline
    )


def _shared_state(
    config: BYOKConfig, bus: InvalidationBus | None, counters: Counters | None
) -> tuple[InvalidationBus, Counters]:
    """The injected bus and counters; else Redis ones if ``config.redis_url``; else in-process."""
    if config.redis_url and (bus is None or counters is None):
        try:
            # Imported here so that single-replica users need no redis-py.
            from byok_middleware.shared.redis_bus import RedisBus
            from byok_middleware.shared.redis_counters import RedisCounters
        except ImportError as exc:
            raise ConfigurationError(
                "BYOK_REDIS_URL is set but redis-py is not installed; install it with "
                "`pip install 'byok_middleware[redis]'`"
            ) from exc
        bus = bus if bus is not None else RedisBus(config.redis_url)
        counters = counters if counters is not None else RedisCounters(config.redis_url)
    return (
        bus if bus is not None else LocalBus(),
        counters if counters is not None else MemoryCounters(),
    )


def _budget_backend(config: BYOKConfig) -> BudgetBackend:
    """Budget figures in Redis when replicas share one (``config.redis_url``), else in process."""
    if not config.redis_url:
        return MemoryBudgets()
    from byok_middleware.shared.redis_budgets import RedisBudgets  # needs redis-py

    return RedisBudgets(config.redis_url)


def providers_offering(endpoint: Endpoint) -> list[str]:
    """The providers whose spec lists ``endpoint``, in the table's order."""
    return [name for name, spec in PROVIDERS.items() if endpoint in spec.endpoints]


def unsupported_endpoint(provider: str, endpoint: Endpoint) -> UnsupportedEndpoint:
    """The 400 for ``provider`` not offering ``endpoint``, naming the providers that do."""
    return UnsupportedEndpoint(
        f"{provider} does not offer {endpoint.value}; use a model of a provider that does: "
        + ", ".join(providers_offering(endpoint)),
        param="model",
    )


@dataclass(frozen=True, slots=True)
class _CachedPlan:
    keys: tuple[Sequence[ResolvedKey], ...]  # what keys_for returned, compared by identity
    plan: RoutePlan


class Gateway:
    """Everything a request needs: store, keys, identity, upstream client, prices and ledger."""

    def __init__(self, config: BYOKConfig, **options: Unpack[EngineOptions]) -> None:
        """``options``: :class:`~byok_middleware.gateway.options.EngineOptions` (each one
        replaces the default built from ``config``)."""
        store, identify = options.get("store"), options.get("identify")
        prices, clock = options.get("prices"), options.get("clock", utcnow)
        bus, counters = options.get("bus"), options.get("counters")
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
        # Without the host's own ``identify``, callers present gateway API keys.
        self.identify: Identify | None = identify
        self.gateway_keys = GatewayKeys(self.store, ttl=config.key_cache_ttl)
        journal_dir = journal_directory(
            config.journal_dir, config.database_url, store_given=store is not None
        )
        self.ledger = Ledger(self.store, journal=Journal(journal_dir) if journal_dir else None)
        self.bus, self.counters = _shared_state(config, bus, counters)
        self.keys.on_change(self.bus.publish)
        self._transport = options.get("transport")
        self._upstream = options.get("upstream")  # injected: used as is, closed at shutdown
        self._client: UpstreamClient | None = None
        self._failover: Failover | None = None
        self.platform_keys = {p: SecretStr(k) for p, k in config.platform_keys.items()}
        self.upstreams = Upstreams(
            config.base_url,
            list(config.platform_keys.values()),
            first_event_timeout=config.first_event_timeout,
        )
        self.catalogue = ModelCatalogue(self.prices)
        # Metrics, traces, log lines and webhook alerts (gateway/observing.py); None: none.
        self.telemetry: Telemetry | None = build_telemetry(
            config, self.store, self.keyring, options.get("observer")
        )
        self.health = HealthRecorder(self.keys, self.store, clock, telemetry=self.telemetry)
        # Budgets (gateway/spend.py): reserved before each attempt, settled in ``record``.
        self.spend = SpendControl(
            self.store, self.ledger, self.prices, clock, backend=_budget_backend(config)
        )
        if self.telemetry is not None:
            self.spend.alerts = BudgetAlerts(self.spend, self.telemetry, clock)
        self.limits = LimitTracker(self.counters, self.store, clock, spend=self.spend.key_spent)
        self._turn = 0  # round-robin over keys of equal price and priority
        self._policy = RoutePolicy(config.allow_platform_fallback, config.platform_attribution)
        self._plans: dict[tuple[str, tuple[ModelRoute, ...]], _CachedPlan] = {}
        self._named_routes: dict[tuple[object, Endpoint | None], tuple[ModelRoute, ...]] = {}
        # model "auto" (gateway/autorouting.py): chosen in auto.prepare, checked in route_model.
        self.auto = AutoRouting(
            self, seed=config.auto_route_seed, explore_rate=config.auto_route_explore
        )
        # The response cache (gateway/caching.py): looked up before planning, so a hit pays
        # nothing and never changes which key would pay for a miss. None when it is off.
        self.cache: CacheStep | None = None
        if config.cache.mode is not CacheMode.OFF:
            backend = cache_backend(config.database_url, config.cache.max_bytes)
            response_cache = ResponseCache(
                backend,
                self.keyring,
                config.cache,
                clock=clock,
                metadata_field=config.metadata_field,
            )
            self.cache = CacheStep(self, response_cache)

    def __repr__(self) -> str:
        return f"Gateway(prefix={self.config.prefix!r}, store={type(self.store).__name__})"

    @property
    def client(self) -> UpstreamClient:
        if self._client is None:
            raise RuntimeError("the gateway is not open")
        return self._client

    @property
    def failover(self) -> Failover:
        if self._failover is None:
            raise RuntimeError("the gateway is not open")
        return self._failover

    async def open(self) -> None:
        # Both raise ConfigurationError naming the unreachable server (URL without password).
        await self.store.open()
        try:
            await self.bus.start(self._on_invalidation)
        except BaseException:
            await self.store.close()
            raise
        self._client = self._upstream or upstream_client(self.config, self._transport)
        self._failover = Failover(
            self._client,
            self.upstreams,
            health=self.health,
            limits=self.limits,
            clock=self.clock,
            spend=self.spend,
            telemetry=self.telemetry,
        )
        self.spend.start()
        try:
            self.ledger.start()  # replays what a crashed process left in the journal
        except OSError as exc:
            await self.close()
            raise ConfigurationError(
                f"the ledger journal cannot be opened ({exc.strerror or exc}); set "
                "BYOK_JOURNAL_DIR to a writable folder (or 'off' to run without one)"
            ) from None
        if self.cache is not None:
            await self.cache.cache.open()
        if isinstance(self.prices, GenaiPrices):
            # Load the price data now (tens of ms, in a thread), not in the first request.
            await asyncio.to_thread(self._warm_prices)

    def _warm_prices(self) -> None:
        self.prices.cost("openai", "gpt-4o", Usage(prompt_tokens=1), when=self.clock())

    def _on_invalidation(self, tenant_id: str) -> None:
        # Another replica (or this one) changed the tenant's keys: reload them on next use.
        if self.cache is not None:
            self.cache.forget(tenant_id)  # a cache clear: the hot layer's opened entries go
        if tenant_id != EVERY_TENANT:
            self.keys.invalidate(tenant_id)
            self.spend.forget(tenant_id)  # its policy may have changed too
            # Its cached plans are stale now; drop them rather than keep old secrets around.
            for stale in [k for k in self._plans if k[0] == tenant_id]:
                del self._plans[stale]
            return
        # The bus reconnected and may have missed changes, or gateway keys were revoked.
        self.keys.invalidate()
        self._plans.clear()
        self.gateway_keys.forget()
        self.spend.forget()

    async def close(self) -> None:
        await self.health.flush()
        await self.limits.flush()
        if self.spend.alerts is not None:
            await self.spend.alerts.flush()
        await self.spend.close()
        if self.telemetry is not None:
            await self.telemetry.aclose()  # webhook deliveries log to the store: before it closes
        await self.ledger.close(grace=LEDGER_CLOSE_GRACE)
        await self.bus.close()
        await self.counters.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            self._failover = None
        await self.auto.close()
        await self.keys.aclose()
        await self.gateway_keys.aclose()
        if self.cache is not None:
            await self.cache.cache.close()
        await self.store.close()

    def route_model(self, call: Call, model: object, endpoint: Endpoint | None = None) -> None:
        """Resolve ``model`` onto ``call``: ``provider/model``, or a bare name through the
        catalogue (every provider serving it, cheapest first), keeping the providers that offer
        ``endpoint`` and share the first one's wire format (the handler builds one body).

        Raises ``InvalidRequest`` (400) for an unknown model and ``UnsupportedEndpoint`` (400)
        when no provider of the model offers ``endpoint``.
        """
        if is_auto(model):
            self.auto.apply(call)  # auto.prepare chose the model and set call.routes
            return
        named = type(model) is str and split_model(model)[0] is not None
        cache_key = (model, endpoint) if named else None
        routes = self._named_routes.get(cache_key) if cache_key is not None else None
        if routes is None:
            routes = resolve_routes(model, self.catalogue, when=self.clock())
            if endpoint is not None:
                offering = tuple(r for r in routes if endpoint in PROVIDERS[r.provider].endpoints)
                if not offering:
                    raise unsupported_endpoint(routes[0].provider, endpoint)
                routes = offering
            wire = PROVIDERS[routes[0].provider].wire
            routes = tuple(r for r in routes if PROVIDERS[r.provider].wire is wire)
            if cache_key is not None:
                # provider/model routes never change; bare names are priced at the time.
                if len(self._named_routes) >= 4096:
                    self._named_routes.clear()  # model names are client input: bounded
                self._named_routes[cache_key] = routes
        call.routes = routes
        call.provider, call.model = routes[0].provider, routes[0].model

    async def plan(
        self, tenant_id: str, routes: str | Sequence[ModelRoute], *, advance: bool = True
    ) -> RoutePlan:
        """The candidates for a call now (no I/O but the cached keys and the limit counters).

        ``advance`` moves the round-robin on; a dry run leaves it where the next request finds it.
        """
        routes = (ModelRoute(routes, ""),) if isinstance(routes, str) else tuple(routes)
        if len(routes) == 1:  # nearly every call: no async comprehension (a coroutine of its own)
            provider = routes[0].provider
            found = self.keys.cached_keys(tenant_id, provider)
            if found is None:
                found = await self.keys.keys_for(tenant_id, provider)
            keys: tuple[Sequence[ResolvedKey], ...] = (found,)
        else:
            keys = tuple([await self.keys.keys_for(tenant_id, r.provider) for r in routes])
        turn = self._turn
        if advance:
            self._turn = (self._turn + 1) % 1_000_000_007
        # A steady plan is reused while keys_for returns the very same key lists (any change to
        # the tenant's keys, their health included, or the cache's expiry makes new ones).
        cached = self._plans.get((tenant_id, routes))
        if cached is not None and all(map(operator.is_, cached.keys, keys)):
            return cached.plan
        options = [
            ProviderOption(route, route_keys, self.platform_keys.get(route.provider))
            for route, route_keys in zip(routes, keys, strict=True)
        ]
        usage = await self.limits.usage(k.record for o in options for k in o.keys)
        plan = plan_candidates(
            options, policy=self._policy, usage=usage, now=self.clock(), turn=turn
        )
        if plan.steady:
            if len(self._plans) >= 4096:
                self._plans.clear()  # bounded: tenants and models come and go
            self._plans[(tenant_id, routes)] = _CachedPlan(keys, plan)
        return plan

    def no_key_error(self, plan: RoutePlan) -> BYOKError:
        """The error for a plan without candidates: 429 naming the limits, else 400."""
        return no_candidate_error(plan, prefix=self.config.prefix, now=self.clock())

    async def forward(
        self,
        call: Call,
        *,
        path: str,
        build: BuildRequest,
        method: str = "POST",
        stream: bool = False,
    ) -> Forwarded:
        """Send the call to the first candidate that answers 2xx, failing over on retryable errors
        (table in ``gateway/failover.py``); keys' health is updated on the way.

        With ``stream`` a 2xx counts only once its first SSE event arrived, so a stream that
        dies before it still fails over. Sets ``call.provider``/``call.model``/``call.attempts``
        to the serving candidate. Raises a 429 (``RateLimited``) or 400 when no candidate is
        usable, else the last candidate's error (OpenAI-shaped, redacted) when none succeeds.
        """
        routes = call.routes or (ModelRoute(call.provider, call.model),)
        policy = self.spend.cached_policy(call.tenant_id)
        if policy is False:
            policy = await self.spend.policy(call.tenant_id)
        plan = await self.plan(call.tenant_id, routes)
        if not plan.candidates:
            raise self.no_key_error(plan)
        return await self.failover.attempt(
            call, plan, path=path, build=build, method=method, stream=stream, policy=policy
        )

    def budget_headers(self, call: Call) -> list[tuple[bytes, bytes]]:
        """``x-byok-budget-remaining-usd`` (and ``x-byok-max-tokens-clamped``) of a call that a
        budget applies to; empty otherwise. Call it after ``record`` (non-streamed answers: the
        figure is then settled) or before the first byte of a stream (the reservation deducted).
        """
        return self.spend.headers(call)

    def cost_source(self, call: Call, cost: Decimal | None) -> str:
        """Where ``cost`` comes from: ``price_table`` (genai-prices, version in
        ``pricing.PRICE_TABLE``), ``operator`` (prices the operator supplied) or ``unpriced``."""
        return cost_source(self.prices, call.provider, call.model, cost)

    def cost(
        self, call: Call, usage: Usage | None, *, when: datetime | None = None
    ) -> Decimal | None:
        """The list price of ``usage`` at ``when`` (default: now); None when unknown."""
        if usage is None:
            return None
        return self.prices.cost(call.provider, call.model, usage, when=when or self.clock())

    def record(
        self,
        call: Call,
        *,
        candidate: Candidate | None,
        usage: Usage | None,
        cost: Decimal | None,
        status_code: int,
        error_type: str | None = None,
        when: datetime | None = None,
    ) -> None:
        """Queue the ledger row of a finished call (never awaits); feeds tpm and budgets.

        ``when`` is the row's time (default: now); a caller that just priced the call passes the
        same reading, which saves a clock call per request.
        """
        if candidate is not None and usage is not None:
            # Upstreams report usage: bounded here so that shared counters cannot overflow.
            tokens = min(max(usage.prompt_tokens + usage.completion_tokens, 0), MAX_TOKENS)
            self.limits.finished(candidate.record, tokens, cost)
        self.spend.settle(call, cost)
        if call.route_reason is not None:
            self.auto.finished(call, status_code)  # an upstream error teaches the router
        self.ledger.record(
            row := UsageRecord(
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
                latency_ms=round((time.perf_counter() - call.started) * 1000, 3),
                created_at=when or self.clock(),
                attempts=max(call.attempts, 1),
                error_type=error_type,
                cost_source=cost_source(self.prices, call.provider, call.model, cost)
                if usage is not None
                else None,
                # Streams only: a whole answer's first byte comes at its latency (README).
                ttft_ms=None
                if call.first_byte is None
                else round((call.first_byte - call.started) * 1000, 3),
            )
        )
        if self.telemetry is not None:
            self.telemetry.finish(call, row)

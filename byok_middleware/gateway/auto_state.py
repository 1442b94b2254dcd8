"""Where the auto router's learning lives: learner states and routed requests, store-backed.

* ``LearnerStates``: the shared state and one per tenant, read from the store and cached in
  process for ``ttl`` seconds (decisions read the cache; so replicas see each other's learning
  within ``ttl``). A reward is applied to a fresh copy and written back with compare-and-set;
  on a lost race the scope is read again and the observation applied again (bounded tries), so
  replicas learning at once lose nothing.
* ``RoutedLog``: request id -> (tenant, model, feature vector), in a bounded in-process map for
  the common case (feedback to the replica that routed) and in the store for the others,
  written off the request path in small batches and pruned past ``retention``.

A store without the ``RouterStore`` methods (a custom ``KeyStore``) keeps all of it in process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from byok_middleware.autoroute import AutoRouter, LearnerState, RequestFeatures
from byok_middleware.autoroute.bandit import sparse
from byok_middleware.clock import Clock
from byok_middleware.storage.sql_router import RoutedRequest, RouterState, RouterStore

__all__ = ["SHARED_SCOPE", "LearnerStates", "Routed", "RoutedLog", "tenant_scope"]

logger = logging.getLogger("byok_middleware.gateway.autorouting")

SHARED_SCOPE = "shared"
_CAS_TRIES = 8


def tenant_scope(tenant_id: str) -> str:
    return f"tenant:{tenant_id}"


@dataclass(slots=True)
class _Cached:
    state: LearnerState
    version: int
    expires: float


class LearnerStates:
    """Learner states by scope: cached reads, compare-and-set writes."""

    def __init__(
        self,
        store: object,
        router: AutoRouter,
        clock: Clock,
        *,
        ttl: float = 5.0,
        max_cached: int = 4096,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store if isinstance(store, RouterStore) else None
        self._router = router
        self._clock = clock
        self._ttl = ttl
        self._max_cached = max_cached
        self._monotonic = monotonic
        self._cache: dict[str, _Cached] = {}
        self._lock = asyncio.Lock()  # one learning write at a time in this process

    def cached(self, scope: str) -> LearnerState | None:
        """The cached state of ``scope`` if fresh (no coroutine); None when it must load."""
        entry = self._cache.get(scope)
        if entry is None or (self._store is not None and entry.expires <= self._monotonic()):
            return None
        return entry.state

    async def get(self, scope: str) -> LearnerState:
        """The state of ``scope`` (cached for ``ttl``; empty if none was learned yet)."""
        found = self.cached(scope)
        if found is not None:
            return found
        return (await self._load(scope)).state

    async def _load(self, scope: str) -> _Cached:
        if self._store is None:
            entry = self._cache.get(scope) or _Cached(LearnerState.empty(), 0, 0.0)
        else:
            row = await self._store.get_router_state(scope)
            state = LearnerState.empty()
            if row is not None:
                try:
                    state = LearnerState.from_json(json.loads(row.state))
                except (ValueError, KeyError, TypeError):
                    # A damaged row teaches nothing; the next write replaces it.
                    logger.error("router state %s cannot be read; starting from priors", scope)
            entry = _Cached(state, row.version if row is not None else 0, 0.0)
        entry.expires = self._monotonic() + self._ttl
        if len(self._cache) >= self._max_cached and scope not in self._cache:
            self._cache.clear()  # tenants come and go: bounded
        self._cache[scope] = entry
        return entry

    async def learn(self, tenant_id: str, key: str, vector: Sequence[float], reward: float) -> None:
        """Learn ``reward`` for model ``key`` on a request of ``vector``: the shared arm, then
        the tenant's on what the shared one leaves (as ``AutoRouter.learn`` does)."""
        if not 0.0 <= reward <= 1.0:
            raise ValueError("reward must be between 0 and 1")
        features = RequestFeatures.from_vector(vector)
        x = features.vector
        provider, _, model = key.partition("/")
        prior = self._router.priors.prior(provider, model).for_task(features.task)
        residual = reward - prior
        async with self._lock:
            shared = await self._update(
                SHARED_SCOPE, lambda s: s.observe(key, x, residual, self._router.shared_weight)
            )
            arm = shared.arms.get(key)
            shared_part = arm.mean(sparse(x)) if arm is not None else 0.0
            await self._update(
                tenant_scope(tenant_id), lambda s: s.observe(key, x, residual - shared_part)
            )

    async def _update(self, scope: str, change: Callable[[LearnerState], None]) -> LearnerState:
        for _ in range(_CAS_TRIES):
            entry = await self._load(scope)  # fresh: another replica may have written
            state = LearnerState.from_json(entry.state.to_json())  # never mutate a shared one
            change(state)
            version = entry.version + 1
            if self._store is not None:
                row = RouterState(scope, json.dumps(state.to_json()), version, self._clock())
                if not await self._store.put_router_state(row):
                    continue  # another replica wrote first: apply ours to its state
            self._cache[scope] = _Cached(state, version, self._monotonic() + self._ttl)
            return state
        raise RuntimeError(f"router state {scope} kept changing; the reward was not learned")


@dataclass(frozen=True, slots=True)
class Routed:
    tenant_id: str
    model: str
    vector: tuple[float, ...]


class RoutedLog:
    """Routed requests kept for feedback: in process (bounded) and in the store (pruned)."""

    def __init__(
        self,
        store: object,
        clock: Clock,
        *,
        max_entries: int = 10_000,
        retention: timedelta = timedelta(days=7),
        batch: int = 256,
        prune_every: float = 3600.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store if isinstance(store, RouterStore) else None
        self._clock = clock
        self._max_entries = max_entries
        self.retention = retention
        self._batch = batch
        self._prune_every = prune_every
        self._monotonic = monotonic
        self._recent: OrderedDict[str, Routed] = OrderedDict()
        self._scored: set[str] = set()  # without a store: request ids already scored
        self._pending: list[RoutedRequest] = []
        self._next_prune = 0.0

    def add(self, request_id: str, routed: Routed) -> None:
        """Remember a routed request (never awaits); ``flush`` writes it to the store."""
        self._recent[request_id] = routed
        while len(self._recent) > self._max_entries:
            dropped, _ = self._recent.popitem(last=False)
            self._scored.discard(dropped)
        if self._store is not None and len(self._pending) < self._max_entries:
            vector = json.dumps(list(routed.vector))
            self._pending.append(
                RoutedRequest(request_id, routed.tenant_id, routed.model, vector, self._clock())
            )

    def recent(self, request_id: str) -> Routed | None:
        return self._recent.get(request_id)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Write the pending rows (in batches), and prune old ones once per ``prune_every``."""
        if self._store is None:
            return
        while self._pending:
            rows, self._pending = self._pending[: self._batch], self._pending[self._batch :]
            await self._store.add_routed_requests(rows)
        if self._monotonic() >= self._next_prune:
            self._next_prune = self._monotonic() + self._prune_every
            await self._store.prune_routed_requests(self._clock() - self.retention)

    async def find(self, tenant_id: str, request_id: str) -> Routed | None:
        """The tenant's routed request ``request_id`` (another tenant's: None)."""
        found = self._recent.get(request_id)
        if found is not None:
            return found if found.tenant_id == tenant_id else None
        if self._store is None:
            return None
        row = await self._store.get_routed_request(tenant_id, request_id)
        if row is None:
            return None
        vector = tuple(float(v) for v in json.loads(row.features))
        return Routed(row.tenant_id, row.model, vector)

    async def mark_scored(self, tenant_id: str, request_id: str) -> bool:
        """True the first time a score is taken for the request; False after."""
        if self._store is None:
            if request_id in self._scored:
                return False
            self._scored.add(request_id)
            return True
        await self.flush()  # the row may still be pending
        return await self._store.mark_routed_scored(tenant_id, request_id)

"""``model: "auto"`` in the engine: candidates, the decision, and the feedback bookkeeping.

The decision itself is ``byok_middleware.autoroute`` (I/O-free); this module feeds it:

* Candidates: the models of ``gateway/auto_models.py`` whose provider the tenant can reach now,
  asked of the key plan exactly as a named model's call would be (its own keys by health,
  cooldown and limits; the platform key where the operator and the tenant's policy allow:
  ``platform_fallback`` "always" and ``platform_models``). An option's priority is the best
  priority among the tenant's usable keys of that provider; platform-only providers come after.
* ``prepare(call, body, header)`` (async, before ``Gateway.route_model``) decides and puts the
  chosen model on ``call.routes``: failover then runs over that model's keys as for a named
  model. ``Gateway.route_model`` meets ``"auto"`` only to check that ``prepare`` ran.
* Feedback: explicit (``feedback``), and implicit: an upstream error after the choice
  (``finished``), ``finish_reason: "length"`` (``answered``), the same prompt sent again within
  ``repeat_window`` seconds (in ``prepare``, for the earlier request). Learning happens off the
  request path; the states and the routed requests live in the store (``gateway/auto_state.py``).

Exploration happens only among the candidates above, so never outside the tenant's policy; with
``seed`` the decisions are reproducible (``BYOK_AUTO_ROUTE_SEED``, for tests).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from byok_middleware.autoroute import (
    AutoRouter,
    ModelOption,
    RepeatDetector,
    RouteDecision,
    cost_weight_for,
    extract_features,
    implicit_reward,
)
from byok_middleware.autoroute.feedback import REPEAT_REWARD
from byok_middleware.autoroute.router import NAMED_WEIGHTS
from byok_middleware.errors import InvalidRequest, NotFound
from byok_middleware.gateway.auto_models import AUTO_MODELS, AutoModel, ModelPrices
from byok_middleware.gateway.auto_state import (
    SHARED_SCOPE,
    LearnerStates,
    Routed,
    RoutedLog,
    tenant_scope,
)
from byok_middleware.gateway.calls import Call, ModelRoute
from byok_middleware.jsoncodec import dumps
from byok_middleware.storage.base import TenantPolicy

if TYPE_CHECKING:
    from byok_middleware.gateway.core import Gateway

__all__ = ["PLATFORM_PRIORITY", "AutoRouting", "chat_view", "is_auto"]

logger = logging.getLogger("byok_middleware.gateway.autorouting")

PLATFORM_PRIORITY = 1_000  # after every tenant key (priorities are small integers)
COST_WEIGHT_HEADER = "x-byok-route-cost-weight"
# HTTP statuses after the choice that say nothing of the model: the key (401/403) or the
# tenant's rate (429) failed, not the model.
_NOT_THE_MODEL = frozenset((401, 403, 429))


def is_auto(model: object) -> bool:
    """Whether ``model`` names the auto router (``auto``, ``auto:cheap``, ...)."""
    return type(model) is str and (model == "auto" or model.startswith("auto:"))


def chat_view(body: Mapping[str, Any]) -> dict[str, Any]:
    """A chat-completions-shaped view of a chat, Responses or Messages body, for the features.

    Chat and Anthropic Messages bodies already have ``messages`` (Messages' ``system`` is
    added as a system turn); a Responses body's ``instructions`` and ``input`` become turns and
    its ``text.format`` the ``response_format``.
    """
    view = dict(body)
    system = body.get("system") if "messages" in body else body.get("instructions")
    messages: list[Any] = []
    if isinstance(system, str | list):
        messages.append({"role": "system", "content": system})
    if "messages" in body:
        if isinstance(body["messages"], list):
            messages.extend(body["messages"])
    else:
        source = body.get("input")
        if isinstance(source, str):
            messages.append({"role": "user", "content": source})
        elif isinstance(source, list):
            messages.extend(i for i in source if isinstance(i, dict) and "content" in i)
        text = body.get("text")
        if isinstance(text, dict) and isinstance(text.get("format"), dict):
            view["response_format"] = text["format"]
    view["messages"] = messages
    return view


class AutoRouting:
    """The auto router of one gateway: one per process, state shared through the store."""

    def __init__(
        self,
        gateway: Gateway,
        *,
        router: AutoRouter | None = None,
        models: Sequence[AutoModel] = AUTO_MODELS,
        seed: int | None = None,
        explore_rate: float = 0.05,
        repeat_window: float = 120.0,
        state_ttl: float = 5.0,
        policy_ttl: float = 30.0,
    ) -> None:
        self._gateway = gateway
        self.router = router or AutoRouter(explore_rate=explore_rate)
        # Exploration is not security: a seedable PRNG keeps decisions reproducible.
        self.rng = random.Random(seed)  # noqa: S311 -- not a secret; None: seeded by the OS
        self._by_provider: dict[str, list[AutoModel]] = {}
        for m in models:
            self._by_provider.setdefault(m.provider, []).append(m)
        self.prices = ModelPrices(gateway.prices)
        self.states = LearnerStates(gateway.store, self.router, gateway.clock, ttl=state_ttl)
        self.log = RoutedLog(gateway.store, gateway.clock)
        self.repeats = RepeatDetector(window_s=repeat_window)
        self._policy_ttl = policy_ttl
        self._policies: dict[str, tuple[float, TenantPolicy | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._flushing = False

    # Candidates and the decision

    async def _policy(self, tenant_id: str) -> TenantPolicy | None:
        cached = self._policies.get(tenant_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        policy = await self._gateway.store.get_policy(tenant_id)
        if len(self._policies) >= 4096:
            self._policies.clear()  # bounded: tenants come and go
        self._policies[tenant_id] = (time.monotonic() + self._policy_ttl, policy)
        return policy

    async def options(self, tenant_id: str) -> tuple[list[ModelOption], dict[str, str]]:
        """The models the tenant can reach now, and why each other provider is left out."""
        policy = await self._policy(tenant_id)
        now = self._gateway.clock()
        options: list[ModelOption] = []
        left_out: dict[str, str] = {}
        for provider, models in self._by_provider.items():
            plan = await self._gateway.plan(tenant_id, provider, advance=False)
            own = [c.record.priority for c in plan.candidates if c.record is not None]
            if own:
                options += self.prices.options(models, min(own), now)
                continue
            if not any(c.record is None for c in plan.candidates):
                left_out[provider] = "no usable key now (none, invalid, cooling down or limited)"
            elif policy is not None and policy.platform_fallback != "always":
                left_out[provider] = f"platform_fallback is {policy.platform_fallback}"
            else:
                allowed = [
                    m
                    for m in models
                    if policy is None
                    or policy.platform_models is None
                    or any(fnmatchcase(m.key, p) for p in policy.platform_models)
                ]
                if allowed:
                    options += self.prices.options(allowed, PLATFORM_PRIORITY, now)
                else:
                    left_out[provider] = "platform_models allows none of its models"
        return options, left_out

    async def _decide(
        self, tenant_id: str, body: Mapping[str, Any], weight: float, *, explore: bool
    ) -> tuple[RouteDecision, dict[str, str], Any]:
        features = extract_features(chat_view(body))
        options, left_out = await self.options(tenant_id)
        shared = self.states.cached(SHARED_SCOPE) or await self.states.get(SHARED_SCOPE)
        scope = tenant_scope(tenant_id)
        tenant = self.states.cached(scope) or await self.states.get(scope)
        decision = self.router.decide(
            features,
            options,
            weight,
            tenant=tenant,
            shared=shared,
            rng=self.rng if explore else None,
        )
        return decision, left_out, features

    @staticmethod
    def weight(model: str, header: str | None) -> float:
        """The cost weight of ``model`` with the header's override; 400 when either is bad."""
        try:
            return cost_weight_for(model, header)
        except ValueError as exc:
            param = "model" if model not in NAMED_WEIGHTS else COST_WEIGHT_HEADER
            raise InvalidRequest(str(exc), param=param) from None

    async def prepare(self, call: Call, body: Mapping[str, Any], header: str | None) -> None:
        """Choose the model of an ``auto`` request and put it on ``call``; no-op otherwise.

        Raises ``InvalidRequest`` (400) for a bad cost weight, or when no model the tenant can
        reach can serve the request (the message says why each was left out).
        """
        model = body.get("model")
        if not is_auto(model):
            return
        weight = self.weight(str(model), header)
        decision, left_out, features = await self._decide(
            call.tenant_id, body, weight, explore=True
        )
        chosen = decision.chosen
        if chosen is None:
            raise _nothing_serves(decision, left_out)
        call.routes = (ModelRoute(chosen.provider, chosen.model),)
        call.provider, call.model = chosen.provider, chosen.model
        call.route_reason = f"{decision.reason} ({features.task}, cost weight {weight:g})"
        self.log.add(call.request_id, Routed(call.tenant_id, chosen.key, features.vector))
        prompt = dumps(chat_view(body)["messages"]).decode("utf-8", "replace")
        earlier = self.repeats.check(call.tenant_id, prompt, call.request_id, time.monotonic())
        if earlier is not None:
            self._reward(call.tenant_id, earlier, REPEAT_REWARD)
        self._flush_soon()

    def apply(self, call: Call) -> None:
        """``Gateway.route_model`` met ``auto``: ``prepare`` must have chosen already."""
        if call.route_reason is None or not call.routes:
            raise InvalidRequest(
                "model 'auto' is available on chat completions, responses and messages only",
                param="model",
            )

    async def explain(
        self, tenant_id: str, model: str, body: Mapping[str, Any], weight: str | None
    ) -> dict[str, Any]:
        """``GET|POST /byok/route?model=auto``: the scored candidates, without exploration,
        learning or any upstream call."""
        cost_weight = self.weight(model, weight)
        decision, left_out, features = await self._decide(
            tenant_id, body, cost_weight, explore=False
        )
        view = {"object": "byok.route", **decision.as_dict(), "model": model}
        view["would_use"] = decision.chosen.key if decision.chosen else None
        view["features"] = features.as_dict()
        view["providers_left_out"] = left_out
        view["exploration"] = {
            "rate": self.router.explore_rate,
            "max_bonus": self.router.max_bonus,
            "tolerance": self.router.tolerance,
        }
        view["priors"] = {"source": self.router.priors.source, "url": self.router.priors.url}
        if decision.chosen is None:
            error = _nothing_serves(decision, left_out)
            view["error"] = {**error.to_dict(), "status": error.status_code}
        return view

    # Feedback

    async def feedback(self, tenant_id: str, request_id: str, score: float) -> str:
        """Learn the tenant's ``score`` (0..1) of its routed request; the model it went to.

        Raises ``NotFound`` (404) for a request id the tenant has no routed request of
        (another tenant's included) and ``InvalidRequest`` (409) for a second score.
        """
        routed = await self.log.find(tenant_id, request_id)
        if routed is None:
            raise NotFound(f"no request routed by model 'auto' with id {request_id!r}")
        if not await self.log.mark_scored(tenant_id, request_id):
            raise InvalidRequest(
                f"request {request_id!r} was scored already",
                param="request_id",
                code="already_scored",
                status_code=409,
            )
        await self.states.learn(tenant_id, routed.model, routed.vector, score)
        return routed.model

    def finished(self, call: Call, status_code: int) -> None:
        """A routed call ended with ``status_code`` (Gateway.record): an upstream error after
        the choice teaches that the model could not serve this kind of request."""
        if call.route_reason is None or status_code < 400 or status_code in _NOT_THE_MODEL:
            return
        reward = implicit_reward(upstream_error=True)
        if reward is not None:
            self._reward(call.tenant_id, call.request_id, reward)

    def answered(self, call: Call, data: object) -> None:
        """A routed call's answer (chat, Responses or Messages JSON): a cut-off answer
        (``finish_reason: "length"``) teaches that the model was a poor fit."""
        if call.route_reason is None or not isinstance(data, dict):
            return
        reason = _finish_reason(data)
        reward = implicit_reward(finish_reason=reason)
        if reward is not None:
            self._reward(call.tenant_id, call.request_id, reward)

    def _reward(self, tenant_id: str, request_id: str, reward: float) -> None:
        routed = self.log.recent(request_id)
        if routed is not None and routed.tenant_id == tenant_id:
            self._spawn(self.states.learn(tenant_id, routed.model, routed.vector, reward))

    # Background work

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # No request data in the line: the exception's type says what failed.
            logger.error("auto router bookkeeping failed: %s", type(task.exception()).__name__)

    def _flush_soon(self) -> None:
        if not self._flushing and self.log.pending:
            self._flushing = True
            self._spawn(self._flush())

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0.05)  # gather the rows of a burst into one write
            await self.log.flush()
        finally:
            self._flushing = False

    async def close(self) -> None:
        """Finish learning in flight and write the routed requests still pending."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        await self.log.flush()


def _finish_reason(data: Mapping[str, Any]) -> str | None:
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        reason = choices[0].get("finish_reason")
        return reason if isinstance(reason, str) else None
    if data.get("stop_reason") == "max_tokens":  # Anthropic Messages
        return "length"
    details = data.get("incomplete_details")  # Responses
    if isinstance(details, dict) and details.get("reason") == "max_output_tokens":
        return "length"
    return None


def _nothing_serves(decision: RouteDecision, left_out: Mapping[str, str]) -> InvalidRequest:
    if not decision.unfit:
        reasons = "; ".join(f"{p}: {why}" for p, why in left_out.items())
        return InvalidRequest(
            "model 'auto' found no model the tenant can use now: add a provider key "
            f"(POST /byok/providers) or allow the platform key ({reasons})",
            param="model",
            code="no_model_available",
        )
    unfit = "; ".join(f"{option.key}: {why}" for option, why in decision.unfit[:8])
    return InvalidRequest(
        f"model 'auto' found no model that can serve this request ({unfit})",
        param="model",
        code="no_model_fits",
    )

"""The decision: which candidate serves a ``model: "auto"`` request, and learning from feedback.

    utility = expected quality for this kind of request - cost_weight * normalised expected cost

Expected quality is the model's prior (``priors.py``) plus what the shared and the tenant's
arms learned (``bandit.py``). The choice maximises utility plus a bounded exploration bonus;
among candidates within ``tolerance`` of the best, the tenant's key priority decides (then
utility, then price, then name: deterministic). With an ``rng``, a decision explores at random
with probability ``explore_rate``, only among candidates within ``max_bonus`` of the best; the
same seed gives the same decisions. Everything here is synchronous and free of I/O; the engine
keeps the states (one shared, one per tenant) in its store.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from byok_middleware.autoroute.bandit import LearnerState, sparse
from byok_middleware.autoroute.features import RequestFeatures
from byok_middleware.autoroute.options import ModelOption, normalised_costs, unfit
from byok_middleware.autoroute.priors import Priors, load_priors

__all__ = ["NAMED_WEIGHTS", "AutoRouter", "RouteDecision", "ScoredOption", "cost_weight_for"]

NAMED_WEIGHTS = {"auto": 0.5, "auto:balanced": 0.5, "auto:cheap": 0.8, "auto:best": 0.1}


def cost_weight_for(model: str, header: str | None = None) -> float:
    """The cost weight of a request: the ``x-byok-route-cost-weight`` header if given, else the
    named form's. Raises ``ValueError`` (a 400 for the caller) for a bad header or model name."""
    if model not in NAMED_WEIGHTS:
        raise ValueError(f"model must be one of {', '.join(NAMED_WEIGHTS)}")
    if header is None:
        return NAMED_WEIGHTS[model]
    try:
        weight = float(header)
    except ValueError:
        raise ValueError("x-byok-route-cost-weight must be a number from 0 to 1") from None
    if not 0.0 <= weight <= 1.0:  # also refuses nan
        raise ValueError("x-byok-route-cost-weight must be a number from 0 to 1")
    return weight


@dataclass(frozen=True, slots=True)
class ScoredOption:
    """One candidate's score and its components (for ``GET /byok/route``)."""

    option: ModelOption
    prior: float
    learned: float
    quality: float  # prior + learned
    expected_cost_usd: float | None
    cost: float  # normalised, 0..1
    utility: float  # quality - weight * cost
    bonus: float  # exploration, already bounded
    prior_source: str

    def as_dict(self) -> dict[str, Any]:
        option = self.option
        return {
            "model": option.key,
            "priority": option.priority,
            "quality": round(self.quality, 4),
            "prior": round(self.prior, 4),
            "prior_source": self.prior_source,
            "learned": round(self.learned, 4),
            "expected_cost_usd": self.expected_cost_usd,
            "cost": round(self.cost, 4),
            "utility": round(self.utility, 4),
            "exploration_bonus": round(self.bonus, 4),
        }


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The outcome: the chosen option (``None``: nothing can serve), scores and the reason."""

    chosen: ModelOption | None
    scored: tuple[ScoredOption, ...]  # best utility first
    unfit: tuple[tuple[ModelOption, str], ...]
    cost_weight: float
    reason: str  # short, for the response metadata's route_reason

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.chosen.key if self.chosen else None,
            "cost_weight": self.cost_weight,
            "route_reason": self.reason,
            "candidates": [scored.as_dict() for scored in self.scored],
            "unfit": [{"model": option.key, "reason": why} for option, why in self.unfit],
        }


class AutoRouter:
    """Scores candidates and learns from rewards; one per process, states passed per call."""

    def __init__(
        self,
        priors: Priors | None = None,
        *,
        tolerance: float = 0.02,
        alpha: float = 0.1,
        max_bonus: float = 0.05,
        explore_rate: float = 0.05,
        shared_weight: float = 0.5,
    ) -> None:
        self.priors = priors or load_priors()
        self.tolerance = tolerance
        self.alpha = alpha
        self.max_bonus = max_bonus
        self.explore_rate = explore_rate
        self.shared_weight = shared_weight  # how much one tenant's reward moves the shared arms

    def decide(
        self,
        features: RequestFeatures,
        options: Sequence[ModelOption],
        cost_weight: float,
        *,
        tenant: LearnerState | None = None,
        shared: LearnerState | None = None,
        rng: random.Random | None = None,
    ) -> RouteDecision:
        """Choose among ``options`` for a request with ``features`` at ``cost_weight``."""
        fit: list[ModelOption] = []
        rejected: list[tuple[ModelOption, str]] = []
        for option in options:
            why = unfit(option, features)
            if why is None:
                fit.append(option)
            else:
                rejected.append((option, why))
        if not fit:
            reason = "no candidate can serve this request"
            return RouteDecision(None, (), tuple(rejected), cost_weight, reason)
        x = sparse(features.vector)
        task = features.task
        costs, normalised = normalised_costs(fit, features)
        scored = []
        for option, cost, norm in zip(fit, costs, normalised, strict=True):
            prior = self.priors.prior(option.provider, option.model)
            learned, bonus = self._learned(option.key, x, tenant, shared)
            quality = prior.for_task(task) + learned
            utility = quality - cost_weight * norm
            scored.append(
                ScoredOption(
                    option,
                    prior.for_task(task),
                    learned,
                    quality,
                    cost,
                    norm,
                    utility,
                    bonus,
                    prior.source,
                )
            )
        scored.sort(key=lambda s: (-s.utility, s.option.key))
        chosen, reason = self._choose(scored, rng)
        return RouteDecision(chosen.option, tuple(scored), tuple(rejected), cost_weight, reason)

    def _learned(
        self,
        key: str,
        x: Sequence[tuple[int, float]],
        tenant: LearnerState | None,
        shared: LearnerState | None,
    ) -> tuple[float, float]:
        learned = 0.0
        shared_arm = shared.arms.get(key) if shared is not None else None
        if shared_arm is not None:
            learned += shared_arm.mean(x)
        tenant_arm = tenant.arms.get(key) if tenant is not None else None
        if tenant_arm is not None:
            learned += tenant_arm.mean(x)
            width = tenant_arm.width(x)
        elif tenant is not None:
            width = (sum(v * v for _, v in x) / tenant.lam) ** 0.5  # an arm never observed
        else:
            return learned, 0.0
        return learned, min(self.max_bonus, self.alpha * width)

    def _choose(
        self, scored: list[ScoredOption], rng: random.Random | None
    ) -> tuple[ScoredOption, str]:
        best = scored[0].utility
        if rng is not None and len(scored) > 1 and rng.random() < self.explore_rate:
            near = [s for s in scored if s.utility >= best - self.max_bonus]
            if len(near) > 1:
                return rng.choice(near), "exploring among near-best candidates"
        # Optimism: the exploration bonus, bounded by max_bonus, lifts models seldom observed.
        top = max(s.utility + s.bonus for s in scored)
        close = [s for s in scored if s.utility + s.bonus >= top - self.tolerance]
        close.sort(
            key=lambda s: (
                s.option.priority,
                -(s.utility + s.bonus),
                s.expected_cost_usd if s.expected_cost_usd is not None else float("inf"),
                s.option.key,
            )
        )
        chosen = close[0]
        if len(close) > 1:
            reason = f"key priority among {len(close)} candidates within {self.tolerance} utility"
        elif chosen.bonus and chosen is not scored[0]:
            reason = "exploring a model seldom observed for this kind of request"
        else:
            reason = "highest expected utility"
        return chosen, reason

    def learn(
        self,
        key: str,
        features: RequestFeatures,
        reward: float,
        *,
        tenant: LearnerState,
        shared: LearnerState | None = None,
    ) -> None:
        """Learn that ``key`` (``provider/model``) earned ``reward`` (0..1) on this request."""
        if not 0.0 <= reward <= 1.0:
            raise ValueError("reward must be between 0 and 1")
        provider, _, model = key.partition("/")
        x = features.vector
        prior = self.priors.prior(provider, model).for_task(features.task)
        residual = reward - prior
        shared_arm = shared.arms.get(key) if shared is not None else None
        shared_part = shared_arm.mean(sparse(x)) if shared_arm is not None else 0.0
        tenant.observe(key, x, residual - shared_part)
        if shared is not None:
            shared.observe(key, x, residual, self.shared_weight)

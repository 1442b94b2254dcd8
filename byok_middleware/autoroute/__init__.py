"""``model: "auto"``: choose a model across the tenant's providers, trading quality for cost,
and learn from feedback (a contextual bandit after BaRP, arXiv:2510.07429).

I/O-free and synchronous: no ASGI, no pydantic, nothing from ``proxy/``, ``keys/``, the routes
or the middleware. The engine calls it in this order:

1. ``features = extract_features(body)``; ``weight = cost_weight_for(model, header)``.
2. ``decision = router.decide(features, options, weight, tenant=state, shared=shared)`` with one
   ``ModelOption`` per model the tenant can reach now; ``decision.chosen`` is ``None`` when
   nothing can serve the request (answer 400 with ``decision.reason`` and ``decision.unfit``).
3. Keep ``(decision.chosen.key, features.vector)`` with the request id for later feedback.
4. On a reward (``POST /byok/feedback``, ``implicit_reward(...)``, ``RepeatDetector``):
   ``router.learn(key, RequestFeatures.from_vector(vector), reward, tenant=..., shared=...)``,
   then store ``LearnerState.to_json()``.
"""

from byok_middleware.autoroute.bandit import LearnerState
from byok_middleware.autoroute.features import FEATURE_NAMES, RequestFeatures, extract_features
from byok_middleware.autoroute.feedback import RepeatDetector, implicit_reward
from byok_middleware.autoroute.options import ModelOption, normalised_costs, unfit
from byok_middleware.autoroute.priors import Prior, Priors, load_priors
from byok_middleware.autoroute.router import (
    NAMED_WEIGHTS,
    AutoRouter,
    RouteDecision,
    ScoredOption,
    cost_weight_for,
)

__all__ = [
    "FEATURE_NAMES",
    "NAMED_WEIGHTS",
    "AutoRouter",
    "LearnerState",
    "ModelOption",
    "Prior",
    "Priors",
    "RepeatDetector",
    "RequestFeatures",
    "RouteDecision",
    "ScoredOption",
    "cost_weight_for",
    "extract_features",
    "implicit_reward",
    "load_priors",
    "normalised_costs",
    "unfit",
]

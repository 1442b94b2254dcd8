"""``GET /byok/route?model=...``: which key would serve the model now, and why; dry run.

``model=auto`` (``auto:cheap``, ``auto:best``; ``cost_weight=0..1`` overrides) shows instead the
auto router's scored candidates and their components, for an empty request or, with ``POST``,
for the sample request body sent (chat, Responses or Messages shape): no upstream call, no
exploration, nothing learned.
"""

from __future__ import annotations

from typing import Any

from byok_middleware.errors import InvalidRequest
from byok_middleware.gateway import Call, Gateway
from byok_middleware.gateway.autorouting import is_auto
from byok_middleware.gateway.calls import Candidate
from byok_middleware.gateway.limits import KeyUsage
from byok_middleware.gateway.planning import KeyDecision, RoutePlan

__all__ = ["dry_run", "route_view"]


def _limits(decision: KeyDecision) -> dict[str, Any]:
    record, usage = decision.record, decision.usage or KeyUsage()
    budget = record.monthly_budget_usd
    return {
        "rpm": {"limit": record.rpm, "used": usage.requests} if record.rpm is not None else None,
        "tpm": {"limit": record.tpm, "used": usage.tokens} if record.tpm is not None else None,
        "monthly_budget_usd": (
            {"limit": float(budget), "spent": float(usage.spend or 0)}
            if budget is not None
            else None
        ),
    }


def _candidate(order: int, candidate: Candidate) -> dict[str, Any]:
    record = candidate.record
    return {
        "order": order,
        "provider": candidate.provider,
        "model": candidate.model,
        "key_id": candidate.key_id,
        "cost_attribution": candidate.attribution,
        "priority": record.priority if record is not None else None,
    }


def route_view(plan: RoutePlan, call: Call, *, allow_platform_fallback: bool) -> dict[str, Any]:
    """The dry run's JSON: the chosen candidate, the order after it, each key's verdict."""
    order = [_candidate(i, c) for i, c in enumerate(plan.candidates, start=1)]
    return {
        "object": "byok.route",
        "providers": [
            {"provider": r.provider, "model": r.model, "reference_price_usd": _price(r.price)}
            for r in call.routes
        ],
        "would_use": order[0] if order else None,
        "candidates": order,
        "keys": [
            {
                "id": d.record.id,
                "provider": d.record.provider,
                "label": d.record.label,
                "priority": d.record.priority,
                "always_use": d.record.always_use,
                "status": d.record.status.value,
                "cooldown_until": (
                    d.record.cooldown_until.isoformat() if d.record.cooldown_until else None
                ),
                "usable": d.skip is None,
                "skipped_reason": d.reason,
                "limits": _limits(d),
            }
            for d in plan.keys
        ],
        "platform_fallback": {
            "allowed_by_operator": allow_platform_fallback,
            "providers": [
                {"provider": p.provider, "allowed": p.allowed, "reason": p.reason}
                for p in plan.platform
            ],
        },
    }


def _price(value: Any) -> float | None:
    return float(value) if value is not None else None


async def dry_run(
    gateway: Gateway, call: Call, params: dict[str, str], body: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Plan ``params["model"]`` for the caller without calling upstream or moving the rotation.

    ``body`` (``POST``) is a sample request for ``model=auto``; its ``model`` is used when the
    query names none."""
    model = params.get("model") or (body or {}).get("model")
    if not model or not isinstance(model, str):
        raise InvalidRequest("'model' is required, e.g. ?model=openai/gpt-4o", param="model")
    if is_auto(model):
        sample = {**(body or {}), "model": model}
        weight = params.get("cost_weight")
        return await gateway.auto.explain(call.tenant_id, model, sample, weight)
    gateway.route_model(call, model)
    plan = await gateway.plan(call.tenant_id, call.routes, advance=False)
    view = route_view(plan, call, allow_platform_fallback=gateway.config.allow_platform_fallback)
    view["model"] = model
    if not plan.candidates:
        error = gateway.no_key_error(plan)
        view["error"] = {**error.to_dict(), "status": error.status_code}
    return view

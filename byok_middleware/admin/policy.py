"""The tenant policy at the HTTP edge: its JSON schema (pydantic), its view, its update rules.

A ``PUT`` (and ``byok-middleware tenant policy``) changes the fields it names and keeps the
others; ``null`` clears a limit. Values are checked here (422 naming the field) and again by
the store (``storage.base.check_policy``).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from byok_middleware.errors import UnprocessableEntity
from byok_middleware.storage.base import TenantPolicy

__all__ = ["PolicyUpdate", "apply_update", "parse_update", "policy_view"]

Budget = Decimal | None


def _money(value: Any) -> Any:
    # JSON has no decimals: numbers and numeric strings are taken exactly (via their text).
    if isinstance(value, bool):
        raise ValueError("must be a number")
    if isinstance(value, int | float):
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return value


class PolicyUpdate(BaseModel):
    """The fields of a tenant policy an operator may set (any subset)."""

    model_config = ConfigDict(extra="forbid", strict=False)

    budget_usd: Budget = Field(default=None, ge=0, max_digits=14, decimal_places=6)
    platform_budget_usd: Budget = Field(default=None, ge=0, max_digits=14, decimal_places=6)
    budget_period: Literal["day", "month"] = "month"
    platform_fallback: Literal["always", "on_failure", "never"] = "always"
    platform_models: list[str] | None = Field(default=None, max_length=100)
    unpriced: Literal["block", "allow"] | None = None
    clamp_max_tokens: bool = False
    cache: Literal["off", "exact", "semantic"] | None = None

    _budgets = field_validator("budget_usd", "platform_budget_usd", mode="before")(_money)

    @field_validator("platform_models")
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for pattern in value:
            if "/" not in pattern or not 2 < len(pattern) <= 256:
                raise ValueError("each pattern is provider/model, e.g. openai/gpt-4o-mini, groq/*")
        return value


def parse_update(body: dict[str, Any]) -> tuple[PolicyUpdate, set[str]]:
    """The update and the fields it names; 422 naming the first bad field."""
    try:
        update = PolicyUpdate.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        param = ".".join(str(p) for p in first.get("loc", ())) or None
        message = str(first.get("msg", "invalid value"))
        raise UnprocessableEntity(
            f"{param}: {message}" if param else message, param=param, code="invalid_value"
        ) from None
    return update, set(update.model_fields_set)


def apply_update(
    current: TenantPolicy | None,
    tenant_id: str,
    update: PolicyUpdate,
    named: set[str],
    when: datetime,
) -> TenantPolicy:
    """``current`` (or the defaults) with the named fields of ``update`` set."""
    policy = current if current is not None else TenantPolicy(tenant_id=tenant_id)
    changes: dict[str, Any] = {name: getattr(update, name) for name in named}
    if "platform_models" in changes and changes["platform_models"] is not None:
        changes["platform_models"] = tuple(changes["platform_models"])
    return dataclasses.replace(policy, **changes, updated_at=when)


def _number(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def policy_view(policy: TenantPolicy | None, tenant_id: str) -> dict[str, Any]:
    """The JSON of a tenant's policy (the defaults when it has none)."""
    found = policy if policy is not None else TenantPolicy(tenant_id=tenant_id)
    return {
        "tenant_id": tenant_id,
        "budget_usd": _number(found.budget_usd),
        "platform_budget_usd": _number(found.platform_budget_usd),
        "budget_period": found.budget_period,
        "platform_fallback": found.platform_fallback,
        "platform_models": list(found.platform_models)
        if found.platform_models is not None
        else None,
        "unpriced": found.unpriced,
        "clamp_max_tokens": found.clamp_max_tokens,
        "cache": found.cache,
        "updated_at": found.updated_at.isoformat() if found.updated_at else None,
    }

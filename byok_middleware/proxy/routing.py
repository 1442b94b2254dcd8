"""Which keys may pay for a call, in which order: a pure function of keys, policy and time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from byok_middleware.crypto import SecretStr
from byok_middleware.keys.service import ResolvedKey
from byok_middleware.proxy.upstream import Candidate
from byok_middleware.storage.base import KeyStatus

__all__ = ["RoutePlan", "plan_route"]


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Candidates in the order to try, and why the others were left out (key id -> reason)."""

    provider: str
    candidates: tuple[Candidate, ...]
    skipped: dict[str, str] = field(default_factory=dict)
    platform_allowed: bool = True
    platform_reason: str | None = None


def _skip_reason(key: ResolvedKey, now: datetime) -> str | None:
    record = key.record
    if not record.is_active or record.status is KeyStatus.INACTIVE:
        return "inactive"
    if record.status is KeyStatus.INVALID:
        return "invalid: the provider rejected this key; rotate it"
    if record.status is KeyStatus.COOLING_DOWN and (
        record.cooldown_until is None or record.cooldown_until > now
    ):
        return "cooling_down"
    return None


def plan_route(
    provider: str,
    keys: Sequence[ResolvedKey],
    *,
    platform_key: SecretStr | None,
    allow_platform_fallback: bool,
    platform_attribution: str,
    now: datetime,
) -> RoutePlan:
    """The tenant's usable keys by priority, then the platform key when policy allows it."""
    usable: list[ResolvedKey] = []
    skipped: dict[str, str] = {}
    for key in keys:
        reason = _skip_reason(key, now)
        if reason is None:
            usable.append(key)
        else:
            skipped[key.record.id] = reason
    usable.sort(key=lambda k: (k.record.priority, k.record.created_at))
    candidates = [Candidate(provider, k.secret, "byok", k.record) for k in usable]

    platform_reason: str | None = None
    if not allow_platform_fallback:
        platform_reason = "platform fallback is disabled by the operator"
    elif any(k.record.always_use and k.record.is_active for k in keys):
        platform_reason = f"a {provider} key of this tenant is marked always_use"
    elif platform_key is None:
        platform_reason = f"no platform key is configured for {provider}"
    else:
        candidates.append(Candidate(provider, platform_key, platform_attribution))
    return RoutePlan(
        provider=provider,
        candidates=tuple(candidates),
        skipped=skipped,
        platform_allowed=platform_reason is None,
        platform_reason=platform_reason,
    )

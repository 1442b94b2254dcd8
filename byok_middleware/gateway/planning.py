"""Which keys may pay for a call, in which order: a pure function of the request's routes, the
tenant's keys (with their health), their usage against limits, the policy and the time.

Order (DESIGN.md §5): the tenant's usable keys first, sorted by (price of the provider's model,
priority) so that among providers serving the same model at the same price priority decides, and
otherwise the cheaper provider wins; keys equal on both are taken in turn (``turn`` rotates them,
a round-robin that is deterministic for a given ``turn``). Then the platform key of each provider,
cheapest first, unless fallback is off globally or a key of that provider is ``always_use``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from itertools import groupby

from byok_middleware.crypto import SecretStr
from byok_middleware.errors import BYOKError, NoProviderKey, RateLimited
from byok_middleware.gateway.calls import Candidate
from byok_middleware.gateway.keys import ResolvedKey
from byok_middleware.gateway.limits import KeyUsage, has_limits, limit_reason
from byok_middleware.gateway.models import ModelRoute
from byok_middleware.storage.base import KeyStatus, ProviderKeyRecord

__all__ = [
    "KeyDecision",
    "PlatformDecision",
    "ProviderOption",
    "RoutePlan",
    "RoutePolicy",
    "Skip",
    "no_candidate_error",
    "plan_candidates",
]


class Skip(StrEnum):
    """Why a tenant key is left out of the candidates."""

    INACTIVE = "inactive"
    INVALID = "invalid"
    COOLING_DOWN = "cooling_down"
    LIMIT = "limit"
    UNOPENABLE = "unopenable"


@dataclass(frozen=True, slots=True)
class ProviderOption:
    """One provider that serves the request: the model it is sent, the tenant's keys, the
    platform key (None when the operator configured none)."""

    route: ModelRoute
    keys: Sequence[ResolvedKey]
    platform_key: SecretStr | None = None


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    allow_platform_fallback: bool = True
    platform_attribution: str = "xantly"


@dataclass(frozen=True, slots=True)
class KeyDecision:
    """A tenant key and what the planner made of it (``skip`` None: it is a candidate)."""

    record: ProviderKeyRecord
    skip: Skip | None
    reason: str | None
    usage: KeyUsage | None = None


@dataclass(frozen=True, slots=True)
class PlatformDecision:
    provider: str
    allowed: bool
    reason: str | None


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """Candidates in the order to try, and why the others were left out."""

    provider: str
    candidates: tuple[Candidate, ...]
    skipped: dict[str, str] = field(default_factory=dict)  # key id -> reason
    keys: tuple[KeyDecision, ...] = ()
    platform: tuple[PlatformDecision, ...] = ()
    retry_at: datetime | None = None  # the earliest end of a cooldown among skipped keys
    # The same keys and policy give this very plan at any time and turn: no key has a limit or
    # a cooldown, and no two keys share a rank (so the round-robin has nothing to rotate).
    steady: bool = False

    @property
    def limited(self) -> dict[str, str]:
        """Keys left out only for now: cooling down or at a limit (key id -> reason)."""
        return {
            d.record.id: d.reason or ""
            for d in self.keys
            if d.skip in (Skip.COOLING_DOWN, Skip.LIMIT)
        }


def _decide(key: ResolvedKey, usage: KeyUsage | None, now: datetime) -> KeyDecision:
    record = key.record
    if key.unopenable is not None:
        # Fail closed: never a candidate, and (with always_use) never replaced by the platform.
        return KeyDecision(record, Skip.UNOPENABLE, f"cannot be opened: {key.unopenable}", usage)
    if not record.is_active or record.status is KeyStatus.INACTIVE:
        return KeyDecision(record, Skip.INACTIVE, "inactive", usage)
    if record.status is KeyStatus.INVALID:
        why = "invalid: the provider rejected this key; rotate it or verify it again"
        return KeyDecision(record, Skip.INVALID, why, usage)
    if record.status is KeyStatus.COOLING_DOWN and (
        record.cooldown_until is None or record.cooldown_until > now
    ):
        until = record.cooldown_until.isoformat() if record.cooldown_until else "further notice"
        return KeyDecision(record, Skip.COOLING_DOWN, f"cooling_down until {until}", usage)
    reason = limit_reason(record, usage)
    if reason is not None:
        return KeyDecision(record, Skip.LIMIT, reason, usage)
    return KeyDecision(record, None, None, usage)


def _price_ranks(options: Sequence[ProviderOption]) -> list[int]:
    """Rank of each option's price: equal prices share a rank, unknown prices come last."""
    known = sorted({o.route.price for o in options if o.route.price is not None})
    return [
        known.index(o.route.price) if o.route.price is not None else len(known) for o in options
    ]


def _platform_decision(
    option: ProviderOption, policy: RoutePolicy
) -> tuple[PlatformDecision, Candidate | None]:
    provider = option.route.provider
    reason: str | None = None
    if not policy.allow_platform_fallback:
        reason = "platform fallback is disabled by the operator"
    elif any(k.record.always_use and k.record.is_active for k in option.keys):
        reason = f"a {provider} key of this tenant is marked always_use"
    elif option.platform_key is None:
        reason = f"no platform key is configured for {provider}"
    if reason is not None or option.platform_key is None:
        return PlatformDecision(provider, False, reason), None
    candidate = Candidate(
        provider, option.platform_key, policy.platform_attribution, None, option.route.model
    )
    return PlatformDecision(provider, True, None), candidate


def plan_candidates(
    options: Sequence[ProviderOption],
    *,
    policy: RoutePolicy,
    usage: Mapping[str, KeyUsage],
    now: datetime,
    turn: int = 0,
) -> RoutePlan:
    """Plan a request served by ``options`` (one per provider, cheapest first)."""
    if not options:
        raise ValueError("a request needs at least one provider option")
    ranks = _price_ranks(options)
    decisions: list[KeyDecision] = []
    usable: list[tuple[tuple[int, int], tuple[int, datetime, str], Candidate]] = []
    for index, option in enumerate(options):
        for key in option.keys:
            decision = _decide(key, usage.get(key.record.id), now)
            decisions.append(decision)
            if decision.skip is None:
                record = key.record
                candidate = Candidate(
                    option.route.provider, key.secret, "byok", record, option.route.model
                )
                usable.append(
                    (
                        (ranks[index], record.priority),
                        (index, record.created_at, record.id),
                        candidate,
                    )
                )
    usable.sort(key=lambda item: (item[0], item[1]))
    candidates: list[Candidate] = []
    rotated = False
    for _, group in groupby(usable, key=lambda item: item[0]):
        equals = [item[2] for item in group]
        rotated = rotated or len(equals) > 1
        shift = turn % len(equals)  # spread the load over keys of equal price and priority
        candidates.extend(equals[shift:] + equals[:shift])

    platform: list[PlatformDecision] = []
    for index in sorted(range(len(options)), key=lambda i: ranks[i]):
        allowed, fallback = _platform_decision(options[index], policy)
        platform.append(allowed)
        if fallback is not None:
            candidates.append(fallback)

    cooldowns = [
        d.record.cooldown_until
        for d in decisions
        if d.skip is Skip.COOLING_DOWN and d.record.cooldown_until is not None
    ]
    return RoutePlan(
        provider=options[0].route.provider,
        candidates=tuple(candidates),
        skipped={d.record.id: d.reason or "" for d in decisions if d.skip is not None},
        keys=tuple(decisions),
        platform=tuple(platform),
        retry_at=min(cooldowns) if cooldowns else None,
        steady=not rotated
        and not any(
            has_limits(d.record) or d.record.status is KeyStatus.COOLING_DOWN for d in decisions
        ),
    )


def _seconds_until(when: datetime, now: datetime) -> int:
    return max(1, int((when - now).total_seconds() + 0.999))


def no_candidate_error(plan: RoutePlan, *, prefix: str, now: datetime) -> BYOKError:
    """The client's error when the plan has no candidate: a 429 naming the limits or cooldowns
    when the tenant's keys are only held back for now, else a 400 saying what is missing."""
    providers = " or ".join(dict.fromkeys(p.provider for p in plan.platform)) or plan.provider
    closed = "; ".join(p.reason for p in plan.platform if p.reason)
    unopenable = [d for d in plan.keys if d.skip is Skip.UNOPENABLE]
    if unopenable:
        # The operator's problem (a replica without a master key of the keyring, a damaged
        # row), not the caller's: a 503 naming the key and the reason (the master-key id).
        reasons = "; ".join(f"{d.record.id} {d.reason}" for d in unopenable)
        return BYOKError(
            f"this tenant's {providers} key cannot be used on this server ({reasons}) and the "
            f"platform key may not be used ({closed or 'no fallback'}); the operator must add "
            "the missing master key to BYOK_MASTER_KEY",
            code="key_unopenable",
            status_code=503,
            param="model",
        )
    limited = plan.limited
    if limited:
        reasons = "; ".join(f"{key_id}: {why}" for key_id, why in limited.items())
        headers = (
            {"retry-after": str(_seconds_until(plan.retry_at, now))} if plan.retry_at else None
        )
        return RateLimited(
            f"every usable {providers} key of this tenant is held back ({reasons}) and the "
            f"platform key may not be used ({closed})",
            param="model",
            headers=headers,
        )
    why = "; ".join(filter(None, [closed, *(f"{k}: {r}" for k, r in plan.skipped.items())]))
    return NoProviderKey(
        f"No {providers} key is available for this tenant{f' ({why})' if why else ''}. "
        f"Register one with POST {prefix}/byok/providers "
        f'{{"provider": "{plan.provider}", "api_key": "..."}}',
        param="model",
    )

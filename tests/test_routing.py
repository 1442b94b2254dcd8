"""The pure planner, health rules and model resolution: table-driven, no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from byok_middleware import BYOKConfig, generate_master_key
from byok_middleware.crypto import SecretStr
from byok_middleware.errors import InvalidRequest, NoProviderKey, RateLimited
from byok_middleware.gateway import Gateway
from byok_middleware.gateway import budgets as budgets_module
from byok_middleware.gateway import health as health_module
from byok_middleware.gateway.health import (
    Outcome,
    classify,
    cooldown_seconds,
    describe_failure,
    retry_after_seconds,
)
from byok_middleware.gateway.keys import KeyPatch, NewKey, ResolvedKey
from byok_middleware.gateway.limits import KeyUsage, limit_reason, month_start
from byok_middleware.gateway.models import ModelCatalogue, ModelRoute, resolve_routes
from byok_middleware.gateway.planning import (
    ProviderOption,
    RoutePolicy,
    Skip,
    no_candidate_error,
    plan_candidates,
)
from byok_middleware.gateway.upstream import RETRYABLE_STATUSES
from byok_middleware.pricing import GenaiPrices
from byok_middleware.storage.base import KeyStatus, ProviderKeyRecord
from byok_middleware.storage.memory import MemoryStore

NOW = datetime(2026, 5, 17, 12, 0, tzinfo=UTC)
PLATFORM = SecretStr("sk-platform")


def key(key_id: str, provider: str = "openai", **fields: Any) -> ResolvedKey:
    record = ProviderKeyRecord(
        id=key_id,
        tenant_id="t1",
        provider=provider,
        ciphertext=b"",
        is_active=True,
        priority=1,
        label=None,
        always_use=False,
        status=KeyStatus.ACTIVE,
        created_at=NOW - timedelta(days=1),
        updated_at=NOW,
    )
    return ResolvedKey(replace(record, **fields), SecretStr("sk-" + key_id))


def option(
    keys: list[ResolvedKey],
    provider: str = "openai",
    price: str | None = None,
    platform: bool = True,
) -> ProviderOption:
    route = ModelRoute(provider, "m", Decimal(price) if price else None)
    return ProviderOption(route, keys, PLATFORM if platform else None)


def order(options: list[ProviderOption], **kwargs: Any) -> list[str]:
    plan = plan_candidates(
        options,
        policy=kwargs.pop("policy", RoutePolicy()),
        usage=kwargs.pop("usage", {}),
        now=NOW,
        **kwargs,
    )
    return [f"{c.provider}:{c.key_id or 'platform'}" for c in plan.candidates]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ([], ["openai:platform"]),
        ([key("a", priority=2), key("b", priority=1)], ["openai:b", "openai:a", "openai:platform"]),
        ([key("a", is_active=False, status=KeyStatus.INACTIVE)], ["openai:platform"]),
        ([key("a", status=KeyStatus.INVALID), key("b")], ["openai:b", "openai:platform"]),
        (
            [key("a", status=KeyStatus.COOLING_DOWN, cooldown_until=NOW + timedelta(seconds=5))],
            ["openai:platform"],
        ),
        (  # a cooldown whose time is up is over, whatever the stored status says
            [key("a", status=KeyStatus.COOLING_DOWN, cooldown_until=NOW)],
            ["openai:a", "openai:platform"],
        ),
        ([key("a", always_use=True)], ["openai:a"]),
        ([key("a", always_use=True, status=KeyStatus.INVALID)], []),
        ([key("a", always_use=True, is_active=False)], ["openai:platform"]),
    ],
)
def test_single_provider_order(keys: list[ResolvedKey], expected: list[str]) -> None:
    """Usable keys by priority, then the platform key unless a key is always_use."""
    assert order([option(keys)]) == expected


def test_fallback_off_globally_leaves_out_the_platform_key() -> None:
    """allow_platform_fallback=False: only tenant keys, and the reason is recorded."""
    plan = plan_candidates(
        [option([key("a")])], policy=RoutePolicy(allow_platform_fallback=False), usage={}, now=NOW
    )
    assert [c.key_id for c in plan.candidates] == ["a"]
    assert plan.platform[0].reason == "platform fallback is disabled by the operator"


def test_no_platform_key_configured() -> None:
    """A provider without a platform key has only the tenant's keys."""
    assert order([option([key("a")], platform=False)]) == ["openai:a"]


@pytest.mark.parametrize(("turn", "first"), [(0, "a"), (1, "b"), (2, "c"), (3, "a")])
def test_equal_priority_keys_take_turns(turn: int, first: str) -> None:
    """Keys of equal priority rotate with the turn; lower priorities stay behind them."""
    keys = [key("a"), key("b"), key("c"), key("z", priority=2)]
    result = order([option(keys, platform=False)], turn=turn)
    assert result[0] == f"openai:{first}"
    assert sorted(result[:3]) == ["openai:a", "openai:b", "openai:c"]
    assert result[3] == "openai:z"


@pytest.mark.parametrize(
    ("usage", "fields", "reason"),
    [
        (KeyUsage(requests=2), {"rpm": 2}, "rpm limit reached"),
        (KeyUsage(requests=1), {"rpm": 2}, None),
        (KeyUsage(tokens=150), {"tpm": 100}, "tpm limit reached"),
        (KeyUsage(spend=Decimal("5")), {"monthly_budget_usd": Decimal("5")}, "monthly budget"),
        (KeyUsage(spend=Decimal("4.99")), {"monthly_budget_usd": Decimal("5")}, None),
    ],
)
def test_limits_skip_a_key(usage: KeyUsage, fields: dict[str, Any], reason: str | None) -> None:
    """A key at its rpm, tpm or budget is skipped with a reason naming the limit."""
    resolved = key("a", **fields)
    assert (limit_reason(resolved.record, usage) or "").startswith(reason or "")
    plan = plan_candidates(
        [option([resolved], platform=False)], policy=RoutePolicy(), usage={"a": usage}, now=NOW
    )
    if reason is None:
        assert [c.key_id for c in plan.candidates] == ["a"]
    else:
        assert plan.candidates == ()
        assert plan.keys[0].skip is Skip.LIMIT
        error = no_candidate_error(plan, prefix="/v1", now=NOW)
        assert isinstance(error, RateLimited)
        assert reason in error.message


def test_cooling_keys_only_give_a_429_with_retry_after() -> None:
    """Nothing usable but a cooling key: 429 whose retry-after is the cooldown's end."""
    cooling = key("a", status=KeyStatus.COOLING_DOWN, cooldown_until=NOW + timedelta(seconds=42))
    plan = plan_candidates(
        [option([cooling])], policy=RoutePolicy(allow_platform_fallback=False), usage={}, now=NOW
    )
    error = no_candidate_error(plan, prefix="/v1", now=NOW)
    assert isinstance(error, RateLimited)
    assert error.headers["retry-after"] == "42"


def test_invalid_always_use_key_fails_closed_with_a_400() -> None:
    """always_use on an invalid key: no candidate, and the error says why the platform is out."""
    plan = plan_candidates(
        [option([key("a", always_use=True, status=KeyStatus.INVALID)])],
        policy=RoutePolicy(),
        usage={},
        now=NOW,
    )
    error = no_candidate_error(plan, prefix="/v1", now=NOW)
    assert isinstance(error, NoProviderKey)
    assert "always_use" in error.message
    assert "invalid" in error.message


@pytest.mark.parametrize(
    ("prices", "priorities", "expected"),
    [
        # Same price: priority decides across providers, then platform keys.
        (("1", "1"), (2, 1), ["groq:g", "openai:o", "openai:platform", "groq:platform"]),
        # Different prices: the cheaper provider first, whatever the priority.
        (("2", "1"), (1, 5), ["groq:g", "openai:o", "groq:platform", "openai:platform"]),
        # Unknown price comes last.
        ((None, "1"), (1, 5), ["groq:g", "openai:o", "groq:platform", "openai:platform"]),
    ],
)
def test_bare_name_across_providers(
    prices: tuple[str | None, str | None], priorities: tuple[int, int], expected: list[str]
) -> None:
    """Providers of one model: cheaper first; at equal price the tenant's priority decides."""
    options = [
        option([key("o", priority=priorities[0])], "openai", prices[0]),
        option([key("g", "groq", priority=priorities[1])], "groq", prices[1]),
    ]
    assert order(options) == expected


def test_always_use_is_per_provider() -> None:
    """always_use on the groq key closes groq's platform key only."""
    options = [
        option([key("o")], "openai", "1"),
        option([key("g", "groq", always_use=True)], "groq", "1"),
    ]
    assert order(options) == ["openai:o", "groq:g", "openai:platform"]


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (401, Outcome.KEY_REJECTED),
        (403, Outcome.KEY_REJECTED),
        (429, Outcome.RATE_LIMITED),
        (408, Outcome.PROVIDER_FAILED),
        (500, Outcome.PROVIDER_FAILED),
        (503, Outcome.PROVIDER_FAILED),
        (529, Outcome.PROVIDER_FAILED),
        (400, Outcome.REQUEST_FAILED),
        (404, Outcome.REQUEST_FAILED),
        (422, Outcome.REQUEST_FAILED),
    ],
)
def test_classify(status: int, outcome: Outcome) -> None:
    """Which statuses fail over, and what they mean for the key."""
    assert classify(status) is outcome
    assert outcome.fails_over == (status in RETRYABLE_STATUSES)


@pytest.mark.parametrize(
    ("headers", "body", "seconds"),
    [
        ({"retry-after": "7"}, b"", 7.0),
        ({"retry-after": "1.5"}, b"", 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, b"", 0.25),
        ({"retry-after": "Sun, 17 May 2026 12:00:30 GMT"}, b"", 30.0),
        ({"retry-after": "Sun, 17 May 2026 11:00:00 GMT"}, b"", 0.0),
        ({"retry-after": "soon"}, b"", None),
        ({}, b'[{"error": {"details": [{"retryDelay": "47s"}]}}]', 47.0),
        ({}, b"", None),
    ],
)
def test_retry_after(headers: dict[str, str], body: bytes, seconds: float | None) -> None:
    """retry-after-ms, retry-after as seconds or HTTP date, Google's retryDelay."""
    assert retry_after_seconds(headers, body, NOW) == seconds


@pytest.mark.parametrize(
    ("retry_after", "strikes", "seconds"),
    [
        (30.0, 1, 30.0),
        (0.0, 1, 1.0),
        (10**6, 1, 3600.0),
        (None, 1, 2.0),
        (None, 3, 8.0),
        (None, 50, 120.0),
    ],
)
def test_cooldown(retry_after: float | None, strikes: int, seconds: float) -> None:
    """As asked within bounds; without retry-after, a bounded exponential backoff."""
    assert cooldown_seconds(retry_after, strikes) == seconds


def test_last_error_text_is_short_and_key_free() -> None:
    """last_error names status, provider and time only."""
    assert describe_failure("401", "openai", NOW) == "401 from openai at 2026-05-17T12:00:00Z"


def test_month_start() -> None:
    """Budgets count from midnight UTC on the first of the month."""
    assert month_start(NOW) == datetime(2026, 5, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "providers"),
    [
        ("openai/gpt-4o", ["openai"]),
        ("nvidia/meta/llama-3.1-8b-instruct", ["nvidia"]),
        ("gpt-4o", ["openai"]),
        ("gpt-4o-2024-08-06", ["openai"]),
        ("llama-3.3-70b-versatile", ["groq"]),
        ("claude-sonnet-4-5", ["anthropic"]),  # not google: genai-prices lists Vertex there
        ("deepseek-r1-distill-llama-70b", ["groq"]),  # not deepseek: a loose genai match
        ("meta/llama-3.1-8b-instruct", ["nvidia"]),  # the static table
    ],
)
def test_resolve_routes(name: str, providers: list[str]) -> None:
    """provider/model as before; bare names to the providers that serve them."""
    routes = resolve_routes(name, ModelCatalogue(GenaiPrices()), when=NOW)
    assert [r.provider for r in routes] == providers


@pytest.mark.parametrize("name", ["no-such-model", "gpt"])
def test_unknown_bare_name_is_a_400(name: str) -> None:
    """A bare name no provider is known to serve is a 400 on param model."""
    with pytest.raises(InvalidRequest) as caught:
        resolve_routes(name, ModelCatalogue(GenaiPrices()), when=NOW)
    assert caught.value.param == "model"


# --- steady plans and the gateway's plan cache --------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "steady"),
    [
        ([], True),
        ([key("a"), key("b", priority=2)], True),
        ([key("a", status=KeyStatus.INVALID), key("b")], True),
        ([key("a"), key("b")], False),  # equal rank: the round-robin rotates them
        ([key("a", rpm=5)], False),  # usage moves the plan
        ([key("a", monthly_budget_usd=Decimal(1))], False),
        ([key("a", status=KeyStatus.COOLING_DOWN, cooldown_until=NOW + timedelta(1))], False),
    ],
)
def test_a_plan_is_steady_only_when_time_turn_and_usage_cannot_change_it(
    keys: list[ResolvedKey], steady: bool
) -> None:
    plan = plan_candidates([option(keys)], policy=RoutePolicy(), usage={}, now=NOW)
    assert plan.steady is steady


async def test_the_gateway_reuses_a_steady_plan_until_the_keys_change() -> None:
    """One plan object while the key cache holds; rotation, health and deletion replan."""
    config = BYOKConfig(
        master_key=generate_master_key(), platform_keys={"openai": "sk-platform-key-0123"}
    )
    gateway = Gateway(config, store=MemoryStore())
    await gateway.store.open()
    try:
        record = await gateway.keys.create("t1", NewKey(provider="openai", api_key="sk-one"))
        first = await gateway.plan("t1", "openai")
        assert await gateway.plan("t1", "openai") is first
        assert [c.key_id for c in first.candidates] == [record.id, None]
        assert await gateway.plan("t2", "openai") is not first  # another tenant, its own plan

        await gateway.keys.update("t1", record.id, KeyPatch(api_key="sk-two"))
        rotated = await gateway.plan("t1", "openai")
        assert rotated is not first
        assert rotated.candidates[0].secret.reveal() == "sk-two"

        await gateway.keys.set_health(rotated.keys[0].record, status=KeyStatus.INVALID)
        assert [c.key_id for c in (await gateway.plan("t1", "openai")).candidates] == [None]

        await gateway.keys.delete("t1", record.id)
        assert (await gateway.plan("t1", "openai")).keys == ()
    finally:
        await gateway.store.close()


async def test_a_key_change_drops_the_tenants_cached_plans_at_once() -> None:
    """Stale plans (and the secrets in them) are not kept until the next request replans."""
    gateway = Gateway(BYOKConfig(master_key=generate_master_key()), store=MemoryStore())
    await gateway.store.open()
    await gateway.bus.start(gateway._on_invalidation)
    try:
        record = await gateway.keys.create("t1", NewKey(provider="openai", api_key="sk-one"))
        await gateway.keys.create("t2", NewKey(provider="openai", api_key="sk-two"))
        await gateway.plan("t1", "openai")
        await gateway.plan("t2", "openai")
        assert {tenant for tenant, _ in gateway._plans} == {"t1", "t2"}
        await gateway.keys.delete("t1", record.id)
        assert {tenant for tenant, _ in gateway._plans} == {"t2"}
    finally:
        await gateway.store.close()


async def test_equal_keys_still_take_turns_through_the_gateway() -> None:
    """Plans that rotate are never cached: consecutive plans start with different keys."""
    gateway = Gateway(BYOKConfig(master_key=generate_master_key()), store=MemoryStore())
    await gateway.store.open()
    try:
        for secret in ("sk-one", "sk-two"):
            await gateway.keys.create("t1", NewKey(provider="openai", api_key=secret))
        firsts = {(await gateway.plan("t1", "openai")).candidates[0].key_id for _ in range(4)}
        assert len(firsts) == 2
    finally:
        await gateway.store.close()


async def test_per_key_bookkeeping_stays_bounded_over_key_churn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keys come and go over a long uptime: health notes, 429 strikes and cached monthly spends
    of keys no longer used are pruned past a cap, and a note still inside its interval stays."""
    monkeypatch.setattr(health_module, "MAX_TRACKED_KEYS", 5)
    monkeypatch.setattr(budgets_module, "MAX_FIGURES", 5)
    now = [NOW]
    gateway = Gateway(
        BYOKConfig(master_key=generate_master_key()), store=MemoryStore(), clock=lambda: now[0]
    )
    await gateway.store.open()
    try:
        fresh = key("k-fresh").record
        gateway.health.provider_failed(fresh, "timeout")
        for index in range(20):
            now[0] += timedelta(minutes=2)  # past the 60 s note interval each time
            record = key(f"k{index}", monthly_budget_usd=Decimal(5)).record
            gateway.health.provider_failed(record, "timeout")
            await gateway.health.rate_limited(record, 429, None)
            await gateway.limits.usage([record])
        await gateway.health.flush()
        assert len(gateway.health._noted) <= 5
        assert len(gateway.health._strikes) <= 5
        assert len(gateway.spend.backend._figures) <= 5  # type: ignore[attr-defined]
        # The newest note still throttles: a second failure within the interval writes nothing.
        assert gateway.health._due("k19", "last_error", now[0]) is False
    finally:
        await gateway.store.close()

"""Spend control end to end: real uvicorn, the openai SDK, the fake upstream, a real SQLite file.

Budgets and policies are set through the operator API, as an operator would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from byok_middleware import SQLiteStore
from byok_middleware.testing import FakeUpstream, Scripted
from tests.conftest import PLATFORM_OPENAI_KEY, Gateway

ADMIN_KEY = "admin-secret-for-tests-0123456789"
K1 = "sk-tenant-first-111111111111111111111"
# gpt-4o: $2.50 per 1M input tokens, $10 per 1M output tokens.
REAL_USAGE = {"prompt_tokens": 30, "completion_tokens": 20}
REAL_COST = Decimal("0.000275")  # 30 * 2.5e-6 + 20 * 1e-5
CHAT: dict[str, Any] = {
    "model": "openai/gpt-4o",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 20,
}


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self.now += delta


def admin(gateway: Gateway) -> httpx.Client:
    return httpx.Client(
        base_url=gateway.url + "/v1/byok/admin",
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=30,
    )


def tenant_id(gateway: Gateway, name: str = "acme") -> str:
    gateway.tenant(name)
    with admin(gateway) as http:
        tenants = http.get("/tenants").json()["data"]
    return next(t["id"] for t in tenants if t["name"] == name)


def set_policy(gateway: Gateway, **policy: Any) -> dict[str, Any]:
    with admin(gateway) as http:
        response = http.put(f"/tenants/{tenant_id(gateway)}/policy", json=policy)
    assert response.status_code == 200, response.text
    return dict(response.json())


def chat(gateway: Gateway, body: dict[str, Any] | None = None) -> httpx.Response:
    with gateway.client("acme") as http:
        return http.post("/v1/chat/completions", json=body or CHAT)


def ledger_rows(gateway: Gateway) -> list[Any]:
    async def read() -> list[Any]:
        store = SQLiteStore(gateway.db_path)
        await store.open()
        try:
            return await store.list_usage(tenant_id(gateway), limit=1000)
        finally:
            await store.close()

    with admin(gateway) as http:  # the export flushes the gateway's queued ledger rows
        http.get("/usage")
    return asyncio.run(read())


@pytest.fixture
def spend_gateway(start_gateway: Callable[..., Gateway], fake: FakeUpstream) -> Gateway:
    fake.default_usage = dict(REAL_USAGE)
    return start_gateway(admin_key=ADMIN_KEY)


def test_concurrent_requests_never_overshoot_the_tenant_budget(
    spend_gateway: Gateway, fake: FakeUpstream
) -> None:
    """24 concurrent calls (half streamed) on a budget for ~14: the ledger stays within it, the
    refused get 429 insufficient_quota naming the budget, and at least half of 14 are served."""
    budget = Decimal("0.004")
    set_policy(spend_gateway, budget_usd=str(budget))
    fake.chunk_delay = 0.02
    client = spend_gateway.openai("acme")

    def one(index: int) -> str:
        try:
            if index % 2:
                stream = client.chat.completions.create(**CHAT, stream=True)
                for _ in stream:
                    pass
            else:
                client.chat.completions.create(**CHAT)
        except openai.RateLimitError as exc:
            error = exc.body if isinstance(exc.body, dict) else {}
            assert error.get("type") == "insufficient_quota"
            assert error.get("code") == "budget_exceeded"
            assert "the tenant's budget (per month) is $0.004" in str(error.get("message"))
            assert "resets at" in str(error.get("message"))
            return "refused"
        return "served"

    with ThreadPoolExecutor(max_workers=24) as pool:
        outcomes = list(pool.map(one, range(24)))
    rows = [r for r in ledger_rows(spend_gateway) if r.status_code == 200]
    spent = sum((r.cost_usd for r in rows), Decimal(0))
    assert spent <= budget
    assert outcomes.count("served") == len(rows)
    assert "refused" in outcomes
    assert outcomes.count("served") >= int(budget / REAL_COST) / 2
    assert {r.cost_source for r in rows} == {"price_table"}


def test_on_failure_lets_the_platform_serve_after_a_500_not_after_a_401(
    spend_gateway: Gateway, fake: FakeUpstream
) -> None:
    """platform_fallback on_failure: a 500 from the tenant's key moves to the platform key; a
    401 does not (an invalid key must not move spend to the operator)."""
    set_policy(spend_gateway, platform_fallback="on_failure")
    spend_gateway.add_key("acme", "openai", K1)
    fake.script("openai", Scripted.error("openai", 500))
    served = chat(spend_gateway)
    assert served.status_code == 200, served.text
    assert served.json()["xantly_metadata"]["cost_attribution"] == "xantly"
    fake.clear()
    fake.script("openai", Scripted.invalid_key("openai"))
    refused = chat(spend_gateway)
    assert refused.status_code != 200
    assert [r.api_key for r in fake.requests_for("openai")] == [K1]


def test_on_failure_never_serves_a_tenant_without_a_key_and_never_refuses_all(
    spend_gateway: Gateway, fake: FakeUpstream
) -> None:
    """on_failure with no tenant key: 400 naming the policy; never: the same; always: served."""
    set_policy(spend_gateway, platform_fallback="on_failure")
    response = chat(spend_gateway)
    assert response.status_code == 400
    assert "platform_fallback to on_failure" in response.json()["error"]["message"]
    set_policy(spend_gateway, platform_fallback="never")
    assert "platform_fallback to never" in chat(spend_gateway).json()["error"]["message"]
    set_policy(spend_gateway, platform_fallback="always")
    assert chat(spend_gateway).status_code == 200
    assert fake.requests_for("openai")[-1].api_key == PLATFORM_OPENAI_KEY


def test_platform_models_limit_what_the_platform_key_serves(
    spend_gateway: Gateway, fake: FakeUpstream
) -> None:
    """platform_models ["openai/gpt-4o-mini", "groq/*"]: gpt-4o is refused, gpt-4o-mini served."""
    set_policy(spend_gateway, platform_models=["openai/gpt-4o-mini", "groq/*"])
    refused = chat(spend_gateway)
    assert refused.status_code == 400
    assert "platform_models does not include openai/gpt-4o" in refused.text
    assert chat(spend_gateway, {**CHAT, "model": "openai/gpt-4o-mini"}).status_code == 200


def test_unpriced_models_are_blocked_under_a_budget_unless_allowed(
    spend_gateway: Gateway, fake: FakeUpstream
) -> None:
    """A model without a price: 400 naming it and the setting under a budget; allowed with
    unpriced allow (cost_usd null, cost_source unpriced in the ledger)."""
    body = {**CHAT, "model": "openai/gpt-unpriced-test-model"}
    assert chat(spend_gateway, body).status_code == 200  # no budget: allowed by default
    set_policy(spend_gateway, budget_usd=5)
    blocked = chat(spend_gateway, body)
    assert blocked.status_code == 400
    error = blocked.json()["error"]
    assert error["code"] == "unpriced_model"
    assert "openai/gpt-unpriced-test-model" in error["message"] and "unpriced" in error["message"]
    set_policy(spend_gateway, unpriced="allow")
    allowed = chat(spend_gateway, body)
    assert allowed.status_code == 200
    assert allowed.json()["xantly_metadata"]["cost_usd"] is None
    sources = {r.cost_source for r in ledger_rows(spend_gateway) if r.status_code == 200}
    assert sources == {"unpriced"}


def test_clamping_lowers_max_tokens_to_what_the_budget_can_pay(
    spend_gateway: Gateway, fake: FakeUpstream
) -> None:
    """clamp_max_tokens: a 4000-token limit the budget cannot cover goes upstream lowered; with
    too little left for even a short answer the call is refused."""
    set_policy(spend_gateway, budget_usd="0.002", clamp_max_tokens=True)
    served = chat(spend_gateway, {**CHAT, "max_tokens": 4000})
    assert served.status_code == 200, served.text
    sent = fake.requests_for("openai")[-1].json["max_tokens"]
    assert 16 <= sent < 200
    set_policy(spend_gateway, budget_usd="0.0004")  # 0.000275 spent: ~12 output tokens left
    refused = chat(spend_gateway, {**CHAT, "max_tokens": 4000})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "budget_exceeded"


def test_the_platform_budget_caps_platform_spend_only(
    spend_gateway: Gateway, fake: FakeUpstream
) -> None:
    """platform_budget_usd: once spent, the platform key is refused; the tenant's key serves."""
    set_policy(spend_gateway, platform_budget_usd="0.0005")
    assert chat(spend_gateway).status_code == 200  # the platform pays 0.000275
    refused = chat(spend_gateway)
    assert refused.status_code == 429
    assert "platform budget" in refused.json()["error"]["message"]
    spend_gateway.add_key("acme", "openai", K1)
    served = chat(spend_gateway)
    assert served.json()["xantly_metadata"]["cost_attribution"] == "byok"


def test_a_daily_budget_resets_at_utc_midnight(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """budget_period day with an injected clock: refused late in the day, served after 00:00."""
    fake.default_usage = dict(REAL_USAGE)
    clock = FakeClock(datetime(2026, 3, 14, 23, 0, tzinfo=UTC))
    gateway = start_gateway(admin_key=ADMIN_KEY, clock=clock)
    set_policy(gateway, budget_usd="0.0005", budget_period="day")
    assert chat(gateway).status_code == 200
    refused = chat(gateway)
    assert refused.status_code == 429
    assert "resets at 2026-03-15T00:00:00Z" in refused.json()["error"]["message"]
    clock.advance(timedelta(hours=1))
    assert chat(gateway).status_code == 200


def test_a_key_monthly_budget_is_reserved_like_the_others(
    spend_gateway: Gateway, fake: FakeUpstream
) -> None:
    """A key's monthly_budget_usd refuses what its worst case would overshoot, naming the key."""
    key = spend_gateway.add_key("acme", "openai", K1, monthly_budget_usd="0.0003")
    set_policy(spend_gateway, platform_fallback="never")
    assert chat(spend_gateway, {**CHAT, "max_tokens": 5}).status_code == 200
    refused = chat(spend_gateway)
    assert refused.status_code == 429
    assert f"key {key['id']}" in refused.json()["error"]["message"]

"""``model: "auto"`` end to end: the openai SDK, a real uvicorn gateway, the fake upstream.

Every gateway here has no platform key (so the tenant's own providers are all there is), a fixed
seed and no random exploration, so each decision is the router's plain choice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from byok_middleware import BYOKConfig, generate_master_key
from byok_middleware.gateway import Call
from byok_middleware.gateway import Gateway as Engine
from byok_middleware.storage import MemoryStore
from byok_middleware.testing import FakeUpstream, Scripted
from tests.conftest import Gateway, metadata

AUTO = {"platform_keys": {}, "auto_route_seed": 7, "auto_route_explore": 0.0}
CODE = "Fix this function:\n```python\ndef add(a, b):\n    return a - b\n```"


def keys(gateway: Gateway, tenant: str, **priorities: int) -> dict[str, str]:
    """Register one key per provider for ``tenant`` (provider=priority); their ids."""
    return {
        provider: gateway.add_key(
            tenant, provider, f"sk-{provider}-{tenant}-0123456789abcdef", priority=p
        )["id"]
        for provider, p in priorities.items()
    }


def ask(sdk: Any, text: str = "Hello there", model: str = "auto", **extra: Any) -> Any:
    return sdk.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], **extra
    )


def route(
    gateway: Gateway, tenant: str, body: dict[str, Any] | None = None, **params: str
) -> dict[str, Any]:
    with gateway.client(tenant) as client:
        query = {"model": "auto", **params}
        response = (
            client.post("/v1/byok/route", params=query, json=body)
            if body
            else client.get("/v1/byok/route", params=query)
        )
    assert response.status_code == 200, response.text
    return dict(response.json())


def feedback(gateway: Gateway, tenant: str, request_id: str, score: object) -> httpx.Response:
    with gateway.client(tenant) as client:
        return client.post("/v1/byok/feedback", json={"request_id": request_id, "score": score})


def test_auto_picks_among_the_tenants_providers_only(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """With groq and deepseek keys, every auto request goes to one of them, said in metadata."""
    gateway = start_gateway(**AUTO)
    keys(gateway, "acme", groq=1, deepseek=1)
    sdk = gateway.openai("acme")
    for model, text in [
        ("auto", "Hello"),
        ("auto:cheap", CODE),
        ("auto:best", "Solve 3x + 5 = 20"),
    ]:
        meta = metadata(ask(sdk, text, model))
        assert meta["provider_used"] in ("groq", "deepseek")
        assert meta["routed"] == "auto"
        assert meta["route_reason"]
    assert {r.provider for r in fake.requests} <= {"groq", "deepseek"}


def test_cost_weight_moves_the_choice(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """auto:cheap and auto:best pick different models (cheaper vs better by prior); the header
    sets the weight continuously and a bad one is a 400 naming it."""
    gateway = start_gateway(**AUTO)
    keys(gateway, "acme", openai=1, groq=1)
    sdk = gateway.openai("acme")
    cheap = metadata(ask(sdk, model="auto:cheap"))
    best = metadata(ask(sdk, model="auto:best"))
    assert cheap["model_used"] != best["model_used"]
    scored = {c["model"]: c for c in route(gateway, "acme", cost_weight="0.5")["candidates"]}
    cheap_key = f"{cheap['provider_used']}/{cheap['model_used']}"
    best_key = f"{best['provider_used']}/{best['model_used']}"
    assert scored[cheap_key]["expected_cost_usd"] < scored[best_key]["expected_cost_usd"]
    assert scored[cheap_key]["quality"] < scored[best_key]["quality"]
    # The header overrides the named weight: 1 = cost only, 0 = quality only.
    only_cost = ask(sdk, model="auto:best", extra_headers={"x-byok-route-cost-weight": "1"})
    assert metadata(only_cost)["model_used"] == cheap["model_used"]
    with pytest.raises(openai.BadRequestError) as refused:
        ask(sdk, extra_headers={"x-byok-route-cost-weight": "2"})
    assert refused.value.body["param"] == "x-byok-route-cost-weight"


def test_priority_decides_among_equivalent_options(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """Llama 3.3 70B on groq and on NVIDIA score the same on quality alone: key priority picks."""
    gateway = start_gateway(**AUTO)
    ids = keys(gateway, "acme", groq=2, nvidia=1)
    sdk = gateway.openai("acme")
    quality_only = {"x-byok-route-cost-weight": "0"}
    meta = metadata(ask(sdk, extra_headers=quality_only))
    assert (meta["provider_used"], meta["model_used"]) == ("nvidia", "meta/llama-3.3-70b-instruct")
    assert "priority" in meta["route_reason"]
    with gateway.client("acme") as client:
        client.put(f"/v1/byok/providers/{ids['nvidia']}", json={"priority": 3})
    meta = metadata(ask(sdk, extra_headers=quality_only))
    assert (meta["provider_used"], meta["model_used"]) == ("groq", "llama-3.3-70b-versatile")


def test_keys_invalid_or_cooling_down_are_skipped(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """A provider whose only key turned invalid, then one whose key cools down, leave the
    candidates; with none left, a 400 says why each provider is out."""
    gateway = start_gateway(**AUTO)
    keys(gateway, "acme", groq=1, nvidia=2)
    sdk = gateway.openai("acme")
    quality_only = {"x-byok-route-cost-weight": "0"}  # Llama 3.3 70B on both: priority picks
    fake.script("groq", Scripted.invalid_key("groq"))
    with pytest.raises(openai.AuthenticationError):
        ask(sdk, extra_headers=quality_only)  # auto chose groq; its only key is rejected
    assert metadata(ask(sdk, extra_headers=quality_only))["provider_used"] == "nvidia"
    assert "groq" in route(gateway, "acme", cost_weight="0")["providers_left_out"]
    fake.script("nvidia", Scripted.rate_limited("nvidia", retry_after=60))
    with pytest.raises(openai.RateLimitError):
        ask(sdk, extra_headers=quality_only)
    with pytest.raises(openai.BadRequestError) as refused:
        ask(sdk, extra_headers=quality_only)
    assert refused.value.body["code"] == "no_model_available"
    assert {"groq", "nvidia"} <= set(route(gateway, "acme")["providers_left_out"])
    assert [r.provider for r in fake.requests] == ["groq", "nvidia", "nvidia"]


def test_nothing_can_serve_is_a_clear_400(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """An image for a tenant with text-only models, or a tenant with no key: 400, no upstream."""
    gateway = start_gateway(**AUTO)
    keys(gateway, "acme", groq=1)
    image = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    with pytest.raises(openai.BadRequestError) as refused:
        gateway.openai("acme").chat.completions.create(
            model="auto", messages=[{"role": "user", "content": image}]
        )
    error = refused.value.body
    assert error["code"] == "no_model_fits"
    assert "no image input" in error["message"]
    with pytest.raises(openai.BadRequestError) as nothing:
        ask(gateway.openai("nobody"))
    assert nothing.value.body["code"] == "no_model_available"
    assert fake.requests == []


def test_learns_from_feedback_and_shares_it_through_the_store(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """Low scores for the model chosen for code requests move the choice; the state is in the
    store, so a second gateway on the same database (a replica) decides the same."""
    gateway = start_gateway(**AUTO)
    keys(gateway, "acme", openai=1, groq=1, deepseek=1)
    sdk = gateway.openai("acme")
    first = None
    moved_after = None
    for n in range(1, 31):
        result = ask(sdk, f"{CODE}\n# attempt {n}")  # distinct prompts: no repeat signal
        meta = metadata(result)
        chosen = f"{meta['provider_used']}/{meta['model_used']}"
        first = first or chosen
        if chosen != first:
            moved_after = n - 1
            break
        answer = feedback(gateway, "acme", meta["request_id"], 0.0)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == first
    assert moved_after is not None, f"still {first} after 30 scores of 0"
    view = route(gateway, "acme", {"messages": [{"role": "user", "content": CODE}]})
    scored = {c["model"]: c for c in view["candidates"]}
    assert scored[first]["learned"] < 0
    assert view["would_use"] != first
    with sqlite3.connect(gateway.db_path) as conn:
        scopes = {row[0] for row in conn.execute("SELECT scope FROM router_state")}
        routed = conn.execute("SELECT count(*) FROM routed_requests").fetchone()[0]
    assert "shared" in scopes and len(scopes) == 2
    assert routed >= moved_after
    replica = start_gateway(master_key=gateway.config.master_key, **AUTO)
    replica.tenants = gateway.tenants
    again = route(replica, "acme", {"messages": [{"role": "user", "content": CODE}]})
    assert again["would_use"] == view["would_use"]


def test_feedback_takes_only_the_callers_routed_requests(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """Another tenant's request id is a 404, a named model's too; a second score a 409; a score
    out of 0..1 a 400."""
    gateway = start_gateway(**AUTO)
    keys(gateway, "acme", groq=1)
    keys(gateway, "other", groq=1)
    routed_id = metadata(ask(gateway.openai("acme")))["request_id"]
    named = ask(gateway.openai("acme"), model="groq/llama-3.1-8b-instant")
    assert feedback(gateway, "other", routed_id, 1).status_code == 404
    assert feedback(gateway, "acme", metadata(named)["request_id"], 1).status_code == 404
    assert feedback(gateway, "acme", routed_id, 1.5).json()["error"]["param"] == "score"
    assert feedback(gateway, "acme", routed_id, True).status_code == 400
    assert feedback(gateway, "acme", routed_id, 0.9).status_code == 200
    assert feedback(gateway, "acme", routed_id, 0.9).status_code == 409


def test_dry_run_scores_candidates_without_calling_upstream(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """GET and POST /byok/route?model=auto show each candidate's components; nothing is sent."""
    gateway = start_gateway(**AUTO)
    keys(gateway, "acme", openai=1, groq=1)
    view = route(gateway, "acme", cost_weight="0.3")
    assert view["cost_weight"] == 0.3
    candidate = view["candidates"][0]
    assert {"model", "priority", "quality", "prior", "learned", "cost", "utility"} <= set(candidate)
    assert {c["model"].split("/")[0] for c in view["candidates"]} == {"openai", "groq"}
    tools = [{"type": "function", "function": {"name": "book", "parameters": {}}}]
    sample = {"messages": [{"role": "user", "content": "Book a table"}], "tools": tools}
    posted = route(gateway, "acme", sample)
    assert posted["features"]["vector"]["tools"] == 1.0
    assert posted["would_use"] in {c["model"] for c in posted["candidates"]}
    assert fake.requests == []


def test_streamed_auto_carries_the_route_in_its_last_metadata(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """A streamed auto request says routed: auto in the metadata of its last data event."""
    gateway = start_gateway(**AUTO)
    keys(gateway, "acme", groq=1)
    stream = gateway.openai("acme").chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    chunks = list(stream)
    last = chunks[-1].model_extra["xantly_metadata"]
    assert last["routed"] == "auto" and last["provider_used"] == "groq"


async def test_decisions_are_reproducible_under_a_seed() -> None:
    """Two gateways with the same seed explore the same way: the same sequence of choices."""

    async def choices(seed: int) -> list[str]:
        config = BYOKConfig(
            master_key=generate_master_key(),
            platform_keys={"openai": "sk-platform-openai-000", "groq": "gsk_platform_groq_000"},
            auto_route_seed=seed,
            auto_route_explore=0.5,
            journal_dir="off",
        )
        engine = Engine(config, store=MemoryStore())
        found = []
        for n in range(40):
            call = Call("t-acme", f"req_{n}", "/chat/completions", 0.0)
            body = {"model": "auto", "messages": [{"role": "user", "content": f"Hi {n}"}]}
            await engine.auto.prepare(call, body, None)
            found.append(f"{call.provider}/{call.model}")
        await engine.auto.close()
        return found

    first, again, other = await choices(3), await choices(3), await choices(4)
    assert first == again
    assert first != other  # exploration happened, differently under another seed


def test_auto_also_routes_the_responses_and_messages_dialects(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """``model: "auto"`` on /responses and /messages picks among the tenant's providers too."""
    gateway = start_gateway(**AUTO)
    keys(gateway, "acme", groq=1, deepseek=1)
    with gateway.client("acme") as client:
        response = client.post("/v1/responses", json={"model": "auto", "input": "Hello"})
        message = client.post(
            "/v1/messages",
            json={
                "model": "auto:cheap",
                "max_tokens": 50,
                "messages": [{"role": "user", "content": "Hello"}],
            },
        )
    assert response.status_code == 200, response.text
    assert message.status_code == 200, message.text
    for meta in (response.json()["xantly_metadata"], message.json()["xantly_metadata"]):
        assert meta["routed"] == "auto" and meta["provider_used"] in ("groq", "deepseek")
    assert {r.provider for r in fake.requests} <= {"groq", "deepseek"}

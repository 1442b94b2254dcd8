"""OpenAI's Responses API through the gateway, seen from the official openai SDK.

openai is served natively (the fake's ``/responses``), anthropic through its Messages API and
groq through chat completions; every test runs on real uvicorn against the fake upstream.
"""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from typing import Any

import genai_prices
import openai
import pytest

from byok_middleware.testing import FakeUpstream, Scripted
from tests.conftest import PLATFORM_OPENAI_KEY, Gateway

PLATFORM_KEYS = {
    "openai": PLATFORM_OPENAI_KEY,
    "anthropic": "sk-ant-platform-55555555555555555555555",
    "groq": "gsk_platform_666666666666666666666666666",
}
TENANT_KEYS = {
    "openai": "sk-tenant-77777777777777777777777777777",
    "anthropic": "sk-ant-tenant-88888888888888888888888888",
    "groq": "gsk_tenant_9999999999999999999999999999",
}
MODELS = {
    "openai": "openai/gpt-4o",
    "anthropic": "anthropic/claude-sonnet-4-5",
    "groq": "groq/llama-3.3-70b-versatile",
}
# The path each provider's request arrives at: native, Messages, chat.
UPSTREAM_PATHS = {"openai": "/responses", "anthropic": "/v1/messages", "groq": "/chat/completions"}
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]
PROVIDERS = list(MODELS)


def list_price(provider: str) -> float:
    """genai-prices' price of the fake's default usage (100 tokens in, 20 out)."""
    model = MODELS[provider].split("/", 1)[1]
    usage = genai_prices.Usage(input_tokens=100, output_tokens=20)
    price = genai_prices.calc_price(usage, model, provider_id=provider).total_price
    return float(Decimal(price))


def ledger(gateway: Gateway, tenant: str = "acme") -> list[dict[str, Any]]:
    """The ledger rows on the SQLite file, oldest first (read after the ledger is flushed)."""
    with gateway.client(tenant) as http:
        assert http.get("/v1/byok/usage").status_code == 200  # flushes the ledger
    with sqlite3.connect(gateway.db_path) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM usage ORDER BY seq").fetchall()
    return [dict(row) for row in rows]


@pytest.fixture
def gateway(start_gateway: Any) -> Gateway:
    gw: Gateway = start_gateway(platform_keys=PLATFORM_KEYS)
    return gw


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    sdk: openai.OpenAI = gateway.openai("acme")
    return sdk


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("byok", [True, False], ids=["byok", "platform"])
def test_create_answers_with_metadata_and_list_price(
    gateway: Gateway, client: openai.OpenAI, fake: FakeUpstream, provider: str, byok: bool
) -> None:
    """responses.create works on each provider; the tenant key or the platform key pays."""
    key = gateway.add_key("acme", provider, TENANT_KEYS[provider]) if byok else None
    response = client.responses.create(
        model=MODELS[provider], input="Hello?", instructions="Be brief.", metadata={"k": "v"}
    )
    assert response.output_text == f"Hello from the fake {provider}."
    assert response.status == "completed"
    assert response.metadata == {"k": "v"}
    assert response.usage is not None and response.usage.input_tokens == 100
    meta = response.model_extra["xantly_metadata"]  # type: ignore[index]
    assert meta["provider_used"] == provider
    assert meta["cost_attribution"] == ("byok" if byok else "xantly")
    assert meta["key_id"] == (key["id"] if key else None)
    assert meta["cost_usd"] == pytest.approx(list_price(provider))
    (received,) = fake.requests_for(provider)
    assert received.path == UPSTREAM_PATHS[provider]
    assert received.api_key == (TENANT_KEYS if byok else PLATFORM_KEYS)[provider]
    (row,) = ledger(gateway)
    assert (row["endpoint"], row["provider"], row["attribution"]) == (
        "/responses",
        provider,
        "byok" if byok else "xantly",
    )
    assert float(row["cost_usd"]) == pytest.approx(list_price(provider))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_is_the_responses_event_sequence(
    gateway: Gateway, client: openai.OpenAI, provider: str
) -> None:
    """responses.stream yields Responses events; response.completed carries usage and metadata."""
    gateway.add_key("acme", provider, TENANT_KEYS[provider])
    with client.responses.stream(model=MODELS[provider], input="Hello?") as stream:
        events = list(stream)
        final = stream.get_final_response()
    names = [event.type for event in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in names
    assert names[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == f"Hello from the fake {provider}."
    assert final.usage is not None and final.usage.output_tokens == 20
    meta = final.model_extra["xantly_metadata"]  # type: ignore[index]
    assert (meta["provider_used"], meta["cost_attribution"]) == (provider, "byok")
    assert meta["cost_usd"] == pytest.approx(list_price(provider))
    (row,) = ledger(gateway)
    assert (row["endpoint"], row["status_code"]) == ("/responses", 200)
    assert float(row["cost_usd"]) == pytest.approx(list_price(provider))


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_function_call_output_round_trip(
    gateway: Gateway, client: openai.OpenAI, fake: FakeUpstream, provider: str, stream: bool
) -> None:
    """A function_call comes back; its function_call_output continues the conversation."""
    if stream:
        with client.responses.stream(
            model=MODELS[provider], input="Weather in Paris?", tools=TOOLS
        ) as events:
            list(events)
            first = events.get_final_response()
    else:
        first = client.responses.create(
            model=MODELS[provider], input="Weather in Paris?", tools=TOOLS
        )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather" and '"Paris"' in call.arguments
    second = client.responses.create(
        model=MODELS[provider],
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=TOOLS,
        tool_choice="none",
    )
    assert second.output_text == f"Hello from the fake {provider}."
    assert second.previous_response_id == first.id
    sent = fake.requests_for(provider)[-1].json
    text = str(sent)
    assert "Weather in Paris?" in text and "sunny" in text and call.call_id in text
    if provider == "groq":
        roles = [m["role"] for m in sent["messages"]]
        assert roles == ["user", "assistant", "tool"]
    elif provider == "openai":
        assert "previous_response_id" not in sent
        kinds = [item.get("type", "message") for item in sent["input"]]
        assert kinds == ["message", "function_call", "function_call_output"]


@pytest.mark.parametrize(("first", "second"), [("groq", "anthropic"), ("anthropic", "openai")])
def test_previous_response_id_across_providers(
    gateway: Gateway, client: openai.OpenAI, fake: FakeUpstream, first: str, second: str
) -> None:
    """A turn served by one provider continues on another, with the earlier turn as input."""
    gateway.add_key("acme", first, TENANT_KEYS[first])
    earlier = client.responses.create(model=MODELS[first], input="My name is Ada.")
    later = client.responses.create(
        model=MODELS[second], input="What is my name?", previous_response_id=earlier.id
    )
    assert later.previous_response_id == earlier.id
    assert later.model_extra["xantly_metadata"]["provider_used"] == second  # type: ignore[index]
    text = str(fake.requests_for(second)[-1].json)
    for part in ("My name is Ada.", f"Hello from the fake {first}.", "What is my name?"):
        assert part in text


def test_retrieve_and_delete_are_tenant_scoped(
    gateway: Gateway, client: openai.OpenAI, fake: FakeUpstream
) -> None:
    """A stored response is the tenant's to read and delete; another tenant gets a 404."""
    response = client.responses.create(model=MODELS["groq"], input="Hello?")
    again = client.responses.retrieve(response.id)
    assert again.id == response.id and again.output_text == response.output_text
    other = gateway.openai("globex")
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model=MODELS["groq"], input="Hi", previous_response_id=response.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(response.id)
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    assert len(fake.requests_for("groq")) == 1  # reads never reach a provider


def test_store_false_keeps_nothing_and_stored_text_is_sealed(
    gateway: Gateway, client: openai.OpenAI
) -> None:
    """store: false is not retrievable; what is stored is ciphertext, not the conversation."""
    kept = client.responses.create(model=MODELS["groq"], input="secret-words-123")
    dropped = client.responses.create(model=MODELS["groq"], input="Hi", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(dropped.id)
    with sqlite3.connect(gateway.db_path) as db:
        rows = db.execute("SELECT id, ciphertext FROM stored_responses").fetchall()
    assert [row[0] for row in rows] == [kept.id]
    assert b"secret-words-123" not in rows[0][1]


@pytest.mark.parametrize("provider", ["openai", "groq"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_failover_to_the_platform_key(
    gateway: Gateway, client: openai.OpenAI, fake: FakeUpstream, provider: str, stream: bool
) -> None:
    """A tenant key that is rate-limited fails over to the platform key, which pays."""
    gateway.add_key("acme", provider, TENANT_KEYS[provider])
    fake.script(provider, Scripted.rate_limited(provider))
    if stream:
        with client.responses.stream(model=MODELS[provider], input="Hello?") as events:
            list(events)
            response = events.get_final_response()
    else:
        response = client.responses.create(model=MODELS[provider], input="Hello?")
    meta = response.model_extra["xantly_metadata"]  # type: ignore[index]
    assert (meta["cost_attribution"], meta["attempts"]) == ("xantly", 2)
    keys = [r.api_key for r in fake.requests_for(provider)]
    assert keys == [TENANT_KEYS[provider], PLATFORM_KEYS[provider]]
    (row,) = ledger(gateway)
    assert (row["attribution"], row["attempts"], row["endpoint"]) == ("xantly", 2, "/responses")


def test_parameters_a_provider_cannot_honour_are_400_naming_them(
    client: openai.OpenAI, fake: FakeUpstream
) -> None:
    """Hosted tools on groq: a 400 naming the parameter, and no upstream call."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model=MODELS["groq"],
            input="Hi",
            tools=[{"type": "web_search"}],  # type: ignore[list-item]
        )
    assert caught.value.body["param"] == "tools[0].type"  # type: ignore[index]
    assert fake.requests == []


def test_text_format_json_schema_reaches_chat(client: openai.OpenAI, fake: FakeUpstream) -> None:
    """text.format json_schema becomes chat's response_format on a translated provider."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    client.responses.create(
        model=MODELS["groq"],
        input="Hi",
        text={"format": {"type": "json_schema", "name": "thing", "schema": schema}},
    )
    sent = fake.requests_for("groq")[0].json
    assert sent["response_format"]["json_schema"]["name"] == "thing"


def test_models_retrieve_answers_a_listed_id(client: openai.OpenAI) -> None:
    """models.retrieve answers the ids models.list gives, and 404 for others."""
    listed = {model.id for model in client.models.list()}
    assert "openai/gpt-4o" in listed
    model = client.models.retrieve("openai/gpt-4o")
    assert model.id == "openai/gpt-4o"
    assert model.model_extra["xantly_metadata"]["provider_used"] == "openai"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("openai/no-such-model")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_cut_stream_ends_with_response_failed(
    gateway: Gateway, fake: FakeUpstream, provider: str
) -> None:
    """An upstream that drops the stream mid-way: response.failed with the metadata, a 502 row."""
    fake.script(provider, Scripted(cut_after=2))
    with (
        gateway.client("acme") as http,
        http.stream(
            "POST", "/v1/responses", json={"model": MODELS[provider], "input": "Hi", "stream": True}
        ) as response,
    ):
        frames = [line for line in response.iter_lines() if line.startswith("data: ")]
    last = json.loads(frames[-1].removeprefix("data: "))
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    assert last["response"]["xantly_metadata"]["provider_used"] == provider
    (row,) = ledger(gateway)
    assert (row["status_code"], row["error_type"]) == (502, "stream_interrupted")
    with pytest.raises(openai.NotFoundError):
        gateway.openai("acme").responses.retrieve(last["response"]["id"])

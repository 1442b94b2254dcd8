"""Anthropic's Messages API through the gateway, seen from the official anthropic SDK.

anthropic is served natively (the fake's ``/v1/messages``); openai and groq through chat
completions. Every test runs on real uvicorn against the fake upstream.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from byok_middleware.testing import FakeUpstream, Scripted
from tests.conftest import Gateway
from tests.test_responses_e2e import PLATFORM_KEYS, TENANT_KEYS, ledger, list_price

MODELS = {
    "anthropic": "claude-sonnet-4-5",  # a bare claude-* name means anthropic
    "openai": "openai/gpt-4o",
    "groq": "groq/llama-3.3-70b-versatile",
}
UPSTREAM_PATHS = {
    "anthropic": "/v1/messages",
    "openai": "/chat/completions",
    "groq": "/chat/completions",
}
PROVIDERS = list(MODELS)
MESSAGES: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "description": "Weather of a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture
def gateway(start_gateway: Any) -> Gateway:
    gw: Gateway = start_gateway(platform_keys=PLATFORM_KEYS)
    return gw


@pytest.fixture
def client(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    """The anthropic SDK pointed at the gateway, the gateway key sent as x-api-key."""
    with anthropic.Anthropic(
        base_url=gateway.url, api_key=gateway.tenant("acme"), max_retries=0, timeout=30
    ) as sdk:
        yield sdk


def text_of(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("byok", [True, False], ids=["byok", "platform"])
def test_create_answers_with_metadata_and_list_price(
    gateway: Gateway,
    client: anthropic.Anthropic,
    fake: FakeUpstream,
    provider: str,
    byok: bool,
) -> None:
    """messages.create works on each provider; the tenant key or the platform key pays."""
    key = gateway.add_key("acme", provider, TENANT_KEYS[provider]) if byok else None
    message = client.messages.create(
        model=MODELS[provider], max_tokens=256, system="Be brief.", messages=MESSAGES
    )
    assert text_of(message) == f"Hello from the fake {provider}."
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (100, 20)
    meta = message.model_extra["xantly_metadata"]  # type: ignore[index]
    assert meta["provider_used"] == provider
    assert meta["cost_attribution"] == ("byok" if byok else "xantly")
    assert meta["key_id"] == (key["id"] if key else None)
    assert meta["cost_usd"] == pytest.approx(list_price(provider))
    (received,) = fake.requests_for(provider)
    assert received.path == UPSTREAM_PATHS[provider]
    assert received.api_key == (TENANT_KEYS if byok else PLATFORM_KEYS)[provider]
    (row,) = ledger(gateway)
    assert (row["endpoint"], row["attribution"]) == ("/messages", "byok" if byok else "xantly")
    assert float(row["cost_usd"]) == pytest.approx(list_price(provider))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_stream_and_get_final_message(
    gateway: Gateway, client: anthropic.Anthropic, provider: str
) -> None:
    """messages.stream yields Anthropic's events; message_delta carries usage and metadata."""
    gateway.add_key("acme", provider, TENANT_KEYS[provider])
    with client.messages.stream(
        model=MODELS[provider], max_tokens=256, messages=MESSAGES
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    names = [event.type for event in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert "content_block_delta" in names
    assert text_of(final) == f"Hello from the fake {provider}."
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 20
    delta = next(event for event in events if event.type == "message_delta")
    meta = delta.model_extra["xantly_metadata"]  # type: ignore[index]
    assert (meta["provider_used"], meta["cost_attribution"]) == (provider, "byok")
    assert meta["cost_usd"] == pytest.approx(list_price(provider))
    (row,) = ledger(gateway)
    assert (row["endpoint"], row["status_code"]) == ("/messages", 200)
    assert float(row["cost_usd"]) == pytest.approx(list_price(provider))


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_tool_use_and_tool_result_round_trip(
    client: anthropic.Anthropic, fake: FakeUpstream, provider: str, stream: bool
) -> None:
    """A tool_use block comes back with its input; the tool_result continues the exchange."""
    if stream:
        with client.messages.stream(
            model=MODELS[provider], max_tokens=256, messages=MESSAGES, tools=TOOLS
        ) as events:
            list(events)
            first = events.get_final_message()
    else:
        first = client.messages.create(
            model=MODELS[provider], max_tokens=256, messages=MESSAGES, tools=TOOLS
        )
    (use,) = [block for block in first.content if block.type == "tool_use"]
    assert first.stop_reason == "tool_use"
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    second = client.messages.create(
        model=MODELS[provider],
        max_tokens=256,
        messages=[
            *MESSAGES,
            {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
            },
        ],
    )
    assert text_of(second) == f"Hello from the fake {provider}."
    sent = fake.requests_for(provider)[-1].json
    if provider != "anthropic":
        roles = [m["role"] for m in sent["messages"]]
        assert roles == ["user", "assistant", "tool"]
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": use.id, "content": "sunny"}
        arguments = sent["messages"][1]["tool_calls"][0]["function"]["arguments"]
        assert json.loads(arguments) == {"city": "Paris"}


def test_count_tokens_native_and_estimated(client: anthropic.Anthropic, fake: FakeUpstream) -> None:
    """count_tokens is Anthropic's own count for claude; an estimate (said so) for others."""
    fake.script("anthropic", Scripted(json={"input_tokens": 42}))
    counted = client.messages.count_tokens(model=MODELS["anthropic"], messages=MESSAGES)
    assert counted.input_tokens == 42
    (received,) = fake.requests_for("anthropic")
    assert received.path == "/v1/messages/count_tokens"
    estimated = client.messages.count_tokens(model=MODELS["groq"], messages=MESSAGES)
    assert estimated.input_tokens > 0
    assert estimated.model_extra["estimated"] is True  # type: ignore[index]
    assert fake.requests_for("groq") == []


def test_anthropic_beta_is_forwarded(client: anthropic.Anthropic, fake: FakeUpstream) -> None:
    """The client's anthropic-beta header reaches Anthropic; the version is 2023-06-01."""
    client.messages.create(
        model=MODELS["anthropic"],
        max_tokens=64,
        messages=MESSAGES,
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    (received,) = fake.requests_for("anthropic")
    assert received.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert received.headers["anthropic-version"] == "2023-06-01"


@pytest.mark.parametrize("provider", ["anthropic", "groq"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_failover_to_the_platform_key(
    gateway: Gateway,
    client: anthropic.Anthropic,
    fake: FakeUpstream,
    provider: str,
    stream: bool,
) -> None:
    """A rate-limited tenant key fails over to the platform key, which pays."""
    gateway.add_key("acme", provider, TENANT_KEYS[provider])
    fake.script(provider, Scripted.rate_limited(provider))
    if stream:
        with client.messages.stream(
            model=MODELS[provider], max_tokens=64, messages=MESSAGES
        ) as events:
            delta = next(e for e in events if e.type == "message_delta")
            list(events)
        meta = delta.model_extra["xantly_metadata"]  # type: ignore[index]
    else:
        message = client.messages.create(model=MODELS[provider], max_tokens=64, messages=MESSAGES)
        meta = message.model_extra["xantly_metadata"]  # type: ignore[index]
    assert (meta["cost_attribution"], meta["attempts"]) == ("xantly", 2)
    keys = [r.api_key for r in fake.requests_for(provider)]
    assert keys == [TENANT_KEYS[provider], PLATFORM_KEYS[provider]]
    (row,) = ledger(gateway)
    assert (row["attribution"], row["attempts"], row["endpoint"]) == ("xantly", 2, "/messages")


def test_errors_take_anthropics_shape(
    gateway: Gateway, client: anthropic.Anthropic, fake: FakeUpstream
) -> None:
    """Bad auth, an unsupported parameter and an unknown model are Anthropic-shaped errors."""
    with (
        anthropic.Anthropic(base_url=gateway.url, api_key="byok_wrong", max_retries=0) as bad,
        pytest.raises(anthropic.AuthenticationError) as denied,
    ):
        bad.messages.create(model=MODELS["groq"], max_tokens=64, messages=MESSAGES)
    assert denied.value.body["type"] == "error"  # type: ignore[index]
    assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model=MODELS["groq"], max_tokens=64, messages=MESSAGES, extra_body={"top_k": 5}
        )
    error = refused.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error" and "top_k" in error["message"]
    with pytest.raises(anthropic.BadRequestError) as unknown:
        client.messages.create(model="no-such-model", max_tokens=64, messages=MESSAGES)
    assert unknown.value.body["type"] == "error"  # type: ignore[index]
    assert fake.requests == []


def test_bearer_auth_and_anthropic_base_url(
    gateway: Gateway, fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tool configured only by ANTHROPIC_BASE_URL and a token works (Authorization: Bearer)."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", gateway.url)
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", gateway.tenant("acme"))
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with anthropic.Anthropic(max_retries=0) as sdk:
        message = sdk.messages.create(model=MODELS["anthropic"], max_tokens=64, messages=MESSAGES)
    assert text_of(message) == "Hello from the fake anthropic."


def test_plain_http_metadata_headers(gateway: Gateway) -> None:
    """The Messages answer has the same x-byok-* headers as chat."""
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        response = http.post(
            "/v1/messages",
            headers={"x-api-key": gateway.tenant("acme"), "anthropic-version": "2023-06-01"},
            json={"model": MODELS["groq"], "max_tokens": 64, "messages": MESSAGES},
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-byok-provider-used"] == "groq"
    assert response.headers["x-byok-cost-attribution"] == "xantly"
    assert float(response.headers["x-byok-cost-usd"]) == pytest.approx(list_price("groq"))
    assert response.json()["xantly_metadata"]["request_id"] == response.headers["x-byok-request-id"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_cut_stream_ends_with_an_error_event(
    gateway: Gateway, fake: FakeUpstream, provider: str
) -> None:
    """An upstream that drops the stream mid-way: an Anthropic error event with the metadata."""
    fake.script(provider, Scripted(cut_after=2))
    body = {"model": MODELS[provider], "max_tokens": 64, "messages": MESSAGES, "stream": True}
    headers = {"x-api-key": gateway.tenant("acme")}
    with (
        httpx.Client(base_url=gateway.url, timeout=30) as http,
        http.stream("POST", "/v1/messages", json=body, headers=headers) as response,
    ):
        lines = list(response.iter_lines())
    events = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert events[0] == "message_start" and events[-1] == "error"
    last = json.loads([line for line in lines if line.startswith("data: ")][-1][6:])
    assert last["type"] == "error" and last["error"]["type"] == "api_error"
    assert last["xantly_metadata"]["provider_used"] == provider
    (row,) = ledger(gateway)
    assert (row["status_code"], row["error_type"]) == (502, "stream_interrupted")


def test_an_anthropic_error_event_mid_stream_is_relayed(
    client: anthropic.Anthropic, fake: FakeUpstream
) -> None:
    """Anthropic's own error event mid-stream reaches the SDK as an APIStatusError."""
    fake.script("anthropic", Scripted(anthropic_error_after=1))
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(
            model=MODELS["anthropic"], max_tokens=64, messages=MESSAGES
        ) as events,
    ):
        list(events)
    assert "overloaded" in str(caught.value.body)

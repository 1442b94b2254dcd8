"""Anthropic through the native Messages API, seen from the openai SDK."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from byok_middleware.testing import FakeUpstream, Scripted
from tests.conftest import Gateway

ANTHROPIC_KEY = "sk-ant-tenant-3333333333333333333333333"
PLATFORM_ANTHROPIC_KEY = "sk-ant-platform-44444444444444444444444"
MODEL = "anthropic/claude-sonnet-4-5"
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
# claude-sonnet-4-5: $3 input, $0.30 cache read, $3.75 cache write, $15 output per 1M tokens.
USAGE = {
    "input_tokens": 100,
    "output_tokens": 20,
    "cache_creation_input_tokens": 1000,
    "cache_read_input_tokens": 2000,
}
COST = (100 * 3 + 2000 * 0.3 + 1000 * 3.75 + 20 * 15) / 1e6


@pytest.fixture
def gateway(start_gateway: Any, fake: FakeUpstream) -> Gateway:
    fake.anthropic_usage = dict(USAGE)
    gw: Gateway = start_gateway(platform_keys={"anthropic": PLATFORM_ANTHROPIC_KEY})
    return gw


def test_plain_chat_byok_with_cache_tokens(gateway: Gateway, fake: FakeUpstream) -> None:
    """The tenant's Anthropic key pays; usage counts cache tokens; cost prices them."""
    key = gateway.add_key("acme", "anthropic", ANTHROPIC_KEY)
    completion = gateway.openai("acme").chat.completions.create(model=MODEL, messages=MESSAGES)
    meta = completion.model_extra["xantly_metadata"]
    assert (meta["cost_attribution"], meta["key_id"]) == ("byok", key["id"])
    assert meta["cost_usd"] == pytest.approx(COST)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 3100
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 2000
    (received,) = fake.requests_for("anthropic")
    assert received.path == "/v1/messages"
    assert received.headers["x-api-key"] == ANTHROPIC_KEY
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in received.headers
    assert received.json is not None and received.json["model"] == "claude-sonnet-4-5"
    assert received.json["max_tokens"] > 0


def test_platform_key_when_tenant_has_none(gateway: Gateway, fake: FakeUpstream) -> None:
    """Without a tenant key the platform's Anthropic key serves, attribution xantly."""
    completion = gateway.openai("acme").chat.completions.create(model=MODEL, messages=MESSAGES)
    assert completion.model_extra["xantly_metadata"]["cost_attribution"] == "xantly"
    assert fake.requests_for("anthropic")[0].headers["x-api-key"] == PLATFORM_ANTHROPIC_KEY


def test_streamed_tool_call_assembles_like_the_plain_one(gateway: Gateway) -> None:
    """The SDK assembles the streamed tool call into the same result as the plain call."""
    gateway.add_key("acme", "anthropic", ANTHROPIC_KEY)
    client = gateway.openai("acme")
    plain = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS)
    with client.chat.completions.stream(model=MODEL, messages=MESSAGES, tools=TOOLS) as stream:
        for _ in stream:
            pass
        streamed = stream.get_final_completion()
    plain_call = plain.choices[0].message.tool_calls[0]  # type: ignore[index]
    streamed_call = streamed.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert plain.choices[0].finish_reason == streamed.choices[0].finish_reason == "tool_calls"
    assert plain_call.function.name == streamed_call.function.name == "get_weather"  # type: ignore[union-attr]
    assert (
        json.loads(plain_call.function.arguments)
        == json.loads(  # type: ignore[union-attr]
            streamed_call.function.arguments  # type: ignore[union-attr]
        )
        == {"city": "Paris"}
    )
    assert plain.choices[0].message.content == streamed.choices[0].message.content


def test_stream_usage_and_metadata(gateway: Gateway) -> None:
    """include_usage gives one usage chunk with cache tokens; the last event has the metadata."""
    gateway.add_key("acme", "anthropic", ANTHROPIC_KEY)
    chunks = list(
        gateway.openai("acme").chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1 and with_usage[0].usage is not None
    assert with_usage[0].usage.prompt_tokens == 3100
    meta = chunks[-1].model_extra["xantly_metadata"]
    assert meta["cost_usd"] == pytest.approx(COST)
    assert meta["provider_used"] == "anthropic"


def test_overloaded_529_fails_over_then_maps_to_503(gateway: Gateway, fake: FakeUpstream) -> None:
    """529 from the tenant key tries the platform key; two 529s reach the client as 503."""
    gateway.add_key("acme", "anthropic", ANTHROPIC_KEY)
    fake.script("anthropic", Scripted.overloaded(), Scripted.overloaded())
    with pytest.raises(openai.InternalServerError) as caught:
        gateway.openai("acme").chat.completions.create(model=MODEL, messages=MESSAGES)
    assert caught.value.status_code == 503
    keys = [r.headers["x-api-key"] for r in fake.requests_for("anthropic")]
    assert keys == [ANTHROPIC_KEY, PLATFORM_ANTHROPIC_KEY]


def test_error_after_200_becomes_an_error_event(gateway: Gateway, fake: FakeUpstream) -> None:
    """A mid-stream Anthropic error reaches the SDK as an APIError, not a clean end."""
    gateway.add_key("acme", "anthropic", ANTHROPIC_KEY)
    fake.script("anthropic", Scripted(stream=True, anthropic_error_after=2))
    stream = gateway.openai("acme").chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_unsupported_parameter_is_a_400_before_upstream(
    gateway: Gateway, fake: FakeUpstream
) -> None:
    """n>1 cannot be honoured by Anthropic: a 400 naming the param, nothing sent upstream."""
    gateway.add_key("acme", "anthropic", ANTHROPIC_KEY)
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.openai("acme").chat.completions.create(model=MODEL, messages=MESSAGES, n=2)
    assert caught.value.param == "n"
    assert fake.requests_for("anthropic") == []

"""The sans-I/O OpenAI <-> Anthropic Messages translation: requests, responses, streams, errors."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from byok_middleware.errors import InvalidRequest, UpstreamError
from byok_middleware.providers.anthropic import (
    ANTHROPIC_VERSION,
    DEFAULT_MAX_TOKENS,
    StreamTranslator,
    map_error,
    openai_model_list,
    openai_rate_limit_headers,
    to_chat_completion,
    to_messages_request,
    to_openai_usage,
    upstream_error,
    uses_json_tool,
)

MODEL = "claude-sonnet-4-5"
LABEL = "anthropic/claude-sonnet-4-5"
CREATED = 1_700_000_000
HI = [{"role": "user", "content": "Hi"}]
HI_BLOCKS = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
WITH_TOOL = {"tools": [WEATHER_TOOL]}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}}


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("messages", HI)
    return to_messages_request(body, MODEL)


# --- requests -------------------------------------------------------------------------------


def test_minimal_request() -> None:
    """A bare user message becomes a body with the upstream model and the default max_tokens."""
    assert translate(model=LABEL) == {
        "model": MODEL,
        "messages": HI_BLOCKS,
        "max_tokens": DEFAULT_MAX_TOKENS,
    }
    assert ANTHROPIC_VERSION == "2023-06-01"


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"max_tokens": 100}, {"max_tokens": 100}),
        ({"max_completion_tokens": 50, "max_tokens": 100}, {"max_tokens": 50}),
        ({"stop": "END"}, {"stop_sequences": ["END"]}),
        ({"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}),
        ({"stop": []}, {}),
        ({"temperature": 0.7, "top_p": 0.9}, {"temperature": 0.7, "top_p": 0.9}),
        ({"temperature": 1}, {"temperature": 1}),
        ({"user": "tenant-42"}, {"metadata": {"user_id": "tenant-42"}}),
        ({"user": ""}, {}),
        (
            {"tools": [{**WEATHER, "cache_control": {"type": "ephemeral"}}]},
            {"tools": [{**WEATHER_TOOL, "cache_control": {"type": "ephemeral"}}]},
        ),
        ({"stream": True}, {"stream": True}),
        ({"stream": False}, {"stream": False}),
        (
            {
                "store": True,
                "metadata": {"k": "v"},
                "service_tier": "auto",
                "stream_options": {"include_usage": True},
                "n": 1,
                "logprobs": False,
                "presence_penalty": 0,
                "frequency_penalty": 0.0,
                "modalities": ["text"],
                "response_format": {"type": "text"},
            },
            {},
        ),
        ({"tools": [WEATHER]}, {"tools": [WEATHER_TOOL]}),
        (
            {"tools": [{"type": "function", "function": {"name": "now"}}]},
            {"tools": [{"name": "now", "input_schema": {"type": "object", "properties": {}}}]},
        ),
        (
            {"tools": [WEATHER], "tool_choice": "auto"},
            {**WITH_TOOL, "tool_choice": {"type": "auto"}},
        ),
        (
            {"tools": [WEATHER], "tool_choice": "required"},
            {**WITH_TOOL, "tool_choice": {"type": "any"}},
        ),
        (
            {"tools": [WEATHER], "tool_choice": "none"},
            {**WITH_TOOL, "tool_choice": {"type": "none"}},
        ),
        (
            {
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            },
            {**WITH_TOOL, "tool_choice": {"type": "tool", "name": "get_weather"}},
        ),
        (
            {"tools": [WEATHER], "parallel_tool_calls": False},
            {**WITH_TOOL, "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
        ),
        (
            {"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False},
            {**WITH_TOOL, "tool_choice": {"type": "any", "disable_parallel_tool_use": True}},
        ),
        (
            {"tools": [WEATHER], "tool_choice": "none", "parallel_tool_calls": False},
            {**WITH_TOOL, "tool_choice": {"type": "none"}},
        ),
        ({"tools": [WEATHER], "parallel_tool_calls": True}, {"tools": [WEATHER_TOOL]}),
        ({"tool_choice": "none"}, {}),
        (
            {"reasoning_effort": "low"},
            {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 4096 + 1024},
        ),
        (
            {"reasoning_effort": "medium"},
            {"thinking": {"type": "enabled", "budget_tokens": 4096}, "max_tokens": 4096 + 4096},
        ),
        (
            {"reasoning_effort": "high"},
            {"thinking": {"type": "enabled", "budget_tokens": 16384}, "max_tokens": 4096 + 16384},
        ),
        (
            {"reasoning_effort": "high", "max_completion_tokens": 2000},
            {"thinking": {"type": "enabled", "budget_tokens": 1999}, "max_tokens": 2000},
        ),
        (
            {"reasoning_effort": "low", "max_tokens": 30000, "temperature": 1, "top_p": 0.95},
            {
                "thinking": {"type": "enabled", "budget_tokens": 1024},
                "max_tokens": 30000,
                "temperature": 1,
                "top_p": 0.95,
            },
        ),
        ({"reasoning_effort": "none"}, {}),
    ],
)
def test_parameter_mapping(params: dict[str, Any], expected: dict[str, Any]) -> None:
    """Each supported OpenAI parameter maps to its Anthropic field; harmless ones are ignored."""
    out = translate(**params)
    base = {"model": MODEL, "messages": HI_BLOCKS, "max_tokens": DEFAULT_MAX_TOKENS}
    assert out == {**base, **expected}


def test_default_max_tokens_is_injectable() -> None:
    """The default max_tokens used when the client sends none is a parameter."""
    assert to_messages_request({"messages": HI}, MODEL, default_max_tokens=512)["max_tokens"] == 512


def test_system_and_developer_messages_are_hoisted() -> None:
    """System and developer messages, wherever they are, become top-level text blocks in order."""
    out = translate(
        messages=[
            {"role": "system", "content": "Be terse."},
            {
                "role": "developer",
                "content": [
                    {
                        "type": "text",
                        "text": "Long context",
                        "cache_control": {"type": "ephemeral"},
                    },
                    {"type": "text", "text": ""},
                ],
            },
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": [{"type": "text", "text": "again"}]},
        ]
    )
    assert out["system"] == [
        {"type": "text", "text": "Be terse."},
        {"type": "text", "text": "Long context", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Answer in French."},
    ]
    # With the system message gone, the two user turns are adjacent and merge.
    assert out["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "again"}],
        }
    ]


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_multi_turn_tool_conversation() -> None:
    """Tool calls become tool_use blocks; consecutive tool results and the next user text share
    one user message, so roles alternate across several tool turns."""
    out = translate(
        tools=[WEATHER],
        messages=[
            {"role": "system", "content": "You know the weather."},
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "Checking both.",
                "tool_calls": [
                    call("toolu_1", "get_weather", '{"city": "Paris"}'),
                    call("toolu_2", "get_weather", '{"city": "Rome"}'),
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {
                "role": "tool",
                "tool_call_id": "toolu_2",
                "content": [{"type": "text", "text": "25C"}],
            },
            {"role": "user", "content": "And Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [call("toolu_3", "get_weather", "")],
            },
            {"role": "tool", "tool_call_id": "toolu_3", "content": ""},
            {"role": "assistant", "content": "Oslo: unknown."},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "Thanks"},
        ],
    )
    assert out["system"] == [{"type": "text", "text": "You know the weather."}]
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "25C"}],
                },
                {"type": "text", "text": "And Oslo?"},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_3", "name": "get_weather", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_3"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Oslo: unknown."}]},
        {"role": "user", "content": [{"type": "text", "text": "Thanks"}]},
    ]
    assert out["tools"] == [WEATHER_TOOL]


def test_request_body_is_not_modified() -> None:
    """Translating leaves the client's body untouched."""
    body: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "S"}]},
            {"role": "user", "content": "Go"},
            {"role": "assistant", "tool_calls": [call("t1", "get_weather", '{"city": "Oslo"}')]},
            {"role": "tool", "tool_call_id": "t1", "content": "ok"},
        ],
        "tools": [WEATHER],
        "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}},
    }
    snapshot = copy.deepcopy(body)
    out = to_messages_request(body, MODEL)
    out["tools"][0]["input_schema"]["extra"] = True
    out["tools"][1]["input_schema"]["extra"] = True
    assert body == snapshot


def test_tool_results_come_first_in_a_merged_user_message() -> None:
    """Anthropic wants tool results before any text in a user message; order is otherwise kept."""
    out = translate(
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Go"},
            {"role": "assistant", "tool_calls": [call("t1", "get_weather", "{}")]},
            {"role": "user", "content": "(note)"},
            {"role": "tool", "tool_call_id": "t1", "content": "ok"},
        ],
    )
    assert [b["type"] for b in out["messages"][-1]["content"]] == ["tool_result", "text"]


def test_tool_history_without_tools_declares_them() -> None:
    """A history with tool calls but no 'tools' declares the used tools and forbids new calls."""
    out = translate(
        messages=[
            {"role": "user", "content": "Go"},
            {"role": "assistant", "tool_calls": [call("t1", "lookup", '{"q": 1}')]},
            {"role": "tool", "tool_call_id": "t1", "content": "found"},
        ]
    )
    assert out["tools"] == [
        {"name": "lookup", "input_schema": {"type": "object", "properties": {}}}
    ]
    assert out["tool_choice"] == {"type": "none"}


@pytest.mark.parametrize(
    ("part", "block"),
    [
        (
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
            },
        ),
        (
            {
                "type": "image_url",
                "image_url": {"url": "data:image/jpg;base64,/9j/4AAQ", "detail": "low"},
            },
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"},
            },
        ),
        (
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.webp"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.webp"}},
        ),
        (
            {
                "type": "image_url",
                "image_url": {"url": "http://example.com/a.gif"},
                "cache_control": {"type": "ephemeral"},
            },
            {
                "type": "image",
                "source": {"type": "url", "url": "http://example.com/a.gif"},
                "cache_control": {"type": "ephemeral"},
            },
        ),
        (
            {
                "type": "file",
                "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBER"},
            },
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"},
            },
        ),
    ],
)
def test_image_and_file_parts(part: dict[str, Any], block: dict[str, Any]) -> None:
    """Base64 data URLs become base64 sources, http(s) URLs become url sources."""
    out = translate(messages=[{"role": "user", "content": [{"type": "text", "text": "See"}, part]}])
    assert out["messages"][0]["content"] == [{"type": "text", "text": "See"}, block]


@pytest.mark.parametrize(
    ("params", "tools", "tool_choice"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "a", "schema": SCHEMA},
                }
            },
            ["json_response"],
            {"type": "tool", "name": "json_response"},
        ),
        (
            {"response_format": {"type": "json_object"}},
            ["json_response"],
            {"type": "tool", "name": "json_response"},
        ),
        (
            {
                "tools": [WEATHER],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "a", "schema": SCHEMA},
                },
            },
            ["get_weather", "json_response"],
            {"type": "any"},
        ),
        (
            {
                "tools": [WEATHER],
                "tool_choice": "none",
                "response_format": {"type": "json_object"},
            },
            ["get_weather", "json_response"],
            {"type": "tool", "name": "json_response"},
        ),
        (
            {
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "response_format": {"type": "json_object"},
            },
            ["get_weather", "json_response"],
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_response_format_uses_a_forced_json_tool(
    params: dict[str, Any], tools: list[str], tool_choice: dict[str, Any]
) -> None:
    """JSON response formats add the json_response tool and make the model answer through it."""
    out = translate(**params)
    assert [tool["name"] for tool in out["tools"]] == tools
    assert out["tool_choice"] == tool_choice
    json_tool = out["tools"][-1]
    schema = SCHEMA if params["response_format"]["type"] == "json_schema" else {"type": "object"}
    assert json_tool["input_schema"] == schema
    assert uses_json_tool(params)


@pytest.mark.parametrize(
    "request_body",
    [{}, {"response_format": {"type": "text"}}, {"response_format": None}, {"tools": [WEATHER]}],
)
def test_uses_json_tool_is_false_without_json_format(request_body: dict[str, Any]) -> None:
    """Only a JSON response_format turns json_mode on."""
    assert not uses_json_tool(request_body)


def test_reasoning_is_dropped_inside_a_tool_loop() -> None:
    """Mid tool loop the signed thinking blocks cannot be sent back, so thinking is left off."""
    out = translate(
        tools=[WEATHER],
        reasoning_effort="high",
        messages=[
            {"role": "user", "content": "Go"},
            {"role": "assistant", "tool_calls": [call("t1", "get_weather", "{}")]},
            {"role": "tool", "tool_call_id": "t1", "content": "ok"},
        ],
    )
    assert "thinking" not in out
    assert out["max_tokens"] == DEFAULT_MAX_TOKENS


def user(content: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}]}


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"frequency_penalty": -1}, "frequency_penalty"),
        ({"seed": 7}, "seed"),
        ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"temperature": 1.5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"top_p": 2}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": "10"}, "max_completion_tokens"),
        ({"stop": "  "}, "stop"),
        ({"stop": ["END", "\n"]}, "stop"),
        ({"stop": 3}, "stop"),
        ({"user": 42}, "user"),
        ({"tools": {"name": "x"}}, "tools"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "a", "schema": {"type": "array"}},
                }
            },
            "response_format",
        ),
        (
            {
                "tools": [{"type": "function", "function": {"name": "json_response"}}],
                "response_format": {"type": "json_object"},
            },
            "tools",
        ),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"stream": "yes"}, "stream"),
        (user({"type": "text", "text": "Hi"}), "messages[0].content"),
        ({"tools": ["get_weather"]}, "tools[0]"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": [WEATHER], "tool_choice": {"type": "function"}}, "tool_choice"),
        (
            {"messages": [*HI, {"role": "assistant", "tool_calls": {"id": "t"}}]},
            "messages[1].tool_calls",
        ),
        (
            {"messages": [*HI, {"role": "assistant", "tool_calls": [call("t", 5, "{}")]}]},  # type: ignore[arg-type]
            "messages[1].tool_calls[0].function",
        ),
        ({"modalities": 5}, "modalities"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": "x"}}},
            "response_format",
        ),
        ({"reasoning_effort": "low", "max_tokens": 1024}, "max_tokens"),
        ({"reasoning_effort": "low", "temperature": 0.2}, "temperature"),
        ({"reasoning_effort": "low", "top_p": 0.5}, "top_p"),
        ({"reasoning_effort": "low", "tools": [WEATHER], "tool_choice": "required"}, "tool_choice"),
        (
            {"reasoning_effort": "low", "response_format": {"type": "json_object"}},
            "response_format",
        ),
        ({"messages": []}, "messages"),
        ({"messages": "Hi"}, "messages"),
        ({"messages": [{"role": "system", "content": "only system"}]}, "messages"),
        ({"messages": ["Hi"]}, "messages[0]"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        (user(""), "messages[0].content"),
        (user(None), "messages[0].content"),
        (user([]), "messages[0].content"),
        ({"messages": [{"role": "system", "content": ""}, *HI]}, "messages[0].content"),
        (
            {"messages": [{"role": "system", "content": [{"type": "image_url"}]}, *HI]},
            "messages[0].content[0].type",
        ),
        (user([{"type": "input_audio", "input_audio": {}}]), "messages[0].content[0].type"),
        (user([{"type": "text", "text": 5}]), "messages[0].content[0].text"),
        (
            user([{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}]),
            "messages[0].content[0].image_url.url",
        ),
        (
            user([{"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}]),
            "messages[0].content[0].image_url.url",
        ),
        (user([{"type": "image_url", "image_url": {}}]), "messages[0].content[0].image_url.url"),
        (user([{"type": "file", "file": {"file_id": "file-1"}}]), "messages[0].content[0].file"),
        (
            user([{"type": "file", "file": {"file_data": "data:text/csv;base64,YQ=="}}]),
            "messages[0].content[0].file.file_data",
        ),
        (
            {"messages": [*HI, {"role": "assistant", "tool_calls": [call("t", "f", "{oops")]}]},
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            {"messages": [*HI, {"role": "assistant", "tool_calls": [call("t", "f", "[1, 2]")]}]},
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            {"messages": [*HI, {"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]},
            "messages[1].tool_calls[0]",
        ),
        (
            {"messages": [*HI, {"role": "assistant", "function_call": {"name": "f"}}]},
            "messages[1].function_call",
        ),
        ({"messages": [*HI, {"role": "tool", "content": "x"}]}, "messages[1].tool_call_id"),
    ],
)
def test_refusals_name_the_parameter(params: dict[str, Any], param: str) -> None:
    """What Anthropic cannot honour, or what is malformed, is a 400 naming the parameter."""
    with pytest.raises(InvalidRequest) as caught:
        translate(**params)
    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert caught.value.to_dict()["type"] == "invalid_request_error"


# --- responses ------------------------------------------------------------------------------


def message(
    content: list[dict[str, Any]], stop_reason: str | None = "end_turn", **usage: int
) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 7, **usage},
    }


TEXT: dict[str, Any] = {"type": "text", "text": "Hello"}
TOOL: dict[str, Any] = {
    "type": "tool_use",
    "id": "toolu_1",
    "name": "get_weather",
    "input": {"city": "Paris"},
}


@pytest.mark.parametrize(
    ("stop_reason", "content", "finish_reason"),
    [
        ("end_turn", [TEXT], "stop"),
        ("stop_sequence", [TEXT], "stop"),
        ("pause_turn", [TEXT], "stop"),
        ("max_tokens", [TEXT], "length"),
        ("model_context_window_exceeded", [TEXT], "length"),
        ("tool_use", [TEXT, TOOL], "tool_calls"),
        ("refusal", [TEXT], "content_filter"),
        (None, [TEXT], "stop"),
        ("something_new", [TEXT], "stop"),
    ],
)
def test_stop_reasons(
    stop_reason: str | None, content: list[dict[str, Any]], finish_reason: str
) -> None:
    """Every Anthropic stop reason maps to an OpenAI finish_reason."""
    completion = to_chat_completion(message(content, stop_reason), model=LABEL, created=CREATED)
    assert completion["choices"][0]["finish_reason"] == finish_reason
    ChatCompletion.model_validate(completion)


def test_response_with_text_thinking_and_tool_calls() -> None:
    """Text blocks concatenate, thinking becomes reasoning_content, tool_use becomes tool_calls."""
    content = [
        {"type": "thinking", "thinking": "Paris first.", "signature": "sig"},
        {"type": "redacted_thinking", "data": "xx"},
        {"type": "text", "text": "Let me "},
        {"type": "text", "text": "check."},
        TOOL,
        {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
    ]
    completion = to_chat_completion(message(content, "tool_use"), model=LABEL, created=CREATED)
    assert completion == {
        "id": "chatcmpl-msg_01",
        "object": "chat.completion",
        "created": CREATED,
        "model": LABEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "refusal": None,
                    "reasoning_content": "Paris first.",
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        },
                        {
                            "id": "toolu_2",
                            "type": "function",
                            "function": {"name": "now", "arguments": "{}"},
                        },
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 7,
            "total_tokens": 19,
            "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        },
    }


@pytest.mark.parametrize(
    ("content", "expected"),
    [([TOOL], None), ([], ""), ([TEXT], "Hello")],
)
def test_content_is_none_only_beside_tool_calls(
    content: list[dict[str, Any]], expected: str | None
) -> None:
    """message.content is None when there is no text but there are tool calls, else a string."""
    completion = to_chat_completion(message(content), model=LABEL, created=CREATED)
    assert completion["choices"][0]["message"]["content"] == expected


def test_json_mode_returns_the_tool_input_as_content() -> None:
    """With json_mode the json_response tool's input is the content and the finish is 'stop'."""
    json_block = {
        "type": "tool_use",
        "id": "toolu_9",
        "name": "json_response",
        "input": {"answer": 42},
    }
    completion = to_chat_completion(
        message([json_block], "tool_use"), model=LABEL, created=CREATED, json_mode=True
    )
    choice = completion["choices"][0]
    assert json.loads(choice["message"]["content"]) == {"answer": 42}
    assert "tool_calls" not in choice["message"]
    assert choice["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (
            {
                "input_tokens": 10,
                "cache_creation_input_tokens": 4735,
                "cache_read_input_tokens": 100,
                "output_tokens": 255,
            },
            (4845, 255, 5100, 100, 4735),
        ),
        (
            {
                "input_tokens": 3,
                "cache_creation_input_tokens": None,
                "cache_read_input_tokens": None,
                "output_tokens": 1,
            },
            (3, 1, 4, 0, 0),
        ),
        (
            {"input_tokens": 5, "cache_read_input_tokens": 2000, "output_tokens": 9},
            (2005, 9, 2014, 2000, 0),
        ),
        ({}, (0, 0, 0, 0, 0)),
    ],
)
def test_usage_includes_cache_tokens_in_prompt(
    usage: dict[str, Any], expected: tuple[int, ...]
) -> None:
    """prompt_tokens is input + cache writes + cache reads; cached_tokens is the reads."""
    prompt, completion, total, cached, written = expected
    assert to_openai_usage(usage) == {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "prompt_tokens_details": {"cached_tokens": cached, "cache_write_tokens": written},
    }


# --- streaming ------------------------------------------------------------------------------


def pieces(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def events_for(msg: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events Anthropic would send for ``msg``, split into small deltas, with pings."""
    usage = msg["usage"]
    start_usage = {**usage, "output_tokens": 1}
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {**msg, "content": [], "stop_reason": None, "usage": start_usage},
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    for index, block in enumerate(msg["content"]):
        kind = block["type"]
        start: dict[str, Any]
        deltas: list[dict[str, Any]]
        if kind == "text":
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"])]
        elif kind == "thinking":
            start = {"type": "thinking", "thinking": ""}
            deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces(block["thinking"])]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            start = {**block, "input": {}}
            encoded = json.dumps(block["input"]) if block["input"] else ""
            deltas = [{"type": "input_json_delta", "partial_json": ""}]
            deltas += [{"type": "input_json_delta", "partial_json": p} for p in pieces(encoded)]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
        )
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        events.append(("ping", {"type": "ping"}))
    delta = {"stop_reason": msg["stop_reason"], "stop_sequence": None}
    events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def run_stream(
    msg: dict[str, Any], *, include_usage: bool = True, json_mode: bool = False
) -> tuple[StreamTranslator, list[dict[str, Any]]]:
    translator = StreamTranslator(
        model=LABEL, created=CREATED, include_usage=include_usage, json_mode=json_mode
    )
    chunks: list[dict[str, Any]] = []
    for event, data in events_for(msg):
        chunks += translator.feed(event, data)
    return translator, chunks + translator.final_chunks()


def assemble(chunks: list[dict[str, Any]]) -> ChatCompletion:
    """Accumulate chunks exactly as the openai SDK does (its snapshot: the final parse step
    refuses 'length' finishes)."""
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return ChatCompletion.model_validate(state.current_completion_snapshot.model_dump())


def tool_calls(completion: ChatCompletion) -> list[tuple[str, str, str, str]]:
    """(id, type, name, arguments) of each tool call, in order."""
    calls = completion.choices[0].message.tool_calls or []
    return [(c.id, c.type, c.function.name, c.function.arguments) for c in calls]  # type: ignore[union-attr]


CONVERSATION = message(
    [
        {"type": "text", "text": "I'll look up the weather in both cities for you."},
        {
            "type": "tool_use",
            "id": "toolu_01A",
            "name": "get_weather",
            "input": {"city": "Paris", "unit": "celsius"},
        },
        {"type": "tool_use", "id": "toolu_01B", "name": "now", "input": {}},
    ],
    "tool_use",
    cache_creation_input_tokens=4735,
    cache_read_input_tokens=100,
)
THINKING = message(
    [
        {
            "type": "thinking",
            "thinking": "The user greets me; answer politely.",
            "signature": "EqQB",
        },
        {"type": "text", "text": "Hello! How can I help you today?"},
    ],
    "max_tokens",
)


@pytest.mark.parametrize("msg", [CONVERSATION, THINKING, message([TEXT], "stop_sequence")])
def test_streamed_message_assembles_to_the_plain_translation(msg: dict[str, Any]) -> None:
    """Streamed chunks, accumulated like the openai SDK does, equal the non-streamed translation."""
    translator, chunks = run_stream(msg)
    streamed = assemble(chunks)
    plain = ChatCompletion.model_validate(to_chat_completion(msg, model=LABEL, created=CREATED))
    assert streamed.id == plain.id == "chatcmpl-msg_01"
    assert (streamed.model, streamed.created) == (plain.model, plain.created)
    got, want = streamed.choices[0], plain.choices[0]
    assert got.finish_reason == want.finish_reason
    assert (got.message.content or None) == want.message.content
    assert tool_calls(streamed) == tool_calls(plain)
    assert getattr(got.message, "reasoning_content", None) == getattr(
        want.message, "reasoning_content", None
    )
    assert streamed.usage == plain.usage
    assert translator.usage == to_openai_usage(msg["usage"])
    assert translator.finished
    assert not translator.failed


def test_stream_chunk_shapes() -> None:
    """One id for every chunk, a role chunk first, tool calls numbered 0 and 1 (not block
    indices), "{}" for an empty input, usage only on the final choices-less chunk."""
    _, chunks = run_stream(CONVERSATION)
    assert {c["id"] for c in chunks} == {"chatcmpl-msg_01"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    calls = [d for c in chunks[1:-1] for d in c["choices"][0]["delta"].get("tool_calls", [])]
    assert [call["index"] for call in calls if "id" in call] == [0, 1]
    assert {"index": 1, "function": {"arguments": "{}"}} in calls
    assert all("usage" not in c for c in chunks[:-1])
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 12 + 4735 + 100


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    """Without include_usage nothing follows the finish chunk, but usage is still known."""
    translator, chunks = run_stream(CONVERSATION, include_usage=False)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert translator.final_chunks() == []
    assert translator.usage is not None
    assert translator.usage["completion_tokens"] == 7


def test_stream_json_mode_streams_the_tool_input_as_content() -> None:
    """With json_mode the json_response tool's input arrives as content and finishes with stop."""
    msg = message(
        [{"type": "tool_use", "id": "toolu_9", "name": "json_response", "input": {"answer": 42}}],
        "tool_use",
    )
    _, chunks = run_stream(msg, json_mode=True)
    completion = assemble(chunks)
    assert json.loads(completion.choices[0].message.content or "") == {"answer": 42}
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].finish_reason == "stop"


def test_usage_is_cumulative_not_summed() -> None:
    """message_delta usage replaces earlier counts; input counts from message_start are kept."""
    translator = StreamTranslator(model=LABEL, created=CREATED, include_usage=True)
    assert translator.usage is None
    start = {
        "id": "msg_1",
        "usage": {"input_tokens": 20, "cache_read_input_tokens": 5, "output_tokens": 1},
    }
    translator.feed("message_start", {"type": "message_start", "message": start})
    for output in (10, 25):
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": output, "input_tokens": None},
        }
        translator.feed("message_delta", delta)
    assert translator.final_chunks() == []  # not finished yet
    translator.feed("message_stop", {"type": "message_stop"})
    usage = translator.final_chunks()[0]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        25,
        25,
        50,
    )
    assert usage["prompt_tokens_details"]["cached_tokens"] == 5


@pytest.mark.parametrize(
    ("error", "expected_type", "expected_code"),
    [
        ({"type": "overloaded_error", "message": "Overloaded"}, "server_error", "overloaded_error"),
        ({"type": "api_error", "message": "Internal"}, "server_error", None),
        (
            {"type": "rate_limit_error", "message": "Slow down"},
            "rate_limit_error",
            "rate_limit_exceeded",
        ),
        ({"type": "brand_new_error", "message": "?"}, "server_error", "brand_new_error"),
    ],
)
def test_stream_error_event(
    error: dict[str, Any], expected_type: str, expected_code: str | None
) -> None:
    """An error event mid-stream becomes OpenAI's error data event and marks the stream failed."""
    translator = StreamTranslator(model=LABEL, created=CREATED, include_usage=True)
    translator.feed(
        "message_start", {"type": "message_start", "message": {"id": "msg_1", "usage": {}}}
    )
    chunks = translator.feed("error", {"type": "error", "error": error})
    assert chunks == [
        {
            "error": {
                "message": error["message"],
                "type": expected_type,
                "param": None,
                "code": expected_code,
            }
        }
    ]
    assert translator.failed
    assert not translator.finished
    assert translator.final_chunks() == []


@pytest.mark.parametrize(
    ("event", "data"),
    [
        ("ping", {"type": "ping"}),
        ("future_event", {"type": "future_event"}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta"}},
        ),
        (
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": ""},
            },
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 3,
                "content_block": {"type": "server_tool_use"},
            },
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 9}),
    ],
)
def test_events_without_openai_counterpart_emit_nothing(event: str, data: dict[str, Any]) -> None:
    """Pings, unknown events and empty or foreign deltas produce no chunk."""
    translator = StreamTranslator(model=LABEL, created=CREATED, include_usage=False)
    assert translator.feed(event, data) == []


@pytest.mark.parametrize(
    ("block", "delta"),
    [
        ({"type": "text", "text": "Hi"}, {"content": "Hi"}),
        ({"type": "thinking", "thinking": "Hm"}, {"reasoning_content": "Hm"}),
    ],
)
def test_text_present_at_block_start_is_emitted(
    block: dict[str, Any], delta: dict[str, Any]
) -> None:
    """A content block that starts with text already in it streams that text."""
    translator = StreamTranslator(model=LABEL, created=CREATED, include_usage=False)
    chunks = translator.feed("content_block_start", {"index": 0, "content_block": block})
    assert [c["choices"][0]["delta"] for c in chunks] == [delta]


def test_tool_input_for_a_foreign_block_is_dropped() -> None:
    """Input JSON for a block that is not a client tool call (a server tool) emits nothing."""
    translator = StreamTranslator(model=LABEL, created=CREATED, include_usage=False)
    start = {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
    translator.feed("content_block_start", {"index": 0, "content_block": start})
    delta = {"type": "input_json_delta", "partial_json": '{"query": "x"}'}
    assert translator.feed("content_block_delta", {"index": 0, "delta": delta}) == []
    assert translator.feed("content_block_stop", {"index": 0}) == []


def test_event_name_falls_back_to_data_type() -> None:
    """An event framed without an `event:` line is recognised by its data type."""
    translator = StreamTranslator(model=LABEL, created=CREATED, include_usage=False)
    chunks = translator.feed(
        "message", {"type": "message_start", "message": {"id": "msg_7", "usage": {}}}
    )
    assert chunks[0]["id"] == "chatcmpl-msg_7"


# --- errors, headers, models ----------------------------------------------------------------


def anthropic_error(kind: str, text: str) -> bytes:
    return json.dumps(
        {"type": "error", "error": {"type": kind, "message": text}, "request_id": "req_1"}
    ).encode()


@pytest.mark.parametrize(
    ("status", "body", "expected_status", "expected"),
    [
        (
            400,
            anthropic_error("invalid_request_error", "max_tokens: too big"),
            400,
            {"message": "max_tokens: too big", "type": "invalid_request_error", "code": None},
        ),
        (
            401,
            anthropic_error("authentication_error", "invalid x-api-key"),
            401,
            {
                "message": "The provider rejected the API key (Anthropic: authentication_error).",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            },
        ),
        (
            403,
            anthropic_error("permission_error", "No access"),
            403,
            {"type": "permission_error", "code": None},
        ),
        (
            404,
            anthropic_error("not_found_error", "model: x"),
            404,
            {"type": "not_found_error", "code": "not_found"},
        ),
        (
            429,
            anthropic_error("rate_limit_error", "Slow down"),
            429,
            {"message": "Slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"},
        ),
        (
            402,
            anthropic_error("billing_error", "No credit"),
            402,
            {"type": "insufficient_quota", "code": "insufficient_quota"},
        ),
        (
            500,
            anthropic_error("api_error", "Internal"),
            500,
            {"type": "server_error", "code": None},
        ),
        (
            529,
            anthropic_error("overloaded_error", "Overloaded"),
            503,
            {"message": "Overloaded", "type": "server_error", "code": "overloaded_error"},
        ),
        (
            529,
            b"",
            503,
            {
                "message": "Anthropic returned HTTP 529.",
                "type": "server_error",
                "code": "overloaded_error",
            },
        ),
        (
            502,
            b"<html><body>Bad gateway</body></html>",
            502,
            {
                "message": "Anthropic returned HTTP 502.",
                "type": "server_error",
                "code": None,
            },
        ),
        (
            413,
            b"\xff\xfe not utf-8",
            413,
            {
                "message": "Anthropic returned HTTP 413.",
                "type": "invalid_request_error",
                "code": "request_too_large",
            },
        ),
        (
            409,
            b'{"error": "flat string"}',
            409,
            {
                "message": "Anthropic returned HTTP 409.",
                "type": "invalid_request_error",
                "code": None,
            },
        ),
        (
            418,
            anthropic_error("teapot_error", "short and stout"),
            418,
            {"type": "invalid_request_error", "code": "teapot_error"},
        ),
    ],
)
def test_map_error(
    status: int, body: bytes, expected_status: int, expected: dict[str, Any]
) -> None:
    """Anthropic error responses become OpenAI error objects with a status OpenAI clients know."""
    got_status, error = map_error(status, body)
    assert got_status == expected_status
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] is None
    assert {k: error[k] for k in expected} == expected


def test_upstream_error_is_the_project_exception() -> None:
    """upstream_error renders the mapped error through the project's exception tree."""
    exc = upstream_error(529, anthropic_error("overloaded_error", "Overloaded"))
    assert isinstance(exc, UpstreamError)
    assert exc.status_code == 503
    assert exc.to_dict() == {
        "message": "Overloaded",
        "type": "server_error",
        "param": None,
        "code": "overloaded_error",
    }


NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def rfc3339(delta: timedelta) -> str:
    return (NOW + delta).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (timedelta(seconds=12), "12s"),
        (timedelta(seconds=1, milliseconds=500), "1.5s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(minutes=6), "6m0s"),
        (timedelta(hours=1, seconds=5), "1h0m5s"),
        (timedelta(milliseconds=450), "450ms"),
        (timedelta(seconds=-3), "0ms"),
    ],
)
def test_rate_limit_reset_becomes_a_duration(delta: timedelta, expected: str) -> None:
    """RFC 3339 reset instants become OpenAI-style durations from now."""
    headers = {"anthropic-ratelimit-requests-reset": rfc3339(delta)}
    assert openai_rate_limit_headers(headers, now=NOW) == {"x-ratelimit-reset-requests": expected}


def test_rate_limit_headers_are_renamed() -> None:
    """anthropic-ratelimit-{requests,tokens}-* become x-ratelimit-*-{requests,tokens}."""
    headers = {
        "Anthropic-Ratelimit-Requests-Limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": rfc3339(timedelta(seconds=1)),
        "anthropic-ratelimit-tokens-limit": "40000",
        "anthropic-ratelimit-tokens-remaining": "39000",
        "anthropic-ratelimit-tokens-reset": "not a date",
        "anthropic-ratelimit-input-tokens-limit": "30000",
        "retry-after": "3",
    }
    assert openai_rate_limit_headers(headers, now=NOW.replace(tzinfo=None)) == {
        "x-ratelimit-limit-requests": "50",
        "x-ratelimit-remaining-requests": "49",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "40000",
        "x-ratelimit-remaining-tokens": "39000",
    }


def test_openai_model_list() -> None:
    """Anthropic's model list becomes OpenAI model entries with epoch 'created'."""
    body = {
        "data": [
            {
                "type": "model",
                "id": "claude-sonnet-4-5",
                "display_name": "Claude Sonnet 4.5",
                "created_at": "2025-09-29T00:00:00Z",
            },
            {"type": "model", "id": "claude-undated"},
            {"type": "model"},
        ],
        "has_more": False,
    }
    assert openai_model_list(body) == [
        {
            "id": "claude-sonnet-4-5",
            "object": "model",
            "created": 1759104000,
            "owned_by": "anthropic",
        },
        {"id": "claude-undated", "object": "model", "created": 0, "owned_by": "anthropic"},
    ]

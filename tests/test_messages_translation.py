"""The sans-I/O Anthropic Messages <-> chat completions translation for OpenAI-wire providers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, MessageTokensCount, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import TypeAdapter

from byok_middleware.errors import (
    AuthenticationFailed,
    BYOKError,
    InvalidRequest,
    NotFound,
    RateLimited,
    UpstreamError,
    UpstreamUnavailable,
)
from byok_middleware.providers.anthropic import to_messages_request
from byok_middleware.providers.messages_ingress import to_chat_request
from byok_middleware.providers.messages_ingress_response import (
    anthropic_error,
    anthropic_error_for,
    estimate_input_tokens,
    to_message,
)
from byok_middleware.providers.messages_ingress_stream import MessagesStreamTranslator

LABEL = "groq/llama-3.3-70b-versatile"
HI = [{"role": "user", "content": "Hi"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CHAT_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": WEATHER_TOOL["input_schema"],
        "description": "Weather for a city",
    },
}
EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("model", LABEL)
    body.setdefault("max_tokens", 100)
    body.setdefault("messages", HI)
    return to_chat_request(body)


# --- requests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, {}),
        ({"temperature": 0.3, "top_p": 0.8}, {"temperature": 0.3, "top_p": 0.8}),
        ({"stop_sequences": ["END"]}, {"stop": ["END"]}),
        ({"stop_sequences": []}, {}),
        ({"metadata": {"user_id": "u-1"}}, {"user": "u-1"}),
        ({"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, {"reasoning_effort": "low"}),
        ({"thinking": {"type": "enabled", "budget_tokens": 2000}}, {"reasoning_effort": "medium"}),
        ({"thinking": {"type": "enabled", "budget_tokens": 99999}}, {"reasoning_effort": "high"}),
        ({"thinking": {"type": "disabled"}}, {}),
        ({"tools": [WEATHER_TOOL]}, {"tools": [CHAT_WEATHER]}),
        (
            {"tools": [WEATHER_TOOL], "tool_choice": {"type": "any"}},
            {"tools": [CHAT_WEATHER], "tool_choice": "required"},
        ),
        (
            {"tools": [WEATHER_TOOL], "tool_choice": {"type": "none"}},
            {"tools": [CHAT_WEATHER], "tool_choice": "none"},
        ),
        (
            {
                "tools": [WEATHER_TOOL],
                "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
            },
            {"tools": [CHAT_WEATHER], "tool_choice": "auto", "parallel_tool_calls": False},
        ),
        (
            {"tools": [WEATHER_TOOL], "tool_choice": {"type": "tool", "name": "get_weather"}},
            {
                "tools": [CHAT_WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            },
        ),
    ],
)
def test_request_parameters(params: dict[str, Any], expected: dict[str, Any]) -> None:
    """Each Messages parameter maps to its chat counterpart."""
    out = translate(**params)
    assert out == {"model": LABEL, "messages": HI, "max_tokens": 100, **expected}


def test_max_tokens_field_is_chosen_by_caller() -> None:
    """OpenAI targets can receive max_tokens as max_completion_tokens."""
    body = {"model": LABEL, "max_tokens": 9, "messages": HI}
    assert (
        to_chat_request(body, max_tokens_field="max_completion_tokens")["max_completion_tokens"]
        == 9
    )


def test_conversation_with_tools_images_and_thinking() -> None:
    """System, images, documents, tool_use and tool_result blocks become chat messages in order;
    thinking in the history is dropped; tool results precede the user's words."""
    body = {
        "model": LABEL,
        "max_tokens": 100,
        "system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                    {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": "BB"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "sig"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "P"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Thanks"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "sunny"}],
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "thinking", "thinking": "x", "signature": "s"}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2"}]},
        ],
    }
    assert to_chat_request(body)["messages"] == [
        {"role": "system", "content": "A\n\nB"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,BB"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "P"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "user", "content": "Thanks"},
        {"role": "tool", "tool_call_id": "t2", "content": ""},
    ]


def test_round_trip_through_the_chat_to_anthropic_translation() -> None:
    """Messages -> chat -> Messages (the existing translation) gives back the same conversation."""
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "P"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]
    body = {
        "model": "m",
        "max_tokens": 50,
        "system": "S",
        "messages": messages,
        "tools": [WEATHER_TOOL],
    }
    back = to_messages_request(to_chat_request(body), "m")
    assert back["messages"] == messages
    assert back["system"] == [{"type": "text", "text": "S"}]
    assert back["tools"] == [WEATHER_TOOL] and back["max_tokens"] == 50


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"model": 3}, "model"),
        ({"messages": []}, "messages"),
        ({"top_k": 5}, "top_k"),
        ({"container": "c"}, "container"),
        ({"mcp_servers": []}, "mcp_servers"),
        ({"system": 5}, "system"),
        ({"system": [{"type": "image"}]}, "system.0.type"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "search_result"}]}]},
            "messages.0.content.0",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                    }
                ]
            },
            "messages.0.content.0.source",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [{"type": "image"}],
                            }
                        ],
                    }
                ]
            },
            "messages.0.content.0.content.0.type",
        ),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "server_tool_use"}]}]},
            "messages.0.content.0",
        ),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
        ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "something"}}, "tool_choice"),
        ({"thinking": {"type": "enabled"}}, "thinking"),
        ({"stop_sequences": "END"}, "stop_sequences"),
    ],
)
def test_unsupported_or_malformed_parameters_are_400(params: dict[str, Any], param: str) -> None:
    """What chat cannot honour, or what is malformed, is a 400 naming the parameter."""
    with pytest.raises(InvalidRequest) as caught:
        translate(**params)
    assert caught.value.status_code == 400 and caught.value.param == param


# --- plain responses ------------------------------------------------------------------------

CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"P"}'},
}
USAGE = {
    "prompt_tokens": 10,
    "completion_tokens": 5,
    "total_tokens": 15,
    "prompt_tokens_details": {"cached_tokens": 4},
}


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
    return {"id": "chatcmpl-xyz", "object": "chat.completion", "choices": [choice], "usage": USAGE}


@pytest.mark.parametrize(
    ("message", "finish", "blocks", "stop"),
    [
        ({"content": "Hello"}, "stop", ["text"], "end_turn"),
        ({"content": "Hel"}, "length", ["text"], "max_tokens"),
        ({"content": None, "tool_calls": [CALL]}, "tool_calls", ["tool_use"], "tool_use"),
        (
            {"content": "Sure", "tool_calls": [CALL, CALL]},
            "tool_calls",
            ["text", "tool_use", "tool_use"],
            "tool_use",
        ),
        ({"content": "Hi", "reasoning_content": "hm"}, "stop", ["thinking", "text"], "end_turn"),
        ({"content": None, "refusal": "No."}, "content_filter", ["text"], "refusal"),
        ({"content": ""}, "stop", [], "end_turn"),
        ({"content": "x"}, "mystery", ["text"], "end_turn"),
    ],
)
def test_completion_to_message(
    message: dict[str, Any], finish: str, blocks: list[str], stop: str
) -> None:
    """A chat completion becomes a Message the anthropic SDK parses, stop reason mapped."""
    raw = to_message(completion(message, finish), model=LABEL)
    parsed = Message.model_validate(json.loads(json.dumps(raw)))
    assert [block.type for block in parsed.content] == blocks
    assert parsed.stop_reason == stop and parsed.model == LABEL and parsed.id == "msg_xyz"


def test_message_usage_and_tool_input() -> None:
    """Usage splits cached tokens out of input_tokens; tool arguments become the input object."""
    parsed = Message.model_validate(
        to_message(completion({"content": None, "tool_calls": [CALL]}, "tool_calls"), model=LABEL)
    )
    assert parsed.usage.model_dump(exclude_none=True) == {
        "input_tokens": 6,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 4,
    }
    block = parsed.content[0]
    assert block.type == "tool_use" and (block.id, block.name, block.input) == (
        "call_1",
        "get_weather",
        {"city": "P"},
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"choices": []},
        completion({"tool_calls": [{**CALL, "function": {"name": "f", "arguments": "[1"}}]}),
    ],
)
def test_malformed_completion_is_upstream_error(bad: dict[str, Any]) -> None:
    """A completion without a choice or with non-object tool arguments is the provider's fault."""
    with pytest.raises(UpstreamError):
        to_message(bad, model=LABEL)


# --- errors and count_tokens ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status", "error_type"),
    [
        (InvalidRequest("bad", param="x"), 400, "invalid_request_error"),
        (AuthenticationFailed("who?"), 401, "authentication_error"),
        (NotFound("gone"), 404, "not_found_error"),
        (RateLimited("slow"), 429, "rate_limit_error"),
        (UpstreamError("boom"), 502, "api_error"),
        (UpstreamUnavailable("unreachable"), 502, "api_error"),
        (UpstreamError("busy", status_code=503), 503, "overloaded_error"),
        (UpstreamError("bad key", status_code=400), 400, "invalid_request_error"),
    ],
)
def test_errors_in_anthropic_shape(exc: BYOKError, status: int, error_type: str) -> None:
    """Gateway errors render in Anthropic's error shape with a matching type."""
    got_status, body = anthropic_error_for(exc)
    assert got_status == status
    parsed = ErrorResponse.model_validate(body)
    assert parsed.error.type == error_type and parsed.error.message == exc.message


def test_anthropic_error_default_types() -> None:
    """Without a type, the status chooses one; unknown 5xx are api_error."""
    assert anthropic_error(413, "big")["error"]["type"] == "request_too_large"
    assert anthropic_error(507, "x")["error"]["type"] == "api_error"
    assert anthropic_error(418, "x")["error"]["type"] == "invalid_request_error"


def test_count_tokens_estimate_grows_with_input_and_says_estimated() -> None:
    """The count_tokens estimate parses as the SDK's type, is flagged, and grows with input."""
    small = estimate_input_tokens({"messages": HI})
    big = estimate_input_tokens(
        {
            "system": "You are terse." * 10,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "word " * 100},
                        {"type": "image", "source": {}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}],
                },
            ],
            "tools": [WEATHER_TOOL],
        }
    )
    assert MessageTokensCount.model_validate(small).input_tokens > 0
    assert small["estimated"] is True
    assert big["input_tokens"] > small["input_tokens"] + 1600 + 125


# --- streams --------------------------------------------------------------------------------


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-xyz", "object": "chat.completion.chunk", "choices": choices, **extra}


def tool_delta(index: int, arguments: str, call_id: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        call |= {"id": call_id, "type": "function"}
        call["function"]["name"] = "get_weather"
    return chunk({"tool_calls": [call]})


def run(
    chunks: list[dict[str, Any]],
) -> tuple[list[tuple[str, dict[str, Any]]], Any, MessagesStreamTranslator]:
    translator = MessagesStreamTranslator(model=LABEL)
    frames = [frame for c in chunks for frame in translator.feed(c)] + translator.finish()
    assert translator.finish() == [] and translator.feed(chunk({"content": "late"})) == []
    snapshot = None
    buffers: dict[int, bytes] = {}
    for name, data in frames:
        assert data["type"] == name
        event = EVENTS.validate_python(json.loads(json.dumps(data)))
        if name != "error":
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=buffers)
    return frames, snapshot, translator


TEXT = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({}, "stop"),
    chunk(usage=USAGE),
]
TOOLS = [
    chunk({"role": "assistant", "content": "Let me check."}),
    tool_delta(0, "", "call_1"),
    tool_delta(0, '{"city":'),
    tool_delta(0, '"A"}'),
    tool_delta(1, '{"city":"B"}', "call_2"),
    chunk({}, "tool_calls"),
    chunk(usage=USAGE),
]
REASONED = [
    chunk({"reasoning_content": "hm"}),
    chunk({"reasoning": "m"}),
    chunk({"content": "Hi"}),
    chunk({}, "stop"),
]


@pytest.mark.parametrize(
    ("chunks", "names"),
    [
        (
            TEXT,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ],
        ),
        (
            TOOLS,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ],
        ),
        ([], ["message_start", "message_delta", "message_stop"]),
    ],
)
def test_stream_event_sequence(chunks: list[dict[str, Any]], names: list[str]) -> None:
    """Chat chunks become Anthropic's event order, one block at a time."""
    frames, _, _ = run(chunks)
    assert [name for name, _ in frames] == names


@pytest.mark.parametrize(
    ("chunks", "blocks", "stop"),
    [
        (TEXT, [("text", "Hello")], "end_turn"),
        (
            TOOLS,
            [("text", "Let me check."), ("tool_use", {"city": "A"}), ("tool_use", {"city": "B"})],
            "tool_use",
        ),
        (REASONED, [("thinking", "hmm"), ("text", "Hi")], "end_turn"),
        ([chunk({"refusal": "No."}), chunk({}, "content_filter")], [("text", "No.")], "refusal"),
        ([chunk({"content": "a"}), chunk({}, "length")], [("text", "a")], "max_tokens"),
    ],
)
def test_stream_accumulates_like_plain(
    chunks: list[dict[str, Any]], blocks: list[tuple[str, Any]], stop: str
) -> None:
    """The anthropic SDK's accumulator rebuilds the same message a plain call would return."""
    _, message, _ = run(chunks)
    got = [
        (b.type, b.text if b.type == "text" else b.thinking if b.type == "thinking" else b.input)
        for b in message.content
    ]
    assert got == blocks and message.stop_reason == stop and message.id == "msg_xyz"


def test_stream_usage_lands_on_message_delta() -> None:
    """Chat usage arrives last; message_delta carries every count and the SDK keeps them."""
    frames, message, translator = run(TEXT)
    assert frames[-2][1]["usage"] == {
        "input_tokens": 6,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 4,
    }
    assert (
        message.usage.input_tokens,
        message.usage.output_tokens,
        message.usage.cache_read_input_tokens,
    ) == (6, 5, 4)
    assert translator.usage == USAGE


def test_stream_interleaved_tool_fragments_reach_their_block() -> None:
    """A late fragment of an earlier tool call still lands in that call's input."""
    chunks = [
        tool_delta(0, '{"a":', "c1"),
        tool_delta(1, '{"b":2}', "c2"),
        tool_delta(0, "1}"),
        chunk({}, "tool_calls"),
    ]
    _, message, _ = run(chunks)
    assert [b.input for b in message.content] == [{"a": 1}, {"b": 2}]


def test_stream_error_chunk_ends_with_error_event() -> None:
    """A mid-stream error becomes Anthropic's error event; nothing follows it."""
    translator = MessagesStreamTranslator(model=LABEL)
    error = {"message": "Slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}
    frames = translator.feed(chunk({"content": "a"})) + translator.feed({"error": error})
    assert frames[-1] == (
        "error",
        {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}},
    )
    EVENTS.validate_python(frames[0][1])
    assert translator.failed and translator.error == error and translator.finish() == []

"""The sans-I/O OpenAI Responses <-> chat completions translation: requests, responses, streams."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from byok_middleware.errors import InvalidRequest, UpstreamError
from byok_middleware.providers.responses_request import input_items, to_chat_request
from byok_middleware.providers.responses_response import to_response
from byok_middleware.providers.responses_stream import ResponsesStreamTranslator

LABEL = "groq/llama-3.3-70b-versatile"
RID = "resp_abc"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CHAT_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": WEATHER["parameters"],
    },
}
USER_HI = {"role": "user", "content": "Hi"}
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def translate(**body: Any) -> dict[str, Any]:
    body.setdefault("model", LABEL)
    body.setdefault("input", "Hi")
    return to_chat_request(body)


# --- requests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, {}),
        ({"instructions": "Be brief."}, {"_system": "Be brief."}),
        ({"max_output_tokens": 64}, {"max_tokens": 64}),
        ({"temperature": 0.2, "top_p": 0.9}, {"temperature": 0.2, "top_p": 0.9}),
        ({"parallel_tool_calls": False}, {"parallel_tool_calls": False}),
        ({"top_logprobs": 2}, {"top_logprobs": 2, "logprobs": True}),
        ({"reasoning": {"effort": "low", "summary": "auto"}}, {"reasoning_effort": "low"}),
        ({"text": {"format": {"type": "text"}}}, {}),
        (
            {"text": {"format": {"type": "json_object"}}},
            {"response_format": {"type": "json_object"}},
        ),
        (
            {
                "text": {
                    "format": {"type": "json_schema", "name": "A", "schema": {"type": "object"}}
                }
            },
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "A", "schema": {"type": "object"}},
                }
            },
        ),
        ({"text": {"verbosity": "low"}}, {"verbosity": "low"}),
        ({"safety_identifier": "u-1"}, {"user": "u-1"}),
        ({"stream": True}, {"stream": True, "stream_options": {"include_usage": True}}),
        ({"store": False, "metadata": {"k": "v"}, "include": ["x"]}, {}),
        ({"previous_response_id": "resp_x", "truncation": "disabled"}, {}),
        ({"tools": [WEATHER]}, {"tools": [CHAT_WEATHER]}),
        (
            {"tools": [WEATHER], "tool_choice": "required"},
            {"tools": [CHAT_WEATHER], "tool_choice": "required"},
        ),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"}},
            {
                "tools": [CHAT_WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            },
        ),
    ],
)
def test_request_parameters(params: dict[str, Any], expected: dict[str, Any]) -> None:
    """Each Responses parameter maps to its chat counterpart; gateway-only ones go nowhere."""
    system = expected.pop("_system", None)
    messages = ([{"role": "system", "content": system}] if system else []) + [USER_HI]
    assert translate(**params) == {"model": LABEL, "messages": messages, **expected}


def test_max_tokens_field_is_chosen_by_caller() -> None:
    """OpenAI-style targets can receive max_output_tokens as max_completion_tokens."""
    body = {"model": LABEL, "input": "Hi", "max_output_tokens": 9}
    assert (
        to_chat_request(body, max_tokens_field="max_completion_tokens")["max_completion_tokens"]
        == 9
    )


def test_input_items_round_trip_with_tools() -> None:
    """Messages, parts, images, function calls and their outputs become chat messages in order."""
    items = [
        {"role": "developer", "content": "Use tools."},
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Weather?"},
                {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                {
                    "type": "input_file",
                    "file_data": "data:application/pdf;base64,AA",
                    "filename": "a.pdf",
                },
            ],
        },
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Let me see."}],
        },
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "get_weather",
            "arguments": '{"city":"A"}',
        },
        {
            "type": "function_call",
            "call_id": "c2",
            "name": "get_weather",
            "arguments": '{"city":"B"}',
        },
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {
            "type": "function_call_output",
            "call_id": "c2",
            "output": [{"type": "input_text", "text": "rain"}],
        },
    ]
    assert translate(input=items)["messages"] == [
        {"role": "developer", "content": "Use tools."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather?"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                {
                    "type": "file",
                    "file": {"file_data": "data:application/pdf;base64,AA", "filename": "a.pdf"},
                },
            ],
        },
        {
            "role": "assistant",
            "content": "Let me see.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"A"}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"B"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]


def test_history_goes_between_instructions_and_input() -> None:
    """Stored earlier items (previous_response_id) precede this turn; instructions lead."""
    history = [
        {"type": "message", "role": "user", "content": "First"},
        message_output("Answer"),
    ]
    body = {
        "model": LABEL,
        "input": "Second",
        "instructions": "Sys",
        "previous_response_id": "resp_1",
    }
    assert to_chat_request(body, history=history)["messages"] == [
        {"role": "system", "content": "Sys"},
        {"role": "user", "content": "First"},
        {"role": "assistant", "content": "Answer"},
        {"role": "user", "content": "Second"},
    ]
    assert input_items(body) == [{"type": "message", "role": "user", "content": "Second"}]


def message_output(text: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": []}
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [part],
    }


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"input": 5}, "input"),
        ({"input": []}, "input"),
        ({"model": ""}, "model"),
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "p"}}, "prompt"),
        ({"max_tool_calls": 3}, "max_tool_calls"),
        ({"truncation": "auto"}, "truncation"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": {}}, "tools"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"text": {"format": {"type": "grammar"}}}, "text"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"reasoning": "high"}, "reasoning"),
        ({"instructions": ["x"]}, "instructions"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "input[0].content[0]",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].file_data",
        ),
        (
            {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
        ),
    ],
)
def test_unsupported_or_malformed_parameters_are_400(params: dict[str, Any], param: str) -> None:
    """What chat cannot honour, or what is malformed, is a 400 naming the parameter."""
    with pytest.raises(InvalidRequest) as caught:
        translate(**params)
    assert caught.value.status_code == 400
    assert caught.value.param == param


# --- plain responses ------------------------------------------------------------------------


def completion(message: dict[str, Any], finish: str = "stop", usage: Any = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "llama",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
        ],
        "usage": usage,
    }


USAGE = {
    "prompt_tokens": 10,
    "completion_tokens": 5,
    "total_tokens": 15,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 2},
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"P"}'},
}


def respond(message: dict[str, Any], finish: str = "stop", **request: Any) -> Response:
    body = {"model": LABEL, "input": "Hi", **request}
    raw = to_response(
        completion(message, finish, USAGE), body, response_id=RID, created_at=7, model=LABEL
    )
    json.dumps(raw)  # the wire form is plain JSON
    return Response.model_validate(raw)


@pytest.mark.parametrize(
    ("message", "finish", "kinds", "status"),
    [
        ({"content": "Hello"}, "stop", ["message"], "completed"),
        ({"content": ""}, "stop", ["message"], "completed"),
        ({"content": None, "tool_calls": [CALL]}, "tool_calls", ["function_call"], "completed"),
        (
            {"content": "Sure", "tool_calls": [CALL, CALL]},
            "tool_calls",
            ["message", "function_call", "function_call"],
            "completed",
        ),
        (
            {"content": "Hi", "reasoning_content": "hmm"},
            "stop",
            ["reasoning", "message"],
            "completed",
        ),
        ({"content": "Hi", "reasoning": "hmm"}, "stop", ["reasoning", "message"], "completed"),
        ({"content": "Hel"}, "length", ["message"], "incomplete"),
        ({"content": None, "refusal": "No."}, "content_filter", ["message"], "incomplete"),
    ],
)
def test_completion_to_response(
    message: dict[str, Any], finish: str, kinds: list[str], status: str
) -> None:
    """A chat completion becomes a Response the SDK parses, with items in the documented order."""
    response = respond(message, finish)
    assert [item.type for item in response.output] == kinds
    assert response.status == status
    assert len({item.id for item in response.output}) == len(kinds)


def test_response_fields() -> None:
    """Text, tool calls, reasoning summary, usage details and echoed settings come through."""
    response = respond(
        {"content": "Sure", "reasoning_content": "hmm", "tool_calls": [CALL]},
        "tool_calls",
        instructions="Sys",
        metadata={"k": "v"},
        tools=[WEATHER],
        temperature=0.5,
    )
    assert response.id == RID and response.model == LABEL and response.created_at == 7
    assert response.output_text == "Sure"
    call = response.output[2]
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == ("call_1", "get_weather", '{"city":"P"}')
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "hmm"
    assert response.usage is not None
    assert response.usage.model_dump(exclude_none=True) == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 15,
    }
    assert response.metadata == {"k": "v"} and response.instructions == "Sys"
    assert response.temperature == 0.5 and response.tools[0].type == "function"
    assert respond({"content": "x"}, "length").incomplete_details.reason == "max_output_tokens"  # type: ignore[union-attr]


def test_completion_without_choice_is_upstream_error() -> None:
    """A completion with no choice is the provider's fault: 502, not a crash."""
    with pytest.raises(UpstreamError):
        to_response({"choices": []}, {}, response_id=RID, created_at=1, model=LABEL)


# --- streams --------------------------------------------------------------------------------


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": choices, **extra}


def tool_delta(index: int, arguments: str, call_id: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        call |= {"id": call_id, "type": "function"}
        call["function"]["name"] = "get_weather"
    return chunk({"tool_calls": [call]})


def run(
    chunks: list[dict[str, Any]], **request: Any
) -> tuple[list[tuple[str, dict[str, Any]]], ResponsesStreamTranslator]:
    body = {"model": LABEL, "input": "Hi", "stream": True, **request}
    translator = ResponsesStreamTranslator(body, response_id=RID, created_at=7, model=LABEL)
    frames = [frame for c in chunks for frame in translator.feed(c)] + translator.finish()
    assert translator.finish() == [] and translator.feed(chunk({"content": "late"})) == []
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for number, (name, data) in enumerate(frames):
        assert data["type"] == name and data["sequence_number"] == number
        state.handle_event(EVENTS.validate_python(json.loads(json.dumps(data))))
    return frames, translator


TEXT = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({}, "stop"),
]
TOOLS = [
    chunk({"role": "assistant", "content": None}),
    tool_delta(0, "", "call_1"),
    tool_delta(0, '{"city":'),
    tool_delta(1, '{"city":"B"}', "call_2"),
    tool_delta(0, '"A"}'),
    chunk({}, "tool_calls"),
]
REASONED = [
    chunk({"reasoning_content": "hm"}),
    chunk({"reasoning_content": "m"}),
    chunk({"content": "Hi"}),
    chunk({}, "stop"),
]


@pytest.mark.parametrize(
    ("chunks", "names"),
    [
        (
            TEXT,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ],
        ),
        (
            TOOLS,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ],
        ),
        (
            REASONED,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ],
        ),
        ([chunk({"refusal": "No"}), chunk({}, "content_filter")], None),
        ([], ["response.created", "response.in_progress", "response.completed"]),
    ],
)
def test_stream_event_sequence(chunks: list[dict[str, Any]], names: list[str] | None) -> None:
    """Chat chunks become OpenAI's event sequence, numbered, and the SDK's accumulator agrees."""
    frames, _ = run(chunks)
    if names is not None:
        assert [name for name, _ in frames] == names


@pytest.mark.parametrize(
    ("chunks", "text", "calls"),
    [
        (TEXT, "Hello", []),
        (TOOLS, "", [("call_1", '{"city":"A"}'), ("call_2", '{"city":"B"}')]),
        (REASONED, "Hi", []),
    ],
)
def test_stream_final_response_matches_plain(
    chunks: list[dict[str, Any]], text: str, calls: list[tuple[str, str]]
) -> None:
    """response.completed carries the whole answer, as a plain call would return it."""
    frames, translator = run([*chunks, chunk(usage=USAGE)])
    final = Response.model_validate(frames[-1][1]["response"])
    assert final.output_text == text
    assert [
        (item.call_id, item.arguments) for item in final.output if item.type == "function_call"
    ] == calls
    assert final.usage is not None and final.usage.total_tokens == 15
    assert translator.usage == USAGE
    assert Response.model_validate(translator.response) == final


def test_stream_usage_is_latest_cumulative_and_groq_nested() -> None:
    """Cumulative per-chunk usage (NVIDIA) keeps the latest; Groq's x_groq.usage counts."""
    _, translator = run(
        [
            chunk({"content": "a"}, usage={"prompt_tokens": 1}),
            chunk({}, "stop", usage={"prompt_tokens": 3}),
        ]
    )
    assert translator.usage == {"prompt_tokens": 3}
    _, translator = run([chunk({}, "stop", x_groq={"usage": {"prompt_tokens": 2}})])
    assert translator.usage == {"prompt_tokens": 2}


def test_stream_length_cut_is_incomplete() -> None:
    """A stream cut by the token cap ends with response.incomplete."""
    frames, _ = run([chunk({"content": "a"}), chunk({}, "length")])
    assert frames[-1][0] == "response.incomplete"
    assert frames[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_stream_gemini_calls_without_index_are_separate() -> None:
    """Whole tool calls streamed without an index (Gemini) stay separate function calls."""
    calls = [
        chunk({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{}"}}]}),
        chunk({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
    ]
    frames, _ = run(calls)
    final = Response.model_validate(frames[-1][1]["response"])
    assert [item.name for item in final.output if item.type == "function_call"] == ["f", "g"]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ({"message": "Overloaded", "type": "server_error", "code": None}, "server_error"),
        ({"message": "Slow down", "type": "rate_limit_error", "code": "x"}, "rate_limit_exceeded"),
    ],
)
def test_stream_error_chunk_fails_the_response(error: dict[str, Any], code: str) -> None:
    """A mid-stream error ends the stream with response.failed; nothing follows it."""
    translator = ResponsesStreamTranslator({}, response_id=RID, created_at=7, model=LABEL)
    frames = translator.feed(chunk({"content": "a"})) + translator.feed({"error": error})
    assert frames[-1][0] == "response.failed"
    failed = Response.model_validate(frames[-1][1]["response"])
    assert failed.status == "failed" and failed.error is not None
    assert (failed.error.code, failed.error.message) == (code, error["message"])
    assert translator.failed and translator.error == error
    assert translator.finish() == []

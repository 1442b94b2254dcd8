"""Default answers of Anthropic's native API: `/v1/messages` plain and streamed, `/v1/models`."""

from __future__ import annotations

from typing import Any, Final

from byok_middleware.fake import errors
from byok_middleware.fake.providers import ANTHROPIC_MODELS
from byok_middleware.fake.wire import (
    Call,
    Frame,
    Reply,
    answer_reply,
    error_reply,
    json_reply,
    split_text,
    sse_event,
    stream_reply,
)

#: The input of every tool_use block the fake produces, and its streamed JSON text.
TOOL_INPUT: Final = {"city": "Paris"}
TOOL_INPUT_JSON: Final = '{"city": "Paris"}'
_USAGE_FIELDS: Final = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


def reply_text() -> str:
    """The assistant text of a default Messages answer."""
    return "Hello from the fake anthropic."


def header_problem(call: Call) -> Reply | None:
    """The 401/400 Anthropic sends when `x-api-key` or `anthropic-version` is missing."""
    if not call.request.headers.get("x-api-key"):
        return answer_reply(call, errors.missing_key("anthropic"))
    if not call.request.headers.get("anthropic-version"):
        return error_reply(call, 400, "anthropic-version: header is required")
    return None


def messages(call: Call) -> Reply:
    """`POST /v1/messages`: a Message (or its event stream) with usage from `anthropic_usage`."""
    body = call.body_object()
    if body is None:
        return error_reply(call, 400, "There was an issue with the request body: invalid JSON")
    model = body.get("model")
    for name, ok in (
        ("model", isinstance(model, str) and bool(model)),
        ("max_tokens", isinstance(body.get("max_tokens"), int)),
        ("messages", isinstance(body.get("messages"), list) and bool(body.get("messages"))),
    ):
        if not ok:
            return error_reply(call, 400, f"{name}: Field required")
    name = str(model)
    tool = chosen_tool(body)
    streamed = call.stream_override if call.stream_override is not None else body.get("stream")
    if streamed is True:
        return stream_reply(call, stream_frames(call, name, tool))
    return json_reply(call, message(call, name, tool))


def models(call: Call) -> Reply:
    """`GET /v1/models` in Anthropic's paginated shape."""
    data = [
        {"type": "model", "id": model, "display_name": display, "created_at": created}
        for model, display, created in ANTHROPIC_MODELS
    ]
    page = {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
    return json_reply(call, page)


def chosen_tool(body: dict[str, Any]) -> str | None:
    """The tool the fake will use: the one `tool_choice` names, else the first; None when
    there are no tools or `tool_choice` is `{"type": "none"}`."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    choice = choice if isinstance(choice, dict) else {}
    if not isinstance(tools, list) or not tools or choice.get("type") == "none":
        return None
    named = choice.get("name") if choice.get("type") == "tool" else None
    first = tools[0].get("name") if isinstance(tools[0], dict) else None
    for candidate in (named, first):
        if isinstance(candidate, str) and candidate:
            return candidate
    return "tool"


def usage(call: Call, output_tokens: int | None = None) -> dict[str, int]:
    """The Messages usage object; `output_tokens` overrides the configured output count."""
    result = {name: int(call.anthropic_usage.get(name, 0)) for name in _USAGE_FIELDS}
    if output_tokens is not None:
        result["output_tokens"] = output_tokens
    return result


def message(call: Call, model: str, tool: str | None) -> dict[str, Any]:
    """The non-streamed Message: a text block, plus a tool_use block when a tool is chosen."""
    content: list[dict[str, Any]] = [{"type": "text", "text": reply_text()}]
    if tool is not None:
        content.append(_tool_block(call, tool, TOOL_INPUT))
    return _skeleton(call, model) | {
        "content": content,
        "stop_reason": "end_turn" if tool is None else "tool_use",
        "usage": usage(call),
    }


def stream_frames(call: Call, model: str, tool: str | None) -> list[Frame]:
    """The event sequence of providers.md §2.4; with `call.error_after` an `error` event
    (overloaded_error) replaces everything after that many text deltas."""
    start = _skeleton(call, model) | {"content": [], "stop_reason": None, "usage": usage(call, 1)}
    frames = [
        Frame(sse_event("message_start", {"type": "message_start", "message": start})),
        _block_start(0, {"type": "text", "text": ""}),
        Frame(sse_event("ping", {"type": "ping"})),
    ]
    for sent, piece in enumerate(split_text(reply_text(), call.stream_chunks)):
        if sent == call.error_after:
            return [*frames, _overloaded_event()]
        frames.append(_delta(0, {"type": "text_delta", "text": piece}))
    if call.error_after is not None and call.error_after >= call.stream_chunks:
        return [*frames, _overloaded_event()]
    frames.append(_block_stop(0))
    if tool is not None:
        frames.append(_block_start(1, _tool_block(call, tool, {})))
        for piece in split_text(TOOL_INPUT_JSON, call.stream_chunks):
            frames.append(_delta(1, {"type": "input_json_delta", "partial_json": piece}))
        frames.append(_block_stop(1))
    stop = {"stop_reason": "end_turn" if tool is None else "tool_use", "stop_sequence": None}
    # message_delta usage is cumulative: the totals, never an increment.
    end = {"type": "message_delta", "delta": stop, "usage": usage(call)}
    frames.append(Frame(sse_event("message_delta", end)))
    frames.append(Frame(sse_event("message_stop", {"type": "message_stop"})))
    return frames


def _skeleton(call: Call, model: str) -> dict[str, Any]:
    return {
        "id": f"msg_fake{call.seq:06d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "stop_sequence": None,
    }


def _tool_block(call: Call, tool: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": f"toolu_fake{call.seq:06d}",
        "name": tool,
        "input": tool_input,
    }


def _block_start(index: int, block: dict[str, Any]) -> Frame:
    event = {"type": "content_block_start", "index": index, "content_block": block}
    return Frame(sse_event("content_block_start", event))


def _delta(index: int, delta: dict[str, Any]) -> Frame:
    event = {"type": "content_block_delta", "index": index, "delta": delta}
    return Frame(sse_event("content_block_delta", event), counted=True)


def _block_stop(index: int) -> Frame:
    return Frame(sse_event("content_block_stop", {"type": "content_block_stop", "index": index}))


def _overloaded_event() -> Frame:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return Frame(sse_event("error", error))

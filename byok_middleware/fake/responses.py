"""Default `POST /responses` answers of OpenAI's Responses API, plain and streamed.

Streams are `event: <type>` / `data: <json>` pairs with a `sequence_number` each and no
`[DONE]`, in the order OpenAI sends them: `response.created`, `response.in_progress`, then per
output item `response.output_item.added`, its part and delta events and
`response.output_item.done`, and last `response.completed` with usage. The text deltas (or the
function-call argument deltas) are the counted frames that `chunk_delay` and `cut_after` act on.
"""

from __future__ import annotations

from typing import Any

from byok_middleware.fake.chat import TOOL_ARGUMENTS, reply_text, usage
from byok_middleware.fake.wire import (
    Call,
    Frame,
    Reply,
    error_reply,
    json_reply,
    split_text,
    sse_event,
    stream_reply,
)
from byok_middleware.providers.responses_response import (
    function_call_item,
    message_item,
    response_object,
    to_responses_usage,
)


def responses(call: Call) -> Reply:
    """A `response` object (or its event stream) echoing the request's model, or a 400."""
    body = call.body_object()
    if body is None:
        return error_reply(call, 400, "We could not parse the JSON body of your request.")
    for param in ("model", "input"):
        if not body.get(param):
            return error_reply(call, 400, f"Missing required parameter: '{param}'.")
    tool = chosen_tool(body)
    streamed = call.stream_override if call.stream_override is not None else body.get("stream")
    if streamed is True:
        return stream_reply(call, stream_frames(call, body, tool))
    return json_reply(call, completed(call, body, tool))


def chosen_tool(body: dict[str, Any]) -> str | None:
    """The function the fake calls: the one `tool_choice` names, else the first function tool;
    None without function tools or with `tool_choice` "none"."""
    tools = [
        t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"
    ]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict) and isinstance(choice.get("name"), str):
        return str(choice["name"])
    return str(tools[0].get("name") or "tool")


def _ids(call: Call) -> tuple[str, str, str]:
    return (
        f"resp_fake{call.seq:06d}",
        f"msg_fake{call.seq:06d}",
        f"fc_fake{call.seq:06d}",
    )


def _output(call: Call, tool: str | None) -> dict[str, Any]:
    _, message_id, call_item_id = _ids(call)
    if tool is None:
        return message_item(message_id, reply_text(call.provider))
    return function_call_item(call_item_id, f"call_fake_{call.seq:06d}", tool, TOOL_ARGUMENTS)


def _envelope(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    response_id, _, _ = _ids(call)
    return response_object(
        body, response_id=response_id, created_at=call.created, model=str(body["model"])
    )


def completed(call: Call, body: dict[str, Any], tool: str | None) -> dict[str, Any]:
    """The finished `response` object."""
    return _envelope(call, body) | {
        "status": "completed",
        "completed_at": call.created,
        "output": [_output(call, tool)],
        "usage": to_responses_usage(usage(call)),
    }


def stream_frames(call: Call, body: dict[str, Any], tool: str | None) -> list[Frame]:
    """The event sequence of one streamed response."""
    events: list[tuple[dict[str, Any], bool]] = []

    def emit(kind: str, counted: bool = False, **fields: Any) -> None:
        events.append(({"type": kind, **fields}, counted))

    start = _envelope(call, body)
    emit("response.created", response=start)
    emit("response.in_progress", response=start)
    item = _output(call, tool)
    where = {"item_id": item["id"], "output_index": 0}
    if tool is None:
        text = item["content"][0]["text"]
        emit(
            "response.output_item.added",
            output_index=0,
            item=item | {"status": "in_progress", "content": []},
        )
        part = item["content"][0]
        emit("response.content_part.added", **where, content_index=0, part=part | {"text": ""})
        for piece in split_text(text, call.stream_chunks):
            emit(
                "response.output_text.delta",
                True,
                **where,
                content_index=0,
                delta=piece,
                logprobs=[],
            )
        emit("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
        emit("response.content_part.done", **where, content_index=0, part=part)
    else:
        emit(
            "response.output_item.added",
            output_index=0,
            item=item | {"status": "in_progress", "arguments": ""},
        )
        for piece in split_text(TOOL_ARGUMENTS, call.stream_chunks):
            emit("response.function_call_arguments.delta", True, **where, delta=piece)
        emit("response.function_call_arguments.done", **where, name=tool, arguments=TOOL_ARGUMENTS)
    emit("response.output_item.done", output_index=0, item=item)
    emit("response.completed", response=completed(call, body, tool))
    return [
        Frame(sse_event(event["type"], event | {"sequence_number": number}), counted=counted)
        for number, (event, counted) in enumerate(events)
    ]

"""Default `POST /chat/completions` answers on the OpenAI wire, plain and streamed (§1.2, §1.3)."""

from __future__ import annotations

from typing import Any, Final

from byok_middleware.fake.wire import (
    Call,
    Frame,
    Reply,
    error_reply,
    json_reply,
    split_text,
    sse_data,
    stream_reply,
)

#: The arguments of every tool call the fake makes.
TOOL_ARGUMENTS: Final = '{"city": "Paris"}'


def reply_text(provider: str) -> str:
    """The assistant text of a default chat answer."""
    return f"Hello from the fake {provider}."


def chat_completion(call: Call) -> Reply:
    """A `chat.completion` (or its SSE stream) echoing the request's model, or a 400."""
    body = call.body_object()
    if body is None:
        return error_reply(call, 400, "We could not parse the JSON body of your request.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return error_reply(call, 400, "you must provide a model parameter")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return error_reply(call, 400, "Missing required parameter: 'messages'.")
    tool = chosen_tool(body)
    streamed = call.stream_override if call.stream_override is not None else body.get("stream")
    if streamed is True:
        options = body.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True
        return stream_reply(call, stream_frames(call, model, tool, with_usage))
    return json_reply(call, completion(call, model, tool))


def chosen_tool(body: dict[str, Any]) -> str | None:
    """The function the fake will call: the one `tool_choice` names, else the first tool;
    None when there are no tools or `tool_choice` is "none"."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        named = _function_name(choice)
        if named:
            return named
    return _function_name(tools[0]) or "tool"


def usage(call: Call) -> dict[str, Any]:
    """The OpenAI usage object built from `FakeUpstream.default_usage`."""
    prompt = call.usage.get("prompt_tokens", 0)
    completion_tokens = call.usage.get("completion_tokens", 0)
    result: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }
    cached = call.usage.get("cached_tokens")
    if cached is not None:
        result["prompt_tokens_details"] = {"cached_tokens": cached}
    reasoning = call.usage.get("reasoning_tokens")
    if reasoning is not None:
        result["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    if call.provider == "deepseek":
        # DeepSeek's own cache fields ride along (providers.md §4).
        result["prompt_cache_hit_tokens"] = cached or 0
        result["prompt_cache_miss_tokens"] = prompt - (cached or 0)
    return result


def completion(call: Call, model: str, tool: str | None) -> dict[str, Any]:
    """The non-streamed `chat.completion` object."""
    message: dict[str, Any] = {"role": "assistant", "content": reply_text(call.provider)}
    finish = "stop"
    if tool is not None:
        message = {"role": "assistant", "content": None, "tool_calls": [_tool_call(call, tool)]}
        finish = "tool_calls"
    message["refusal"] = None
    return {
        "id": _completion_id(call),
        "object": "chat.completion",
        "created": call.created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage(call),
        "system_fingerprint": "fp_fake",
    }


def stream_frames(call: Call, model: str, tool: str | None, with_usage: bool) -> list[Frame]:
    """The SSE frames: role chunk, counted content (or tool-argument) chunks, the finish chunk,
    the usage chunk only when asked for, then `[DONE]`."""
    frames = [Frame(sse_data(_chunk(call, model, {"role": "assistant", "content": ""})))]
    if tool is None:
        for piece in split_text(reply_text(call.provider), call.stream_chunks):
            frames.append(Frame(sse_data(_chunk(call, model, {"content": piece})), counted=True))
    else:
        header = _tool_call(call, tool) | {"index": 0}
        header["function"] = {"name": tool, "arguments": ""}
        frames.append(Frame(sse_data(_chunk(call, model, {"tool_calls": [header]}))))
        for piece in split_text(TOOL_ARGUMENTS, call.stream_chunks):
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            frames.append(Frame(sse_data(_chunk(call, model, delta)), counted=True))
    finish = "stop" if tool is None else "tool_calls"
    frames.append(Frame(sse_data(_chunk(call, model, {}, finish))))
    if with_usage:
        tail = _chunk(call, model, {}) | {"choices": [], "usage": usage(call)}
        frames.append(Frame(sse_data(tail)))
    frames.append(Frame(b"data: [DONE]\n\n"))
    return frames


def _chunk(
    call: Call, model: str, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {
        "id": _completion_id(call),
        "object": "chat.completion.chunk",
        "created": call.created,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [choice],
        "usage": None,
    }


def _tool_call(call: Call, name: str) -> dict[str, Any]:
    return {
        "id": f"call_fake_{call.seq:06d}",
        "type": "function",
        "function": {"name": name, "arguments": TOOL_ARGUMENTS},
    }


def _completion_id(call: Call) -> str:
    return f"chatcmpl-fake{call.seq:06d}"


def _function_name(tool: Any) -> str | None:
    function = tool.get("function") if isinstance(tool, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) and name else None

"""OpenAI Responses request -> OpenAI chat completions request (sans-I/O).

For every provider but OpenAI (which serves ``/responses`` natively) a Responses call runs as a
chat call. What chat cannot express is refused with a 400 naming the parameter: hosted tools
(``web_search``, ``file_search``, ...), ``background``, ``conversation``, ``prompt`` templates,
``truncation: "auto"``, ``item_reference`` inputs and file-id images. ``store``, ``metadata``,
``previous_response_id`` and ``include`` are the gateway's business and never go upstream; the
earlier turns a ``previous_response_id`` names are passed in by the caller as ``history``.

The chat ``model`` is the client's ``model`` unchanged: the chat pipeline resolves it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from byok_middleware.errors import InvalidRequest
from byok_middleware.providers.anthropic_messages import unsupported, wrong_type
from byok_middleware.providers.chat_parts import compact_content

__all__ = ["input_items", "to_chat_request"]

Item = dict[str, Any]

# Responses parameters with no chat counterpart; refused when set to anything but their default.
_NO_CHAT_EQUIVALENT = {
    "background": "runs in the background",
    "conversation": "server-side conversations",
    "prompt": "stored prompt templates",
    "max_tool_calls": "a cap on built-in tool calls",
    "context_management": "server-side compaction",
}
_COPIED = ("temperature", "top_p", "parallel_tool_calls", "service_tier", "top_logprobs")


def input_items(body: Mapping[str, Any]) -> list[Item]:
    """This turn's ``input`` as a list of items (a string becomes one user message), the form
    in which the gateway stores a conversation for a later ``previous_response_id``."""
    raw = body.get("input")
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    if not isinstance(raw, list) or not all(isinstance(item, Mapping) for item in raw):
        raise wrong_type("input", "a string or an array of input items")
    return [dict(item) for item in raw]


def to_chat_request(
    body: Mapping[str, Any],
    *,
    history: Sequence[Mapping[str, Any]] = (),
    max_tokens_field: str = "max_tokens",
) -> dict[str, Any]:
    """Translate a ``POST /v1/responses`` body to a ``POST /v1/chat/completions`` body.

    ``history`` holds the stored items (inputs and outputs, oldest first) of the turns before
    ``previous_response_id``. ``max_output_tokens`` becomes ``max_tokens_field`` (OpenAI's
    reasoning models want ``max_completion_tokens``; most other providers ``max_tokens``).
    Streams ask for usage (``stream_options.include_usage``) so the gateway can meter them.

    Raises :class:`InvalidRequest` (400, ``param`` set) for malformed input and for every
    parameter chat cannot honour.
    """
    _refuse_unsupported(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise wrong_type("model", "a non-empty string")
    messages: list[Item] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise wrong_type("instructions", "a string")
        if instructions:
            messages.append({"role": "system", "content": instructions})
    for i, item in enumerate(history):
        _append_item(messages, item, f"previous_response_id[{i}]")
    for i, item in enumerate(input_items(body)):
        _append_item(messages, item, f"input[{i}]")
    if not messages:
        raise InvalidRequest("'input' must not be empty.", param="input", code="invalid_value")
    out: dict[str, Any] = {"model": model, "messages": messages}
    for param in _COPIED:
        if body.get(param) is not None:
            out[param] = body[param]
    if body.get("top_logprobs"):
        out["logprobs"] = True
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise wrong_type("max_output_tokens", "a positive integer")
        out[max_tokens_field] = max_tokens
    _set_tools(body, out)
    _set_text_format(body.get("text"), out)
    _set_reasoning(body.get("reasoning"), out)
    for param in ("user", "safety_identifier"):
        if isinstance(body.get(param), str) and body[param]:
            out["user"] = body[param]
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    for param, what in _NO_CHAT_EQUIVALENT.items():
        if body.get(param) not in (None, False):
            raise unsupported(f"'{param}' ({what}) is only available on OpenAI models.", param)
    if body.get("truncation") not in (None, "disabled"):
        raise unsupported("Only 'truncation: disabled' is available for this model.", "truncation")


def _append_item(messages: list[Item], item: Mapping[str, Any], param: str) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise InvalidRequest(
                f"Unsupported role in '{param}.role': {role!r}.",
                param=f"{param}.role",
                code="invalid_value",
            )
        content = _content(item.get("content"), f"{param}.content", assistant=role == "assistant")
        messages.append({"role": role, "content": content})
    elif kind == "function_call":
        call = {
            "id": _string(item, "call_id", param),
            "type": "function",
            "function": {
                "name": _string(item, "name", param),
                "arguments": _string(item, "arguments", param),
            },
        }
        last = messages[-1] if messages else None
        # Parallel calls are one assistant message in chat, as is text followed by calls.
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
            last.setdefault("content", None)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        content = output if isinstance(output, str) else _content(output, f"{param}.output")
        messages.append(
            {"role": "tool", "tool_call_id": _string(item, "call_id", param), "content": content}
        )
    elif kind != "reasoning":  # reasoning items cannot be replayed to another model; skip them
        raise unsupported(f"Input items of type {kind!r} are not supported here.", f"{param}.type")


def _string(item: Mapping[str, Any], field: str, param: str) -> str:
    value = item.get(field)
    if not isinstance(value, str):
        raise wrong_type(f"{param}.{field}", "a string")
    return value


def _content(raw: Any, param: str, *, assistant: bool = False) -> str | list[Item]:
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, list) or not all(isinstance(part, Mapping) for part in raw):
        raise wrong_type(param, "a string or an array of content parts")
    parts: list[Item] = []
    for j, part in enumerate(raw):
        kind, part_param = part.get("type"), f"{param}[{j}]"
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": _string(part, "text", part_param)})
        elif kind == "refusal":
            parts.append({"type": "text", "text": _string(part, "refusal", part_param)})
        elif kind == "input_image" and not assistant:
            parts.append(_image_part(part, part_param))
        elif kind == "input_file" and not assistant:
            parts.append(_file_part(part, part_param))
        else:
            raise unsupported(f"Content parts of type {kind!r} are not supported here.", part_param)
    return compact_content(parts)


def _image_part(part: Mapping[str, Any], param: str) -> Item:
    url = part.get("image_url")
    if not isinstance(url, str):
        raise unsupported("Images must be given by 'image_url' (no 'file_id').", f"{param}.file_id")
    image: Item = {"url": url}
    if isinstance(part.get("detail"), str):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _file_part(part: Mapping[str, Any], param: str) -> Item:
    data = part.get("file_data")
    if not isinstance(data, str):
        raise unsupported("Files must be given inline as 'file_data'.", f"{param}.file_data")
    file: Item = {"file_data": data}
    if isinstance(part.get("filename"), str):
        file["filename"] = part["filename"]
    return {"type": "file", "file": file}


def _set_tools(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    raw = body.get("tools")
    if raw is not None:
        if not isinstance(raw, list):
            raise wrong_type("tools", "an array")
        out["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(raw)]
    choice = body.get("tool_choice")
    if choice is None:
        return
    if choice in ("auto", "none", "required"):
        out["tool_choice"] = choice
    elif isinstance(choice, Mapping) and choice.get("type") == "function":
        name = choice.get("name")
        if not isinstance(name, str):
            raise wrong_type("tool_choice.name", "a string")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise unsupported(
            "'tool_choice' must be 'auto', 'none', 'required' or a function.", "tool_choice"
        )


def _tool(tool: Any, param: str) -> Item:
    if not isinstance(tool, Mapping):
        raise wrong_type(param, "an object")
    if tool.get("type") != "function":
        raise unsupported(
            f"Only 'function' tools are available for this model, not {tool.get('type')!r}.",
            f"{param}.type",
        )
    function: Item = {"name": _string(tool, "name", param)}
    for field in ("description", "parameters", "strict"):
        if tool.get(field) is not None:
            function[field] = tool[field]
    return {"type": "function", "function": function}


def _set_text_format(text: Any, out: dict[str, Any]) -> None:
    if text is None:
        return
    if not isinstance(text, Mapping):
        raise wrong_type("text", "an object")
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    spec = text.get("format")
    kind = spec.get("type") if isinstance(spec, Mapping) else None
    if spec is None or kind == "text":
        return
    if kind == "json_object":
        out["response_format"] = {"type": "json_object"}
    elif kind == "json_schema" and isinstance(spec, Mapping):
        schema = {"name": _string(spec, "name", "text.format")}
        for field in ("schema", "description", "strict"):
            if spec.get(field) is not None:
                schema[field] = spec[field]
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    else:
        raise unsupported("'text.format.type' must be text, json_object or json_schema.", "text")


def _set_reasoning(reasoning: Any, out: dict[str, Any]) -> None:
    if reasoning is None:
        return
    if not isinstance(reasoning, Mapping):
        raise wrong_type("reasoning", "an object")
    # 'summary' needs no translation: summaries are returned whenever the provider reasons aloud.
    if reasoning.get("effort") is not None:
        out["reasoning_effort"] = reasoning["effort"]

"""Anthropic Messages request -> OpenAI chat completions request (sans-I/O).

For OpenAI-wire providers (openai, groq, deepseek, nvidia, google) a ``POST /v1/messages`` runs
as a chat call; Anthropic itself is served natively. This is the inverse of
:mod:`byok_middleware.providers.anthropic_request` and shares its tables (tool choices, thinking
budgets). Tool results leave their user message as ``tool`` messages placed first, as chat wants
them right after the assistant's calls; thinking blocks in the history are dropped (another model
cannot verify their signatures). What chat cannot express is a 400 naming the parameter: server
tools, ``top_k``, images inside tool results, ``container``, ``mcp_servers``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from byok_middleware.errors import InvalidRequest
from byok_middleware.providers.anthropic_messages import unsupported, wrong_type
from byok_middleware.providers.anthropic_request import REASONING_BUDGETS, TOOL_CHOICE_TYPES
from byok_middleware.providers.chat_parts import compact_content

__all__ = ["to_chat_request"]

Message = dict[str, Any]

_NO_CHAT_EQUIVALENT = {
    "top_k": "no top-k sampling",
    "container": "no code-execution containers",
    "mcp_servers": "no remote MCP servers",
    "context_management": "no server-side context editing",
}
_CHOICE_BY_TYPE = {anthropic: openai for openai, anthropic in TOOL_CHOICE_TYPES.items()}
# Thinking budgets map back to the least effort whose budget covers them.
_EFFORTS = sorted(
    ((budget, effort) for effort, budget in REASONING_BUDGETS.items() if effort != "minimal"),
)


def to_chat_request(
    body: Mapping[str, Any], *, max_tokens_field: str = "max_tokens"
) -> dict[str, Any]:
    """Translate an Anthropic ``/v1/messages`` body to an OpenAI ``/v1/chat/completions`` body.

    ``model`` is passed on unchanged (the chat pipeline resolves it); ``max_tokens`` becomes
    ``max_tokens_field`` (``max_completion_tokens`` for OpenAI's reasoning models). Streams ask
    for usage so the gateway can meter them.

    Raises :class:`InvalidRequest` (400, ``param`` set) for malformed input and for every
    parameter chat cannot honour.
    """
    for param, why in _NO_CHAT_EQUIVALENT.items():
        if body.get(param) is not None:
            raise unsupported(f"'{param}' is not available for this model ({why}).", param)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise wrong_type("model", "a non-empty string")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise wrong_type("max_tokens", "a positive integer")
    messages = _system(body.get("system"))
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise wrong_type("messages", "a non-empty array")
    for i, message in enumerate(raw):
        messages.extend(_message(message, f"messages.{i}"))
    out: dict[str, Any] = {"model": model, "messages": messages, max_tokens_field: max_tokens}
    for param in ("temperature", "top_p"):
        if body.get(param) is not None:
            out[param] = body[param]
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise wrong_type("stop_sequences", "an array of strings")
        if stops:
            out["stop"] = stops
    _set_tools(body, out)
    _set_thinking(body.get("thinking"), out)
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, Mapping) else None
    if isinstance(user, str) and user:
        out["user"] = user
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _system(raw: Any) -> list[Message]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [{"role": "system", "content": raw}] if raw else []
    if not isinstance(raw, list):
        raise wrong_type("system", "a string or an array of text blocks")
    texts = [_text(block, f"system.{i}") for i, block in enumerate(raw)]
    return [{"role": "system", "content": "\n\n".join(texts)}] if texts else []


def _text(block: Any, param: str) -> str:
    if not isinstance(block, Mapping) or block.get("type") != "text":
        raise unsupported("Only text blocks are allowed here.", f"{param}.type")
    text = block.get("text")
    if not isinstance(text, str):
        raise wrong_type(f"{param}.text", "a string")
    return text


def _blocks(content: Any, param: str) -> list[Mapping[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(b, Mapping) for b in content):
        raise wrong_type(param, "a string or an array of content blocks")
    return content


def _message(message: Any, param: str) -> list[Message]:
    if not isinstance(message, Mapping):
        raise wrong_type(param, "an object")
    role = message.get("role")
    blocks = _blocks(message.get("content"), f"{param}.content")
    if role == "user":
        return _user(blocks, f"{param}.content")
    if role == "assistant":
        return _assistant(blocks, f"{param}.content")
    raise InvalidRequest(
        f"Unsupported role in '{param}.role': {role!r}.",
        param=f"{param}.role",
        code="invalid_value",
    )


def _user(blocks: list[Mapping[str, Any]], param: str) -> list[Message]:
    results: list[Message] = []
    parts: list[Message] = []
    for j, block in enumerate(blocks):
        kind, block_param = block.get("type"), f"{param}.{j}"
        if kind == "tool_result":
            results.append(_tool_result(block, block_param))
        elif kind == "text":
            parts.append({"type": "text", "text": _text(block, block_param)})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _url(block, block_param)}})
        elif kind == "document":
            parts.append({"type": "file", "file": {"file_data": _url(block, block_param)}})
        else:
            raise unsupported(
                f"Content blocks of type {kind!r} are not supported here.", block_param
            )
    return results + ([{"role": "user", "content": compact_content(parts)}] if parts else [])


def _url(block: Mapping[str, Any], param: str) -> str:
    """An image or document source as the URL chat takes: itself, or a base64 data URL."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, Mapping) else None
    if isinstance(source, Mapping) and kind == "url" and isinstance(source.get("url"), str):
        return str(source["url"])
    if isinstance(source, Mapping) and kind == "base64":
        media, data = source.get("media_type"), source.get("data")
        if isinstance(media, str) and isinstance(data, str):
            return f"data:{media};base64,{data}"
    raise unsupported("Sources must be 'base64' or 'url' here.", f"{param}.source")


def _tool_result(block: Mapping[str, Any], param: str) -> Message:
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str):
        raise wrong_type(f"{param}.tool_use_id", "a string")
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        # Chat tool messages carry text only; an image in a tool result has nowhere to go.
        texts = [
            _text(part, f"{param}.content.{k}") for k, part in enumerate(_blocks(content, param))
        ]
        text = "".join(texts)
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}


def _assistant(blocks: list[Mapping[str, Any]], param: str) -> list[Message]:
    texts: list[str] = []
    calls: list[Message] = []
    for j, block in enumerate(blocks):
        kind, block_param = block.get("type"), f"{param}.{j}"
        if kind == "text":
            texts.append(_text(block, block_param))
        elif kind == "tool_use":
            name, call_id = block.get("name"), block.get("id")
            if not isinstance(name, str) or not isinstance(call_id, str):
                raise wrong_type(block_param, "a tool_use block with an 'id' and a 'name'")
            arguments = json.dumps(block.get("input") or {})
            function = {"name": name, "arguments": arguments}
            calls.append({"id": call_id, "type": "function", "function": function})
        elif kind not in ("thinking", "redacted_thinking"):
            raise unsupported(
                f"Content blocks of type {kind!r} are not supported here.", block_param
            )
    if not texts and not calls:
        return []
    message: Message = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return [message]


def _set_tools(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    raw = body.get("tools")
    if raw is not None:
        if not isinstance(raw, list):
            raise wrong_type("tools", "an array")
        out["tools"] = [_tool(tool, f"tools.{i}") for i, tool in enumerate(raw)]
    choice = body.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, Mapping) else None
    if kind in _CHOICE_BY_TYPE:
        out["tool_choice"] = _CHOICE_BY_TYPE[kind]
    elif kind == "tool" and isinstance(choice, Mapping) and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise unsupported("'tool_choice.type' must be auto, any, none or tool.", "tool_choice")
    if isinstance(choice, Mapping) and choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


def _tool(tool: Any, param: str) -> Message:
    if not isinstance(tool, Mapping):
        raise wrong_type(param, "an object")
    if tool.get("type") not in (None, "custom"):
        raise unsupported(
            f"Server tools ({tool.get('type')!r}) are not available for this model.",
            f"{param}.type",
        )
    name = tool.get("name")
    if not isinstance(name, str):
        raise wrong_type(f"{param}.name", "a string")
    function: Message = {"name": name, "parameters": tool.get("input_schema") or {"type": "object"}}
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _set_thinking(thinking: Any, out: dict[str, Any]) -> None:
    kind = thinking.get("type") if isinstance(thinking, Mapping) else None
    if thinking is None or kind in ("disabled", "adaptive"):
        return  # adaptive leaves the choice to the model, as chat does without reasoning_effort
    budget = thinking.get("budget_tokens") if isinstance(thinking, Mapping) else None
    if kind != "enabled" or isinstance(budget, bool) or not isinstance(budget, int):
        raise wrong_type("thinking", "{'type': 'enabled', 'budget_tokens': <integer>}")
    out["reasoning_effort"] = next((e for b, e in _EFFORTS if budget <= b), _EFFORTS[-1][1])

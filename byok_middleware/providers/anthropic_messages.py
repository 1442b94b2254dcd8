"""OpenAI chat ``messages`` -> Anthropic ``system`` + ``messages`` (sans-I/O).

Anthropic differs from OpenAI in ways a client never sees: system prompts are a top-level field,
tool results are ``user`` content, and roles must alternate, so consecutive messages of one role
(tool results followed by the user's next words, say) become one message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from byok_middleware.errors import InvalidRequest

__all__ = [
    "JSON_TOOL_NAME",
    "tool_use_block",
    "translate_messages",
    "unsupported",
    "wrong_type",
]

# The forced tool that emulates response_format JSON (see anthropic_request).
JSON_TOOL_NAME = "json_response"

_IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:(?P<media>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)

Block = dict[str, Any]


def wrong_type(param: str, expected: str) -> InvalidRequest:
    """A 400 for a parameter of the wrong type (OpenAI's ``invalid_type`` code)."""
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}.", param=param, code="invalid_type"
    )


def unsupported(message: str, param: str) -> InvalidRequest:
    """A 400 for a parameter or value Anthropic cannot honour."""
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def translate_messages(raw: Any) -> tuple[list[Block], list[Block]]:
    """Return ``(system, messages)``: system/developer text hoisted (in order) into text blocks,
    the rest as alternating Anthropic messages whose ``content`` is always a list of blocks."""
    if not isinstance(raw, list) or not raw:
        raise wrong_type("messages", "a non-empty array")
    system: list[Block] = []
    turns: list[Block] = []
    for i, message in enumerate(raw):
        param = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise wrong_type(param, "an object")
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            blocks = _text_blocks(content, f"{param}.content")
        elif role == "user":
            blocks = _user_blocks(content, f"{param}.content")
        elif role == "assistant":
            blocks = _assistant_blocks(message, param)
            if not blocks:
                continue  # an empty assistant turn says nothing; Anthropic would reject it
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, param)]
        else:
            raise InvalidRequest(
                f"Unsupported role in '{param}.role': {role!r}.",
                param=f"{param}.role",
                code="invalid_value",
            )
        if not blocks:
            raise InvalidRequest(
                f"'{param}.content' must not be empty.",
                param=f"{param}.content",
                code="invalid_value",
            )
        if role in ("system", "developer"):
            system.extend(blocks)
        elif turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    if not turns:
        raise InvalidRequest(
            "Anthropic needs at least one user or assistant message.",
            param="messages",
            code="invalid_value",
        )
    for turn in turns:
        # Anthropic wants tool results first in their user message; sorted() is stable.
        turn["content"] = sorted(turn["content"], key=lambda b: b["type"] != "tool_result")
    return system, turns


def _parts(content: Any, param: str) -> list[Mapping[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(p, Mapping) for p in content):
        raise wrong_type(param, "a string or an array of content parts")
    return content


def _text_block(part: Mapping[str, Any], param: str) -> Block | None:
    text = part.get("text", part.get("refusal"))
    if not isinstance(text, str):
        raise wrong_type(f"{param}.text", "a string")
    if not text:
        return None  # Anthropic rejects empty text blocks
    block: Block = {"type": "text", "text": text}
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _text_blocks(content: Any, param: str, *, kinds: tuple[str, ...] = ("text",)) -> list[Block]:
    blocks = []
    for j, part in enumerate(_parts(content, param)):
        if part.get("type") not in kinds:
            raise unsupported(f"Only text content is allowed in '{param}'.", f"{param}[{j}].type")
        block = _text_block(part, f"{param}[{j}]")
        if block is not None:
            blocks.append(block)
    return blocks


def _user_blocks(content: Any, param: str) -> list[Block]:
    blocks = []
    for j, part in enumerate(_parts(content, param)):
        part_param = f"{param}[{j}]"
        kind = part.get("type")
        if kind == "text":
            block = _text_block(part, part_param)
        elif kind == "image_url":
            block = _image_block(part, part_param)
        elif kind == "file":
            block = _document_block(part, part_param)
        else:
            raise unsupported(
                f"Anthropic models do not accept {kind!r} content.", f"{part_param}.type"
            )
        if block is not None:
            blocks.append(block)
    return blocks


def _image_block(part: Mapping[str, Any], param: str) -> Block:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    if not isinstance(url, str):
        raise wrong_type(f"{param}.image_url.url", "a string")
    if url.startswith(("http://", "https://")):
        source: Block = {"type": "url", "url": url}
    else:
        source = _base64_source(url, _IMAGE_MEDIA_TYPES, f"{param}.image_url.url")
    block: Block = {"type": "image", "source": source}
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    return block


def _document_block(part: Mapping[str, Any], param: str) -> Block:
    file = part.get("file")
    data = file.get("file_data") if isinstance(file, Mapping) else None
    if not isinstance(data, str):
        raise unsupported(
            "Anthropic needs files inline as 'file_data' (no 'file_id').", f"{param}.file"
        )
    source = _base64_source(data, frozenset({"application/pdf"}), f"{param}.file.file_data")
    return {"type": "document", "source": source}


def _base64_source(url: str, media_types: frozenset[str], param: str) -> Block:
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise InvalidRequest(
            f"'{param}' must be an http(s) URL or a base64 data URL.",
            param=param,
            code="invalid_value",
        )
    media = match["media"].lower().replace("image/jpg", "image/jpeg")
    if media not in media_types:
        allowed = ", ".join(sorted(media_types))
        raise InvalidRequest(
            f"Anthropic accepts only {allowed} here, not {media}.",
            param=param,
            code="unsupported_value",
        )
    return {"type": "base64", "media_type": media, "data": match["data"]}


def _assistant_blocks(message: Mapping[str, Any], param: str) -> list[Block]:
    if message.get("function_call") is not None:
        raise unsupported(
            "Use 'tool_calls', not the legacy 'function_call'.", f"{param}.function_call"
        )
    blocks = _text_blocks(message.get("content"), f"{param}.content", kinds=("text", "refusal"))
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise wrong_type(f"{param}.tool_calls", "an array")
    for k, call in enumerate(tool_calls):
        blocks.append(tool_use_block(call, f"{param}.tool_calls[{k}]"))
    return blocks


def tool_use_block(call: Any, param: str) -> Block:
    """An OpenAI ``tool_calls[]`` entry as a ``tool_use`` block; 400 when its arguments are not
    a JSON object."""
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(call.get("id"), str):
        raise wrong_type(param, "a function tool call with an 'id'")
    name, arguments = function.get("name"), function.get("arguments") or "{}"
    if not isinstance(name, str) or not isinstance(arguments, str):
        raise wrong_type(f"{param}.function", "a 'name' and 'arguments' string")
    try:
        tool_input = json.loads(arguments)
    except ValueError:
        tool_input = None
    if not isinstance(tool_input, dict):
        raise InvalidRequest(
            f"'{param}.function.arguments' must be a JSON object.",
            param=f"{param}.function.arguments",
            code="invalid_value",
        )
    return {"type": "tool_use", "id": call["id"], "name": name, "input": tool_input}


def _tool_result(message: Mapping[str, Any], param: str) -> Block:
    tool_call_id = message.get("tool_call_id")
    if not isinstance(tool_call_id, str):
        raise wrong_type(f"{param}.tool_call_id", "a string")
    block: Block = {"type": "tool_result", "tool_use_id": tool_call_id}
    content = message.get("content")
    # An empty tool output is legitimate (a function that returns nothing): send no content.
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        parts = _text_blocks(content, f"{param}.content")
        if parts:
            block["content"] = parts
    return block

"""OpenAI chat completion -> Anthropic Message; Anthropic error bodies; token estimates (sans-I/O).

The inverse of :mod:`byok_middleware.providers.anthropic_response`, sharing its tables (stop
reasons, usage, error types) and ``anthropic_messages.tool_use_block``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from byok_middleware.errors import BYOKError, InvalidRequest, UpstreamError
from byok_middleware.providers.anthropic import ERROR_TYPE_BY_STATUS
from byok_middleware.providers.anthropic_messages import tool_use_block
from byok_middleware.providers.anthropic_response import (
    anthropic_error_type,
    stop_reason,
    to_anthropic_usage,
)
from byok_middleware.providers.chat_parts import reasoning_text

__all__ = [
    "anthropic_error",
    "anthropic_error_for",
    "estimate_input_tokens",
    "message_id",
    "thinking_block",
    "to_message",
]

# The estimate: about four characters a token for text, a fixed price per image or document
# (Anthropic charges about (width x height) / 750 tokens, at most ~1600 for a resized image).
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_MEDIA = 1600


def message_id(completion_id: str) -> str:
    """The Message id for a chat completion id (shared by plain and streamed answers)."""
    return "msg_" + completion_id.removeprefix("chatcmpl-")


def thinking_block(text: str) -> dict[str, Any]:
    """A thinking block for a provider's reasoning text. Its signature is empty: no other model
    can verify it, and the Messages ingress drops thinking blocks sent back."""
    return {"type": "thinking", "thinking": text, "signature": ""}


def to_message(completion: Mapping[str, Any], *, model: str) -> dict[str, Any]:
    """Translate a ``chat.completion`` to an Anthropic Message labelled ``model``: a thinking
    block (when the provider reasoned aloud), a text block, then ``tool_use`` blocks.

    Raises :class:`UpstreamError` (502) when the completion has no choice or a tool call's
    arguments are not a JSON object.
    """
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, Mapping) or not isinstance(choice.get("message"), Mapping):
        raise UpstreamError("The provider returned a completion without a choice.")
    reply: Mapping[str, Any] = choice["message"]
    content: list[dict[str, Any]] = []
    reasoning = reasoning_text(reply)
    if reasoning:
        content.append(thinking_block(reasoning))
    text = reply.get("refusal") or reply.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for k, call in enumerate(reply.get("tool_calls") or []):
        try:
            content.append(tool_use_block(call, f"choices[0].message.tool_calls[{k}]"))
        except InvalidRequest as exc:  # the provider's output, not the client's input, is wrong
            raise UpstreamError(
                f"The provider returned a malformed tool call: {exc.message}"
            ) from None
    usage = completion.get("usage")
    return {
        "id": message_id(str(completion.get("id") or "")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": to_anthropic_usage(usage if isinstance(usage, Mapping) else {}),
    }


def anthropic_error(status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
    """Anthropic's error body ``{"type": "error", "error": {"type", "message"}}``; the type
    follows ``status`` unless given."""
    if error_type is None:
        error_type = ERROR_TYPE_BY_STATUS.get(status)
    if error_type is None:
        error_type = "api_error" if status >= 500 else "invalid_request_error"
    return {"type": "error", "error": {"type": error_type, "message": message}}


def anthropic_error_for(exc: BYOKError) -> tuple[int, dict[str, Any]]:
    """``(status, Anthropic error body)`` for one of the gateway's errors, so Messages clients
    get the error shape their SDK reads. The message is the error's client-safe message."""
    status = exc.status_code
    error_type = ERROR_TYPE_BY_STATUS.get(status) or anthropic_error_type(exc.error_type)
    if status == 503:
        error_type = "overloaded_error"
    if error_type == "invalid_request_error" and status >= 500:
        error_type = "api_error"
    return status, anthropic_error(status, exc.message, error_type)


def estimate_input_tokens(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``/v1/messages/count_tokens`` answer for a model Anthropic does not serve: an
    *estimate* (``"estimated": true``) from the characters of system, messages and tools, since
    the gateway holds no tokenizer for other providers' models."""
    chars = len(_flatten(body.get("system")))
    media = 0
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        chars += len(_flatten(content))
        if isinstance(content, list):
            media += sum(
                1
                for block in content
                if isinstance(block, Mapping) and block.get("type") in ("image", "document")
            )
    tools = body.get("tools")
    if isinstance(tools, list):
        chars += len(json.dumps(tools))
    tokens = math.ceil(chars / _CHARS_PER_TOKEN) + _TOKENS_PER_MESSAGE * len(messages)
    return {"input_tokens": tokens + _TOKENS_PER_MEDIA * media, "estimated": True}


def _flatten(value: Any) -> str:
    """The text of a string or of (nested) content blocks; media sources are not text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_flatten(item) for item in value)
    if isinstance(value, Mapping):
        if value.get("type") == "tool_use":
            return json.dumps(value.get("input") or {}) + str(value.get("name") or "")
        return "".join(_flatten(value.get(field)) for field in ("text", "thinking", "content"))
    return ""

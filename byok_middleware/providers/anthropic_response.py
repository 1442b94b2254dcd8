"""Anthropic Message -> OpenAI ``chat.completion``; usage and error-object mapping (sans-I/O)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from byok_middleware.providers.anthropic_messages import JSON_TOOL_NAME

__all__ = [
    "anthropic_error_type",
    "completion_id",
    "finish_reason",
    "openai_error",
    "stop_reason",
    "to_anthropic_usage",
    "to_chat_completion",
    "to_openai_usage",
]

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "compaction": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# The other way, one Anthropic reason per OpenAI reason; each maps back through _FINISH_REASONS.
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# Anthropic error type -> (OpenAI error type, OpenAI error code).
_ERROR_TYPES: dict[str, tuple[str, str | None]] = {
    "invalid_request_error": ("invalid_request_error", None),
    # OpenAI's own shape for a rejected key.
    "authentication_error": ("invalid_request_error", "invalid_api_key"),
    "permission_error": ("permission_error", None),
    "not_found_error": ("not_found_error", "not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit_error": ("rate_limit_error", "rate_limit_exceeded"),
    "billing_error": ("insufficient_quota", "insufficient_quota"),
    "api_error": ("server_error", None),
    "overloaded_error": ("server_error", "overloaded_error"),
    "timeout_error": ("server_error", "timeout"),
}


def completion_id(message_id: str) -> str:
    """The OpenAI completion id for an Anthropic message id (shared by plain and streamed)."""
    return f"chatcmpl-{message_id}"


def finish_reason(stop_reason: str | None, *, has_tool_calls: bool) -> str:
    """OpenAI ``finish_reason`` for an Anthropic ``stop_reason``; unknown reasons are ``stop``."""
    reason = _FINISH_REASONS.get(stop_reason or "", "stop")
    if reason == "tool_calls" and not has_tool_calls:
        return "stop"  # only the JSON response tool was called: that is the answer
    return reason


def stop_reason(finish: str | None) -> str:
    """Anthropic ``stop_reason`` for an OpenAI ``finish_reason``; unknown ones end the turn."""
    return _STOP_REASONS.get(finish or "", "end_turn")


def anthropic_error_type(openai_type: str | None) -> str:
    """The Anthropic error type for an OpenAI error ``type`` (``api_error`` when unknown)."""
    for anthropic_type, (known, _) in _ERROR_TYPES.items():
        if known == openai_type:
            return anthropic_type
    return "api_error"


def _tokens(usage: Mapping[str, Any], field: str) -> int:
    value = usage.get(field)
    return value if isinstance(value, int) else 0  # Anthropic sends null for absent counts


def to_openai_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI ``usage`` from Anthropic's. Anthropic's ``input_tokens`` exclude cache reads and
    writes, OpenAI's ``prompt_tokens`` include them (``cached_tokens`` is a subset)."""
    cache_write = _tokens(usage, "cache_creation_input_tokens")
    cache_read = _tokens(usage, "cache_read_input_tokens")
    prompt = _tokens(usage, "input_tokens") + cache_write + cache_read
    completion = _tokens(usage, "output_tokens")
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cache_read, "cache_write_tokens": cache_write},
    }


def to_anthropic_usage(usage: Mapping[str, Any]) -> dict[str, int]:
    """Anthropic ``usage`` from OpenAI's: the inverse of :func:`to_openai_usage`, so cached
    prompt tokens move out of ``input_tokens`` into ``cache_read_input_tokens``."""
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, Mapping) else {}
    cache_read = _tokens(details, "cached_tokens")
    cache_write = _tokens(details, "cache_write_tokens")
    return {
        "input_tokens": max(0, _tokens(usage, "prompt_tokens") - cache_read - cache_write),
        "output_tokens": _tokens(usage, "completion_tokens"),
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
    }


def to_chat_completion(
    message: Mapping[str, Any], *, model: str, created: int, json_mode: bool = False
) -> dict[str, Any]:
    """Translate an Anthropic Message to an OpenAI ``chat.completion`` labelled ``model``.

    Text blocks are concatenated into ``content`` (``None`` when there is none but tool calls
    are); ``thinking`` becomes the non-standard ``reasoning_content``. With ``json_mode`` (see
    ``uses_json_tool``) the ``json_response`` tool's input is returned as ``content``.
    """
    text: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text") or "")
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
        elif kind == "tool_use" and json_mode and block.get("name") == JSON_TOOL_NAME:
            text.append(json.dumps(block.get("input") or {}))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input") or {})
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        # redacted_thinking and server-tool blocks have no OpenAI counterpart.
    content = "".join(text)
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": None if not content and tool_calls else content,
        "refusal": None,
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    stop_reason = message.get("stop_reason")
    return {
        "id": completion_id(str(message.get("id", ""))),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason(stop_reason, has_tool_calls=bool(tool_calls)),
            }
        ],
        "usage": to_openai_usage(message.get("usage") or {}),
    }


def openai_error(
    error_type: str | None, message: str, *, status: int | None = None
) -> dict[str, Any]:
    """The OpenAI error object ``{message, type, param, code}`` for an Anthropic error type.

    Unknown types keep their name as ``code``; their ``type`` follows ``status`` when known.
    """
    known = _ERROR_TYPES.get(error_type or "")
    if known is None:
        fallback = (
            "invalid_request_error" if status is not None and status < 500 else "server_error"
        )
        known = (fallback, error_type)
    openai_type, code = known
    return {"message": message, "type": openai_type, "param": None, "code": code}

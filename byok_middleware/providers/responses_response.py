"""OpenAI chat completion -> OpenAI Responses ``response`` object (sans-I/O).

Also the pieces the stream translation shares: the response envelope that echoes the request,
output items, status and usage. Output items are, in this order: a ``reasoning`` item (summary
only) when the provider returned reasoning text, a ``message`` with ``output_text`` (or
``refusal``), then one ``function_call`` per tool call. Item ids derive from the response id, so
a stored response and its replay agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from byok_middleware.errors import UpstreamError
from byok_middleware.providers.chat_parts import reasoning_text

__all__ = [
    "finish_status",
    "function_call_item",
    "item_id",
    "message_item",
    "reasoning_item",
    "response_object",
    "to_response",
    "to_responses_usage",
]

Item = dict[str, Any]

# finish_reason -> incomplete_details.reason; anything else completes the response.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
_ITEM_PREFIX = {"message": "msg", "function_call": "fc", "reasoning": "rs"}


def item_id(response_id: str, kind: str, output_index: int) -> str:
    """The id of output item ``output_index`` (of type ``kind``) of response ``response_id``."""
    suffix = response_id.removeprefix("resp_")
    return f"{_ITEM_PREFIX[kind]}_{suffix}_{output_index}"


def message_item(id_: str, text: str, *, refusal: bool = False, status: str = "completed") -> Item:
    """An assistant ``message`` item with one ``output_text`` (or ``refusal``) part."""
    part = (
        {"type": "refusal", "refusal": text}
        if refusal
        else {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    )
    return {
        "id": id_,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [part],
    }


def function_call_item(
    id_: str, call_id: str, name: str, arguments: str, *, status: str = "completed"
) -> Item:
    """A ``function_call`` output item."""
    return {
        "id": id_,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def reasoning_item(id_: str, summary: str) -> Item:
    """A ``reasoning`` item whose only summary part is the provider's reasoning text."""
    parts = [{"type": "summary_text", "text": summary}] if summary else []
    return {"id": id_, "type": "reasoning", "summary": parts}


def finish_status(finish_reason: str | None) -> tuple[str, dict[str, str] | None]:
    """``(status, incomplete_details)`` of a response whose chat choice ended so."""
    reason = _INCOMPLETE.get(finish_reason or "")
    return ("completed", None) if reason is None else ("incomplete", {"reason": reason})


def _count(usage: Mapping[str, Any], field: str, detail: str | None = None) -> int:
    value: Any = usage.get(field)
    if detail is not None:
        value = value.get(detail) if isinstance(value, Mapping) else None
    return value if isinstance(value, int) else 0


def to_responses_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Responses ``usage`` from chat ``usage`` (same totals; cached and reasoning details)."""
    prompt = _count(usage, "prompt_tokens")
    completion = _count(usage, "completion_tokens")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _count(usage, "prompt_tokens_details", "cached_tokens"),
            "cache_write_tokens": _count(usage, "prompt_tokens_details", "cache_write_tokens"),
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": _count(usage, "completion_tokens_details", "reasoning_tokens")
        },
        "total_tokens": prompt + completion,
    }


def response_object(
    request: Mapping[str, Any], *, response_id: str, created_at: int, model: str
) -> dict[str, Any]:
    """An ``in_progress`` response with no output, echoing the request's settings."""
    reasoning = request.get("reasoning")
    text = request.get("text")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True),
        "previous_response_id": request.get("previous_response_id"),
        "reasoning": {
            "effort": reasoning.get("effort") if isinstance(reasoning, Mapping) else None,
            "summary": reasoning.get("summary") if isinstance(reasoning, Mapping) else None,
        },
        "store": request.get("store", True),
        "temperature": request.get("temperature"),
        "text": dict(text) if isinstance(text, Mapping) else {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice", "auto"),
        "tools": list(request.get("tools") or []),
        "top_p": request.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": request.get("user"),
        "metadata": dict(request.get("metadata") or {}),
    }


def to_response(
    completion: Mapping[str, Any],
    request: Mapping[str, Any],
    *,
    response_id: str,
    created_at: int,
    model: str,
) -> dict[str, Any]:
    """Translate a ``chat.completion`` answering ``request`` (the Responses body) to a
    ``response`` object labelled ``model``.

    Raises :class:`UpstreamError` (502) when the completion has no choice.
    """
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, Mapping) or not isinstance(choice.get("message"), Mapping):
        raise UpstreamError("The provider returned a completion without a choice.")
    message: Mapping[str, Any] = choice["message"]
    output: list[Item] = []
    summary = reasoning_text(message)
    if summary:
        output.append(reasoning_item(item_id(response_id, "reasoning", len(output)), summary))
    tool_calls = [call for call in message.get("tool_calls") or [] if isinstance(call, Mapping)]
    content, refusal = message.get("content"), message.get("refusal")
    if isinstance(refusal, str) and refusal:
        refusal_id = item_id(response_id, "message", len(output))
        output.append(message_item(refusal_id, refusal, refusal=True))
    elif (isinstance(content, str) and content) or not tool_calls:
        text = content if isinstance(content, str) else ""
        output.append(message_item(item_id(response_id, "message", len(output)), text))
    for call in tool_calls:
        function = call.get("function") or {}
        output.append(
            function_call_item(
                item_id(response_id, "function_call", len(output)),
                str(call.get("id") or ""),
                str(function.get("name") or ""),
                str(function.get("arguments") or ""),
            )
        )
    status, incomplete = finish_status(choice.get("finish_reason"))
    response = response_object(request, response_id=response_id, created_at=created_at, model=model)
    usage = completion.get("usage")
    response |= {
        "status": status,
        "incomplete_details": incomplete,
        "output": output,
        "usage": to_responses_usage(usage) if isinstance(usage, Mapping) else None,
    }
    return response

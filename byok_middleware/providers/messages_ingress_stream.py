"""OpenAI chat SSE chunks -> Anthropic Messages stream events (sans-I/O).

The caller frames the upstream SSE, parses each ``data:`` JSON into a dict and feeds it; on
``[DONE]`` (or the end of the body) it calls ``finish``. Each frame is ``(event name, data)`` for
``event: <name>`` / ``data: <json>``, in Anthropic's order: ``message_start``, per content block
``content_block_start``, its ``content_block_delta`` events (``thinking_delta``, ``text_delta``,
``input_json_delta``) and ``content_block_stop``, then ``message_delta`` (stop reason and the
final, cumulative usage) and ``message_stop``. A mid-stream error chunk becomes an ``error``
event, after which the translator emits nothing more.

Blocks stream one at a time, as Anthropic's do. Chat usage arrives only at the end, so
``message_start`` reports zero tokens and ``message_delta`` carries every count, which the
``anthropic`` SDK's accumulator takes as the totals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from byok_middleware.providers.anthropic_response import (
    anthropic_error_type,
    stop_reason,
    to_anthropic_usage,
)
from byok_middleware.providers.chat_parts import ChatStreamReader, ToolCallDelta
from byok_middleware.providers.messages_ingress_response import message_id, thinking_block

__all__ = ["Frame", "MessagesStreamTranslator"]

Frame = tuple[str, dict[str, Any]]
_DELTAS = {"thinking": ("thinking_delta", "thinking"), "text": ("text_delta", "text")}


class MessagesStreamTranslator(ChatStreamReader):
    """Translates one streamed chat completion into Messages events; one per upstream stream.

    ``model`` is the label the client sees.
    """

    def __init__(self, *, model: str) -> None:
        super().__init__()
        self._model = model
        self._started = False
        self._blocks = 0
        self._current: tuple[str, int] | None = None  # (kind, index) of the open block
        self._tools: dict[int, int] = {}  # tool-call ordinal -> block index

    def feed(self, chunk: Mapping[str, Any]) -> list[Frame]:
        """The events for one parsed ``chat.completion.chunk``."""
        if self._done:
            return []
        frames = self._start(chunk)
        parts = self._read(chunk)
        if parts.error is not None:
            message = parts.error.get("message")
            error = {
                "type": anthropic_error_type(parts.error.get("type")),
                "message": message if isinstance(message, str) else "The provider failed.",
            }
            return [*frames, ("error", {"type": "error", "error": error})]
        if parts.reasoning:
            frames += self._text("thinking", parts.reasoning)
        for text in (parts.text, parts.refusal):
            if text:
                frames += self._text("text", text)
        for call in parts.tool_calls:
            frames += self._tool(call)
        return frames

    def finish(self) -> list[Frame]:
        """The closing events: the open block's stop, ``message_delta`` and ``message_stop``.
        Nothing after a failure or a second call."""
        if self._done:
            return []
        self._done = True
        frames = self._start({})
        frames += self._stop()
        delta = {"stop_reason": stop_reason(self._finish_reason), "stop_sequence": None}
        usage = to_anthropic_usage(self._usage or {})
        frames.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        frames.append(("message_stop", {"type": "message_stop"}))
        return frames

    def _start(self, chunk: Mapping[str, Any]) -> list[Frame]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {
            "id": message_id(str(chunk.get("id") or "")),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": to_anthropic_usage({}),
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _open(self, kind: str, block: dict[str, Any]) -> list[Frame]:
        frames = self._stop()
        index = self._blocks
        self._blocks += 1
        self._current = (kind, index)
        start = {"type": "content_block_start", "index": index, "content_block": block}
        return [*frames, ("content_block_start", start)]

    def _stop(self) -> list[Frame]:
        if self._current is None:
            return []
        _, index = self._current
        self._current = None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _delta(self, index: int, delta: dict[str, Any]) -> Frame:
        return "content_block_delta", {
            "type": "content_block_delta",
            "index": index,
            "delta": delta,
        }

    def _text(self, kind: str, text: str) -> list[Frame]:
        frames: list[Frame] = []
        if self._current is None or self._current[0] != kind:
            start = thinking_block("") if kind == "thinking" else {"type": "text", "text": ""}
            frames += self._open(kind, start)
        delta_type, field = _DELTAS[kind]
        index = self._blocks - 1
        return [*frames, self._delta(index, {"type": delta_type, field: text})]

    def _tool(self, call: ToolCallDelta) -> list[Frame]:
        frames: list[Frame] = []
        ordinal, is_new = self._numbering.number(call)
        if is_new:
            block = {"type": "tool_use", "id": call.id or "", "name": call.name or "", "input": {}}
            frames += self._open("tool", block)
            self._tools[ordinal] = self._blocks - 1
        if call.arguments:
            # An interleaved call's late fragment still goes to its own block index, which the
            # SDK's accumulator appends to even after that block's stop.
            delta = {"type": "input_json_delta", "partial_json": call.arguments}
            frames.append(self._delta(self._tools[ordinal], delta))
        return frames

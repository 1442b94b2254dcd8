"""Anthropic Messages SSE events -> OpenAI ``chat.completion.chunk`` dicts (sans-I/O).

The caller frames the SSE bytes and feeds one event at a time; the translator keeps only what the
conversion needs (block kinds, tool-call numbering, usage so far) and never touches I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from byok_middleware.providers.anthropic_messages import JSON_TOOL_NAME
from byok_middleware.providers.anthropic_response import (
    completion_id,
    finish_reason,
    openai_error,
    to_openai_usage,
)

__all__ = ["StreamTranslator"]


@dataclass(slots=True)
class _Block:
    kind: str  # "text", "thinking", "tool", "json" (the response_format tool) or "other"
    tool_index: int = -1
    has_input: bool = False


class StreamTranslator:
    """Translates one streamed Anthropic message; make one per upstream response.

    ``feed`` returns the chunks to emit for each event, in order. Content chunks carry no
    ``usage`` key; when ``include_usage`` is set, :meth:`final_chunks` gives the usage-only chunk
    to send before ``[DONE]``. With ``json_mode`` (see ``uses_json_tool``) the ``json_response``
    tool's input streams as ``content``.
    """

    def __init__(
        self, *, model: str, created: int, include_usage: bool, json_mode: bool = False
    ) -> None:
        self._model = model
        self._created = created
        self._include_usage = include_usage
        self._json_mode = json_mode
        self._id = completion_id("")
        self._blocks: dict[int, _Block] = {}
        self._tool_count = 0
        self._raw_usage: dict[str, Any] | None = None
        self._finished = False
        self._failed = False

    @property
    def usage(self) -> dict[str, Any] | None:
        """The OpenAI usage known so far, or ``None`` before ``message_start``."""
        return None if self._raw_usage is None else to_openai_usage(self._raw_usage)

    @property
    def finished(self) -> bool:
        """Whether ``message_stop`` was seen."""
        return self._finished

    @property
    def failed(self) -> bool:
        """Whether an ``error`` event was seen (the stream must end after its chunk)."""
        return self._failed

    def final_chunks(self) -> list[dict[str, Any]]:
        """After ``message_stop``: the usage chunk when the client asked for it, else ``[]``."""
        if not (self._finished and self._include_usage and self._raw_usage is not None):
            return []
        return [{**self._envelope(), "choices": [], "usage": self.usage}]

    def feed(self, event: str, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Translate one event (its ``event:`` name and parsed ``data:``); unknown events and
        ``ping`` yield nothing."""
        # Without an `event:` line an SSE event is named "message"; Anthropic repeats it in data.
        match data.get("type") if event in ("", "message") else event:
            case "message_start":
                return self._on_message_start(data.get("message") or {})
            case "content_block_start":
                return self._on_block_start(data.get("index", -1), data.get("content_block") or {})
            case "content_block_delta":
                return self._on_block_delta(data.get("index", -1), data.get("delta") or {})
            case "content_block_stop":
                return self._on_block_stop(data.get("index", -1))
            case "message_delta":
                return self._on_message_delta(data)
            case "message_stop":
                self._finished = True
            case "error":
                self._failed = True
                error = data.get("error") or {}
                message = error.get("message") or "Anthropic reported an error mid-stream."
                return [{"error": openai_error(error.get("type"), message)}]
        return []

    def _envelope(self) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
        }

    def _chunk(self, delta: dict[str, Any], reason: str | None = None) -> list[dict[str, Any]]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return [{**self._envelope(), "choices": [choice]}]

    def _merge_usage(self, usage: Mapping[str, Any] | None) -> None:
        if self._raw_usage is None:
            self._raw_usage = {}
        # Counts are cumulative: the latest non-null value replaces, never adds to, the earlier.
        self._raw_usage.update((k, v) for k, v in (usage or {}).items() if v is not None)

    def _on_message_start(self, message: Mapping[str, Any]) -> list[dict[str, Any]]:
        self._id = completion_id(str(message.get("id", "")))
        self._merge_usage(message.get("usage"))
        return self._chunk({"role": "assistant", "content": ""})

    def _on_block_start(self, index: int, block: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = block.get("type")
        if kind == "tool_use" and self._json_mode and block.get("name") == JSON_TOOL_NAME:
            self._blocks[index] = _Block("json")
        elif kind == "tool_use":
            # OpenAI numbers tool calls 0, 1, ...; Anthropic's index counts every block.
            self._blocks[index] = _Block("tool", tool_index=self._tool_count)
            self._tool_count += 1
            call = {
                "index": self._blocks[index].tool_index,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return self._chunk({"tool_calls": [call]})
        elif kind == "text":
            self._blocks[index] = _Block("text")
            if block.get("text"):
                return self._chunk({"content": block["text"]})
        elif kind == "thinking":
            self._blocks[index] = _Block("thinking")
            if block.get("thinking"):
                return self._chunk({"reasoning_content": block["thinking"]})
        else:
            self._blocks[index] = _Block("other")
        return []

    def _on_block_delta(self, index: int, delta: Mapping[str, Any]) -> list[dict[str, Any]]:
        block = self._blocks.get(index, _Block("other"))
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return self._chunk({"content": delta["text"]})
        if kind == "thinking_delta" and delta.get("thinking"):
            return self._chunk({"reasoning_content": delta["thinking"]})
        if kind == "input_json_delta" and delta.get("partial_json"):
            block.has_input = True
            return self._input_chunk(block, delta["partial_json"])
        return []  # signature and citation deltas have no OpenAI counterpart

    def _on_block_stop(self, index: int) -> list[dict[str, Any]]:
        block = self._blocks.get(index)
        if block is not None and block.kind in ("tool", "json") and not block.has_input:
            return self._input_chunk(block, "{}")  # a tool called without input still has args
        return []

    def _input_chunk(self, block: _Block, fragment: str) -> list[dict[str, Any]]:
        if block.kind == "json":
            return self._chunk({"content": fragment})
        if block.kind == "tool":
            call = {"index": block.tool_index, "function": {"arguments": fragment}}
            return self._chunk({"tool_calls": [call]})
        return []

    def _on_message_delta(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        self._merge_usage(data.get("usage"))
        stop_reason = (data.get("delta") or {}).get("stop_reason")
        return self._chunk({}, finish_reason(stop_reason, has_tool_calls=self._tool_count > 0))

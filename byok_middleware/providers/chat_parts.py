"""Reading OpenAI chat completions and chunks as the other dialects need them (sans-I/O).

The Responses and Messages translations both turn chat output into their own shapes; this module
is the one place that knows where chat output hides its parts across providers: reasoning in
``reasoning_content`` (DeepSeek, our Anthropic translation) or ``reasoning`` (Groq), usage on a
usage-only chunk, on the last content chunk (Gemini), cumulatively on every chunk (NVIDIA) or in
``x_groq.usage``, and a mid-stream error as a chunk with a top-level ``error``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ChatStreamReader",
    "ChunkParts",
    "ToolCallDelta",
    "ToolCallNumbering",
    "chunk_usage",
    "compact_content",
    "read_chunk",
    "reasoning_text",
]

_REASONING_FIELDS = ("reasoning_content", "reasoning")


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """One ``delta.tool_calls[]`` entry: the first for an ``index`` carries ``id`` and ``name``."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class ChunkParts:
    """What one chat chunk says, each part empty when the chunk does not carry it."""

    reasoning: str = ""
    text: str = ""
    refusal: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    finish_reason: str | None = None
    usage: Mapping[str, Any] | None = None
    error: Mapping[str, Any] | None = None


def reasoning_text(message: Mapping[str, Any]) -> str:
    """The reasoning text of a chat ``message`` or ``delta`` under either provider's name."""
    for field in _REASONING_FIELDS:
        value = message.get(field)
        if isinstance(value, str) and value:
            return value
    return ""


def chunk_usage(chunk: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The usage a chunk carries (``usage`` or Groq's ``x_groq.usage``), else ``None``.

    Providers that repeat usage send cumulative totals, so the latest one seen is the answer.
    """
    usage = chunk.get("usage")
    if isinstance(usage, Mapping):
        return usage
    groq = chunk.get("x_groq")
    usage = groq.get("usage") if isinstance(groq, Mapping) else None
    return usage if isinstance(usage, Mapping) else None


def read_chunk(chunk: Mapping[str, Any]) -> ChunkParts:
    """The parts of one parsed ``chat.completion.chunk`` (only ``choices[0]`` is read: the
    translations ask for one choice)."""
    error = chunk.get("error")
    if error is not None:
        return ChunkParts(error=error if isinstance(error, Mapping) else {"message": str(error)})
    choices = chunk.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    choice = choice if isinstance(choice, Mapping) else {}
    delta = choice.get("delta")
    delta = delta if isinstance(delta, Mapping) else {}
    finish = choice.get("finish_reason")
    return ChunkParts(
        reasoning=reasoning_text(delta),
        text=_string(delta.get("content")),
        refusal=_string(delta.get("refusal")),
        tool_calls=tuple(_tool_call_deltas(delta.get("tool_calls"))),
        finish_reason=finish if isinstance(finish, str) else None,
        usage=chunk_usage(chunk),
    )


def compact_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """Chat message content from text/image/file parts: one string when all are text, since
    several OpenAI-compatible providers take only strings in some roles."""
    if all(part.get("type") == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _tool_call_deltas(raw: Any) -> list[ToolCallDelta]:
    if not isinstance(raw, list):
        return []
    deltas = []
    for position, call in enumerate(raw):
        if not isinstance(call, Mapping):
            continue
        function = call.get("function")
        function = function if isinstance(function, Mapping) else {}
        index = call.get("index")
        call_id, name = call.get("id"), function.get("name")
        deltas.append(
            ToolCallDelta(
                # Some providers (Gemini) omit the index; a call's position then stands for it.
                index=index if isinstance(index, int) else position,
                id=call_id if isinstance(call_id, str) and call_id else None,
                name=name if isinstance(name, str) and name else None,
                arguments=_string(function.get("arguments")),
            )
        )
    return deltas


class ToolCallNumbering:
    """Numbers streamed tool calls 0, 1, ... in order of appearance.

    Calls are keyed by ``index``; a delta that brings a new ``id`` for an index already seen
    starts a new call (Gemini streams each call whole, all at index 0).
    """

    def __init__(self) -> None:
        self._by_index: dict[int, tuple[int, str | None]] = {}
        self.count = 0

    def number(self, delta: ToolCallDelta) -> tuple[int, bool]:
        """``(ordinal of the call, whether this delta starts it)``."""
        known = self._by_index.get(delta.index)
        if known is not None and (delta.id is None or delta.id == known[1]):
            return known[0], False
        ordinal = self.count
        self.count += 1
        self._by_index[delta.index] = (ordinal, delta.id)
        return ordinal, True


class ChatStreamReader:
    """What every translation of a chat stream tracks: the latest usage, the finish reason, an
    upstream error and tool-call numbering. Dialect translators build on it."""

    def __init__(self) -> None:
        self._usage: Mapping[str, Any] | None = None
        self._error: dict[str, Any] | None = None
        self._finish_reason: str | None = None
        self._numbering = ToolCallNumbering()
        self._done = False

    @property
    def usage(self) -> dict[str, Any] | None:
        """The latest chat-completions ``usage`` the upstream sent (for metering), or ``None``."""
        return None if self._usage is None else dict(self._usage)

    @property
    def failed(self) -> bool:
        """Whether the upstream sent an error chunk (the translated stream has ended)."""
        return self._error is not None

    @property
    def error(self) -> dict[str, Any] | None:
        """The upstream's (OpenAI-shaped) error object when :attr:`failed`, else ``None``."""
        return self._error

    def _read(self, chunk: Mapping[str, Any]) -> ChunkParts:
        """Read ``chunk``, keeping its usage and finish reason; an error ends the stream."""
        parts = read_chunk(chunk)
        if parts.error is not None:
            self._error = dict(parts.error)
            self._done = True
        if parts.usage is not None:
            self._usage = parts.usage
        self._finish_reason = parts.finish_reason or self._finish_reason
        return parts

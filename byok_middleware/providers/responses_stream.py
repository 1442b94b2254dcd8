"""OpenAI chat SSE chunks -> the OpenAI Responses event sequence (sans-I/O).

The caller frames the upstream SSE, parses each ``data:`` JSON into a dict and feeds it; on
``[DONE]`` (or the end of the body) it calls ``finish``. Each returned frame is
``(event name, data)`` for ``event: <name>`` / ``data: <json>``; Responses streams end without
``[DONE]``.

The sequence follows OpenAI's: ``response.created``, ``response.in_progress``, then per output
item ``response.output_item.added``, its part and delta events and ``response.output_item.done``,
and last ``response.completed`` (``response.incomplete`` when the answer was cut by the token cap
or a content filter) with usage. Every event carries a ``sequence_number`` from 0. A mid-stream
error chunk becomes ``response.failed``, after which the translator emits nothing more.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from byok_middleware.providers.chat_parts import ChatStreamReader, ToolCallDelta
from byok_middleware.providers.responses_response import (
    finish_status,
    function_call_item,
    item_id,
    message_item,
    reasoning_item,
    response_object,
    to_responses_usage,
)

__all__ = ["Frame", "ResponsesStreamTranslator"]

Frame = tuple[str, dict[str, Any]]
_ERROR_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})


@dataclass(slots=True)
class _Open:
    """An output item whose deltas are still arriving."""

    kind: str  # "text", "refusal", "reasoning" or "tool"
    index: int
    id: str
    parts: list[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""


class ResponsesStreamTranslator(ChatStreamReader):
    """Translates one streamed chat completion into Responses events; one per upstream stream.

    ``request`` is the client's Responses body (echoed in the response object); ``model`` the
    label the client sees.
    """

    def __init__(
        self, request: Mapping[str, Any], *, response_id: str, created_at: int, model: str
    ) -> None:
        super().__init__()
        self._response = response_object(
            request, response_id=response_id, created_at=created_at, model=model
        )
        self._id = response_id
        self._sequence = 0
        self._started = False
        self._output: list[dict[str, Any]] = []
        self._open: dict[int, _Open] = {}
        self._current: _Open | None = None  # the open text, refusal or reasoning item
        self._tools: dict[int, _Open] = {}

    @property
    def response(self) -> dict[str, Any]:
        """The response object as it stands (complete after :meth:`finish`), e.g. to store it."""
        return copy.deepcopy(self._response)

    def feed(self, chunk: Mapping[str, Any]) -> list[Frame]:
        """The events for one parsed ``chat.completion.chunk``."""
        if self._done:
            return []
        frames = self._start()
        parts = self._read(chunk)
        if parts.error is not None:
            return frames + self._fail(parts.error)
        if parts.reasoning:
            frames += self._text_delta("reasoning", parts.reasoning)
        if parts.text:
            frames += self._text_delta("text", parts.text)
        if parts.refusal:
            frames += self._text_delta("refusal", parts.refusal)
        for call in parts.tool_calls:
            frames += self._tool_delta(call)
        return frames

    def finish(self) -> list[Frame]:
        """The closing events: every open item done, then ``response.completed`` (or
        ``response.incomplete``) with usage. Nothing after a failure or a second call."""
        if self._done:
            return []
        frames = self._start()
        for index in sorted(self._open):
            frames += self._close(self._open[index])
        self._done = True
        status, incomplete = finish_status(self._finish_reason)
        self._response |= {"status": status, "incomplete_details": incomplete}
        if self._usage is not None:
            self._response["usage"] = to_responses_usage(self._usage)
        name = "response.completed" if status == "completed" else "response.incomplete"
        return [*frames, self._event(name, response=self.response)]

    def _event(self, event: str, /, **fields: Any) -> Frame:
        data = {"type": event, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event, data

    def _start(self) -> list[Frame]:
        if self._started:
            return []
        self._started = True
        return [
            self._event("response.created", response=self.response),
            self._event("response.in_progress", response=self.response),
        ]

    def _fail(self, error: Mapping[str, Any]) -> list[Frame]:
        message = error.get("message")
        code = error.get("code")
        if code not in _ERROR_CODES:
            code = "rate_limit_exceeded" if error.get("type") == "rate_limit_error" else None
        self._response |= {
            "status": "failed",
            "error": {
                "code": code or "server_error",
                "message": message if isinstance(message, str) else "The provider failed.",
            },
        }
        return [self._event("response.failed", response=self.response)]

    def _add(
        self, item: dict[str, Any], kind: str, call_id: str = "", name: str = ""
    ) -> tuple[_Open, Frame]:
        index = len(self._output)
        self._output.append(item)
        self._response["output"] = self._output
        opened = _Open(kind, index, item["id"], call_id=call_id, name=name)
        self._open[index] = opened
        return opened, self._event("response.output_item.added", output_index=index, item=item)

    def _text_delta(self, kind: str, text: str) -> list[Frame]:
        frames: list[Frame] = []
        current = self._current
        if current is None or current.kind != kind:
            if current is not None:
                frames += self._close(current)
            frames += self._open_text(kind)
        current = self._current
        if current is None:  # _open_text always sets it; this narrows the type
            return frames
        current.parts.append(text)
        where = {"item_id": current.id, "output_index": current.index}
        if kind == "reasoning":
            frames.append(
                self._event(
                    "response.reasoning_summary_text.delta", **where, summary_index=0, delta=text
                )
            )
        elif kind == "refusal":
            frames.append(
                self._event("response.refusal.delta", **where, content_index=0, delta=text)
            )
        else:
            frames.append(
                self._event(
                    "response.output_text.delta", **where, content_index=0, delta=text, logprobs=[]
                )
            )
        return frames

    def _open_text(self, kind: str) -> list[Frame]:
        index = len(self._output)
        if kind == "reasoning":
            item = reasoning_item(item_id(self._id, "reasoning", index), "")
            self._current, added = self._add(item, kind)
            part = {"type": "summary_text", "text": ""}
            where = {"item_id": item["id"], "output_index": index, "summary_index": 0}
            return [added, self._event("response.reasoning_summary_part.added", **where, part=part)]
        item = message_item(item_id(self._id, "message", index), "", status="in_progress")
        part = item["content"][0] if kind == "text" else {"type": "refusal", "refusal": ""}
        item["content"] = []
        self._current, added = self._add(item, kind)
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return [added, self._event("response.content_part.added", **where, part=part)]

    def _tool_delta(self, call: ToolCallDelta) -> list[Frame]:
        frames: list[Frame] = []
        ordinal, is_new = self._numbering.number(call)
        if is_new:
            if self._current is not None:
                frames += self._close(self._current)
            index = len(self._output)
            item = function_call_item(
                item_id(self._id, "function_call", index),
                call.id or "",
                call.name or "",
                "",
                status="in_progress",
            )
            opened, added = self._add(item, "tool", call_id=call.id or "", name=call.name or "")
            self._tools[ordinal] = opened
            frames.append(added)
        tool = self._tools[ordinal]
        if call.arguments:
            tool.parts.append(call.arguments)
            frames.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=tool.id,
                    output_index=tool.index,
                    delta=call.arguments,
                )
            )
        return frames

    def _close(self, opened: _Open) -> list[Frame]:
        del self._open[opened.index]
        if opened is self._current:
            self._current = None
        text = "".join(opened.parts)
        where = {"item_id": opened.id, "output_index": opened.index}
        frames: list[Frame] = []
        if opened.kind == "reasoning":
            item = reasoning_item(opened.id, text)
            part = {"type": "summary_text", "text": text}
            frames.append(
                self._event(
                    "response.reasoning_summary_text.done", **where, summary_index=0, text=text
                )
            )
            frames.append(
                self._event(
                    "response.reasoning_summary_part.done", **where, summary_index=0, part=part
                )
            )
        elif opened.kind == "tool":
            item = function_call_item(opened.id, opened.call_id, opened.name, text)
            frames.append(
                self._event(
                    "response.function_call_arguments.done",
                    **where,
                    name=opened.name,
                    arguments=text,
                )
            )
        else:
            item = message_item(opened.id, text, refusal=opened.kind == "refusal")
            part = item["content"][0]
            if opened.kind == "refusal":
                frames.append(
                    self._event("response.refusal.done", **where, content_index=0, refusal=text)
                )
            else:
                frames.append(
                    self._event(
                        "response.output_text.done",
                        **where,
                        content_index=0,
                        text=text,
                        logprobs=[],
                    )
                )
            frames.append(
                self._event("response.content_part.done", **where, content_index=0, part=part)
            )
        self._output[opened.index] = item
        frames.append(
            self._event("response.output_item.done", output_index=opened.index, item=item)
        )
        return frames

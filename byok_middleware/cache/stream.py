"""Streams into and out of the cache. Sans-I/O.

:class:`StreamAssembler` folds the ``chat.completion.chunk`` events of a streamed answer into one
``chat.completion`` (what is stored), and :func:`replay_as_sse` turns a stored completion back into
the events an upstream stream relayed by the gateway has: a role chunk, the content, tool calls,
the finish chunk, then one last event carrying the metadata (and the usage, when the client asked
for it with ``stream_options.include_usage``), then ``data: [DONE]``. So a plain original can
serve a streamed hit and the reverse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from byok_middleware.cache.entry import CacheEntry

__all__ = ["DONE_EVENT", "StreamAssembler", "as_completion", "replay_as_sse"]

DONE_EVENT = b"data: [DONE]\n\n"


class _Choice:
    __slots__ = ("content", "finish_reason", "logprobs", "refusal", "role", "tool_calls")

    def __init__(self) -> None:
        self.role = "assistant"
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.logprobs: list[Any] | None = None
        self.finish_reason: str | None = None

    def add(self, choice: Mapping[str, Any]) -> None:
        delta = choice.get("delta") or {}
        self.role = delta.get("role") or self.role
        if delta.get("content"):
            self.content.append(delta["content"])
        if delta.get("refusal"):
            self.refusal.append(delta["refusal"])
        for call in delta.get("tool_calls") or ():
            slot = self.tool_calls.setdefault(
                int(call.get("index", 0)),
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            slot["id"] = call.get("id") or slot["id"]
            slot["type"] = call.get("type") or slot["type"]
            function = call.get("function") or {}
            slot["function"]["name"] += function.get("name") or ""
            slot["function"]["arguments"] += function.get("arguments") or ""
        logprobs = choice.get("logprobs")
        if logprobs and logprobs.get("content"):
            self.logprobs = (self.logprobs or []) + list(logprobs["content"])
        self.finish_reason = choice.get("finish_reason") or self.finish_reason

    def message(self, index: int) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role,
            "content": "".join(self.content) if self.content or not self.tool_calls else None,
            "refusal": "".join(self.refusal) or None,
        }
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        return {
            "index": index,
            "message": message,
            "logprobs": None if self.logprobs is None else {"content": self.logprobs},
            "finish_reason": self.finish_reason,
        }


class StreamAssembler:
    """Collects a streamed chat completion; ``result`` is the whole answer, or None when the
    stream did not complete (no ``[DONE]``) or carried an error event."""

    __slots__ = ("_choices", "_failed", "_head", "_metadata_field", "_usage")

    def __init__(self, metadata_field: str | None = None) -> None:
        self._head: dict[str, Any] = {}
        self._choices: dict[int, _Choice] = {}
        self._usage: Any = None
        self._failed = False
        self._metadata_field = metadata_field

    def feed_data(self, payload: bytes) -> None:
        """One event's ``data`` (not ``[DONE]``); unparsable data marks the stream failed."""
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._failed = True
            return
        if isinstance(chunk, dict):
            self.feed(chunk)
        else:
            self._failed = True

    def feed(self, chunk: Mapping[str, Any]) -> None:
        """One parsed chunk."""
        if "error" in chunk:
            self._failed = True
            return
        if not self._head:
            self._head = {
                k: chunk[k] for k in ("id", "created", "model", "system_fingerprint") if k in chunk
            }
        for choice in chunk.get("choices") or ():
            self._choices.setdefault(int(choice.get("index", 0)), _Choice()).add(choice)
        if chunk.get("usage"):
            self._usage = chunk["usage"]

    def result(self, *, completed: bool) -> dict[str, Any] | None:
        """The assembled ``chat.completion``; ``completed`` is whether ``[DONE]`` arrived."""
        if not completed or self._failed or not self._choices:
            return None
        completion: dict[str, Any] = {"object": "chat.completion", **self._head}
        completion["choices"] = [self._choices[i].message(i) for i in sorted(self._choices)]
        if self._usage is not None:
            completion["usage"] = self._usage
        return completion


def as_completion(
    entry: CacheEntry, metadata_field: str, metadata: Mapping[str, Any]
) -> dict[str, Any]:
    """A hit as a plain JSON body: the stored answer with this request's metadata. A shallow
    copy (the metadata is a top-level member): nested values are the entry's, to read only."""
    body = dict(entry.response)
    body[metadata_field] = dict(metadata)
    return body


def _event(chunk: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _choice_deltas(choice: Mapping[str, Any]) -> list[dict[str, Any]]:
    index = choice.get("index", 0)
    message = choice.get("message") or {}
    logprobs = choice.get("logprobs")
    first: dict[str, Any] = {"role": message.get("role", "assistant"), "content": ""}
    if message.get("refusal"):
        first["refusal"] = message["refusal"]
    deltas = [{"index": index, "delta": first, "logprobs": None, "finish_reason": None}]
    if message.get("content"):
        deltas.append(
            {
                "index": index,
                "delta": {"content": message["content"]},
                "logprobs": logprobs,
                "finish_reason": None,
            }
        )
    for position, call in enumerate(message.get("tool_calls") or ()):
        delta = {"tool_calls": [{"index": position, **call}]}
        deltas.append({"index": index, "delta": delta, "logprobs": None, "finish_reason": None})
    deltas.append(
        {"index": index, "delta": {}, "logprobs": None, "finish_reason": choice["finish_reason"]}
    )
    return deltas


def replay_as_sse(
    entry: CacheEntry,
    include_usage: bool,
    metadata_field: str,
    metadata: Mapping[str, Any],
) -> list[bytes]:
    """A stored chat completion as the SSE events of a stream, ``data: [DONE]`` last.

    Every chunk has the stored ``id``, ``created`` and ``model``. As in a relayed upstream
    stream, the metadata (under ``metadata_field``) rides on the last chunk that has choices
    (the one with ``finish_reason``), so a plain ``choices[0]`` loop reads it; with
    ``include_usage`` a usage-only chunk (``choices: []``) follows, carrying the metadata too.
    """
    response = entry.response
    head: dict[str, Any] = {
        "id": response.get("id", ""),
        "object": "chat.completion.chunk",
        "created": response.get("created", int(entry.created_at)),
        "model": response.get("model", entry.model),
    }
    if response.get("system_fingerprint"):
        head["system_fingerprint"] = response["system_fingerprint"]
    if include_usage:
        head["usage"] = None  # OpenAI sends a null usage on every chunk when asked for it
    chunks = [
        {**head, "choices": [delta]}
        for choice in response.get("choices") or ()
        for delta in _choice_deltas(choice)
    ]
    if chunks:
        chunks[-1][metadata_field] = dict(metadata)
    if include_usage:
        final: dict[str, Any] = {**head, "choices": [], "usage": response.get("usage")}
        final[metadata_field] = dict(metadata)
        chunks.append(final)
    events = [_event(chunk) for chunk in chunks]
    events.append(DONE_EVENT)
    return events

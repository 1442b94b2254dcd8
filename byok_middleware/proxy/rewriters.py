"""I/O-free stream rewriters: upstream SSE events in, the client's frames out.

The relay shell (``proxy/relay.py``) moves bytes; a rewriter decides what each upstream event
becomes. Every rewriter answers the same questions, so one shell serves them all:

* ``feed(raw)``: the frames for one raw upstream event (terminator included);
* ``finish(metadata)``: the last frames of a stream that completed. The metadata goes on the
  final chunk that has choices (the one with ``finish_reason``), so a plain
  ``chunk.choices[0]`` loop never meets an empty ``choices``; a client that asked for usage
  also gets the usage-only chunk last, carrying the metadata as well;
* ``abort(error, metadata)``: the last frames of a stream that broke (a well-formed error event
  and the stream's own ending), after any chunk it still held;
* ``usage``, ``completed``, ``done`` (stop reading) and ``error_type`` for the ledger.

A rewriter may also offer ``feed_many(raws)``: the frames of several events at once, stopping
at the one that ends the stream; the relay uses it when present (one call per upstream read
instead of one per event). And ``unchanged(data)``: how many leading bytes of ``data``, one
upstream read that starts on an event boundary, are whole events that would each be relayed byte
for byte; the relay sends those as they came, without splitting them into events, and feeds only
the rest.

``OpenAIChatPassthrough`` is the fast path: chunks pass byte for byte, found by cheap byte
checks. ``ChatChunkRewriter`` encodes chat chunks from a ``ChunkSource`` (Anthropic's translated
events, or parsed OpenAI chunks); other client dialects (Responses, Messages) implement the same
interface over a ``ChunkSource`` and plug into the same shell.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from byok_middleware.asgi import dumps, loads
from byok_middleware.pricing import Usage, usage_from_chunk, usage_from_openai
from byok_middleware.providers import anthropic
from byok_middleware.proxy.sse import data_of, encode_event, parse_event

__all__ = [
    "DONE_EVENT",
    "AnthropicChunks",
    "ChatChunkRewriter",
    "ChunkSource",
    "OpenAIChatPassthrough",
    "OpenAIChunks",
    "StreamRewriter",
]

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"

Redact = Callable[[str], str]


class StreamRewriter(Protocol):
    """What the relay shell needs of a rewriter (see the module docstring)."""

    @property
    def usage(self) -> Usage | None: ...

    @property
    def completed(self) -> bool: ...

    @property
    def done(self) -> bool: ...

    @property
    def error_type(self) -> str | None: ...

    def feed(self, raw: bytes) -> list[bytes]: ...

    def finish(self, metadata: dict[str, Any]) -> list[bytes]: ...

    def abort(self, error: dict[str, Any], metadata: dict[str, Any]) -> list[bytes]: ...


def _value_after(data: bytes, key: bytes) -> bytes | None:
    """The first bytes of the JSON value after ``key`` (a quoted name), or None if absent."""
    index = data.find(key)
    if index < 0:
        return None
    return data[index + len(key) : index + len(key) + 10].lstrip(b": \t")


def _has_usage(data: bytes) -> bool:
    rest = _value_after(data, b'"usage"')
    return rest is not None and not rest.startswith(b"null")


def _has_finish_reason(data: bytes) -> bool:
    rest = _value_after(data, b'"finish_reason"')
    return rest is not None and not rest.startswith(b"null")


def _is_error(data: bytes) -> bool:
    # The bytes '"error"' cannot occur inside a JSON string (its quotes are escaped), so model
    # text never trips this; one C-speed scan per event (``find``: see ``_is_plain_block``).
    return data.find(b'"error"') >= 0


def _is_plain_block(data: bytes) -> bool:
    """``data`` is one or more whole events that are each a plain chunk: a one-line ``data:`` chat
    chunk with nothing to meter, hold or redact (no usage, no finish reason, no error), in compact
    JSON (``"choices":[``, ``"finish_reason":null``, ``"usage":null``). The common event of a
    stream, and the usual upstream read; nine byte scans whatever the number of events.

    Every newline is in a ``\\n\\n`` pair (so each event is one line): the read starts with
    ``data: {``, and so does the event after each pair but the last, which ends the read. There are
    as many ``"choices":[`` as events: those bytes are only ever a key (in a JSON string the quote
    would be escaped, and a string value is never followed by a colon), and a provider's chunk has
    it once. No error, no carriage return, and every finish reason and usage is null. Any other
    spacing or shape takes the per-event path, which reads it the same way.

    On CPython 3.11 each ``bytes`` method call costs more than its scan (its arguments are parsed
    from a format string), and ``needle in data`` more again (it first tries the needle as an
    integer and discards the TypeError), hence ``find`` and as few calls as the checks allow.
    """
    more = data.count(b"\n\ndata: {")  # the events after the first
    return (
        data[:7] == b"data: {"
        and data[-2:] == b"\n\n"
        and data.count(b"\n") == 2 * more + 2
        and data.count(b'"choices":[') == more + 1
        and data.find(b'"error"') < 0
        and data.find(b"\r") < 0
        and data.count(b'"finish_reason"') == data.count(b'"finish_reason":null')
        and data.count(b'"usage"') == data.count(b'"usage":null')
    )


def _split_content(chunk: dict[str, Any]) -> dict[str, Any] | None:
    """For a finish chunk that also carries content: a copy with the content and no
    ``finish_reason`` (sent now), while ``chunk`` keeps an empty delta (held for the metadata),
    which is the shape OpenAI itself sends. None when the deltas are empty already."""
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not any(
        isinstance(c, dict) and c.get("delta") for c in choices
    ):
        return None
    content = {**chunk, "choices": [{**c, "finish_reason": None} for c in choices]}
    chunk["choices"] = [{**c, "delta": {}} if isinstance(c, dict) else c for c in choices]
    return content


def _stamp(chunk: dict[str, Any], field: str, metadata: dict[str, Any]) -> bytes:
    chunk[field] = metadata
    return encode_event(dumps(chunk))


def error_event(error: dict[str, Any], field: str, metadata: dict[str, Any]) -> bytes:
    """An OpenAI-shaped error event carrying the metadata (who paid for what was used)."""
    return encode_event(dumps({"error": error, field: metadata}))


def metadata_chunk(
    field: str, metadata: dict[str, Any], *, chunk_id: str, model: str
) -> dict[str, Any]:
    """A chunk with one empty choice for a stream that sent no ``finish_reason``: a plain
    ``chunk.choices[0].delta.content`` loop reads it without an IndexError."""
    choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": None}
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        field: metadata,
    }


_PEEL = 4  # events looked at from the end of a read for its last plain chunk (``unchanged``)


class OpenAIChatPassthrough:
    """An OpenAI-wire chat stream relayed byte for byte, but for three kinds of event.

    The chunk with ``finish_reason`` is held until the usage arrives, then sent with the
    metadata; the usage-only chunk is shown only to clients that asked for it (the gateway always
    asks upstream, to meter); an error event is redacted.
    """

    __slots__ = (
        "_field",
        "_first",
        "_held",
        "_include_usage",
        "_model",
        "_provider",
        "_redact",
        "_usage_chunk",
        "completed",
        "done",
        "error_type",
        "usage",
    )

    def __init__(
        self, *, provider: str, model: str, field: str, include_usage: bool, redact: Redact
    ) -> None:
        self._provider = provider
        self._model = model
        self._field = field
        self._include_usage = include_usage
        self._redact = redact
        self._held: list[dict[str, Any]] = []  # chunks with finish_reason, not yet sent
        self._usage_chunk: dict[str, Any] | None = None
        self._first: dict[str, Any] | None = None
        self.usage: Usage | None = None
        self.completed = False
        self.done = False
        self.error_type: str | None = None

    def feed(self, raw: bytes) -> list[bytes]:
        if not self._held and _is_plain_block(raw):
            return [raw]  # byte for byte
        return self._feed_event(raw)

    def _feed_event(self, raw: bytes) -> list[bytes]:
        """``feed`` for an event the plain-chunk check did not let through."""
        payload = data_of(raw)
        if payload is None:
            event = parse_event(raw)
            if event is None:
                return []  # comments such as DeepSeek's ": keep-alive"
            payload = event.data
        if payload == DONE:
            self.completed = self.done = True
            return []
        if _is_error(payload) or payload.find(b'"choices"') < 0:
            # An error, or a shape no chat chunk has (every chunk, the usage one included, has
            # "choices"): redacted whatever it looks like. Content chunks skip the scan.
            if _is_error(payload):
                self.error_type = "upstream_stream_error"
            return [self._redact(raw.decode("utf-8", "replace")).encode()]
        if not (_has_usage(payload) or _has_finish_reason(payload)):
            out = self._release() if self._held else []
            out.append(raw)
            return out
        chunk = loads(payload)
        if not isinstance(chunk, dict):
            raise ValueError("a stream chunk is not a JSON object")
        if self._first is None:
            self._first = chunk
        if _has_usage(payload):
            self.usage = usage_from_chunk(chunk, provider=self._provider) or self.usage
            if not chunk.get("choices"):
                self._usage_chunk = chunk
                return []
        if _has_finish_reason(payload):
            out = self._release()
            content = _split_content(chunk)
            if content is not None:
                out.append(encode_event(dumps(content)))  # the words never wait for metering
            self._held.append(chunk)
            return out
        out = self._release()
        out.append(raw)
        return out

    def unchanged(self, data: bytes) -> int:
        """How much of the read ``data`` (starting on an event boundary) passes as it came: the
        whole of it when it is plain chunks only, else the plain chunks before the events at its
        end that are not. A read usually holds plain chunks and then, at the end of the stream,
        the events to act on (the finish reason, the usage, ``[DONE]``): those few are peeled
        off one by one and only they go event by event. 0 when something is held back, when no
        plain chunk comes within the last ``_PEEL`` events, or when the run before is not all
        plain chunks (then every event goes through ``feed``)."""
        if self._held:
            return 0
        end = len(data)
        for _ in range(_PEEL):
            start = data.rfind(b"\n\n", 0, end - 2) + 2  # the last event before ``end``
            if start < 2:
                start = 0  # ``end`` closes the first event
            if _is_plain_block(data[start:end]):
                return end if start == 0 or _is_plain_block(data[:start]) else 0
            if start == 0:
                return 0
            end = start
        return 0

    def feed_many(self, raws: list[bytes]) -> list[bytes]:
        """``feed`` over ``raws``, up to ``done``; plain chunks pass without going through it."""
        out: list[bytes] = []
        for raw in raws:
            if not self._held and _is_plain_block(raw):
                out.append(raw)
                continue
            out += self._feed_event(raw)
            if self.done:
                break
        return out

    def _release(self) -> list[bytes]:
        held, self._held = self._held, []
        return [encode_event(dumps(chunk)) for chunk in held]

    def finish(self, metadata: dict[str, Any]) -> list[bytes]:
        held, self._held = self._held, []
        out = [encode_event(dumps(chunk)) for chunk in held[:-1]]
        if held:
            out.append(_stamp(held[-1], self._field, metadata))
        else:
            first = self._first or {}
            chunk = metadata_chunk(
                self._field,
                metadata,
                chunk_id=str(first.get("id", "chatcmpl-gateway")),
                model=str(first.get("model", self._model)),
            )
            out.append(encode_event(dumps(chunk)))
        if self._include_usage and self._usage_chunk is not None:
            # The contract's "last event before [DONE]" carries the metadata too.
            out.append(_stamp(self._usage_chunk, self._field, metadata))
        out.append(DONE_EVENT)
        return out

    def abort(self, error: dict[str, Any], metadata: dict[str, Any]) -> list[bytes]:
        return [*self._release(), error_event(error, self._field, metadata), DONE_EVENT]


class ChunkSource(Protocol):
    """Upstream SSE events as OpenAI chat chunks (dicts), with what the stream reported."""

    @property
    def usage(self) -> Usage | None: ...

    @property
    def completed(self) -> bool: ...

    @property
    def failed(self) -> bool: ...

    def feed(self, raw: bytes) -> list[dict[str, Any]]: ...

    def final_chunks(self) -> list[dict[str, Any]]: ...


class AnthropicChunks:
    """Anthropic's Messages events translated to chat chunks (``providers/anthropic_stream``)."""

    def __init__(self, *, provider: str, model: str, include_usage: bool, json_mode: bool) -> None:
        self._provider = provider
        self._translator = anthropic.StreamTranslator(
            model=model, created=int(time.time()), include_usage=include_usage, json_mode=json_mode
        )

    @property
    def usage(self) -> Usage | None:
        return usage_from_openai(self._translator.usage, provider=self._provider)

    @property
    def completed(self) -> bool:
        return self._translator.finished

    @property
    def failed(self) -> bool:
        return self._translator.failed

    def feed(self, raw: bytes) -> list[dict[str, Any]]:
        event = parse_event(raw)
        if event is None or not event.data:
            return []
        data = loads(event.data)
        if not isinstance(data, dict):
            raise ValueError("an Anthropic event is not a JSON object")
        return self._translator.feed(event.event or "", data)

    def final_chunks(self) -> list[dict[str, Any]]:
        return self._translator.final_chunks()


class OpenAIChunks:
    """An OpenAI-wire chat stream parsed chunk by chunk (for rewriters that need every chunk)."""

    def __init__(self, *, provider: str) -> None:
        self._provider = provider
        self._usage_chunks: list[dict[str, Any]] = []
        self.usage: Usage | None = None
        self.completed = False
        self.failed = False

    def feed(self, raw: bytes) -> list[dict[str, Any]]:
        event = parse_event(raw)
        if event is None or not event.data:
            return []
        if event.data == DONE:
            self.completed = True
            return []
        chunk = loads(event.data)
        if not isinstance(chunk, dict):
            raise ValueError("a stream chunk is not a JSON object")
        if "error" in chunk:
            self.failed = True
            return [chunk]
        if chunk.get("usage"):
            self.usage = usage_from_chunk(chunk, provider=self._provider) or self.usage
            if not chunk.get("choices"):
                self._usage_chunks = [chunk]
                return []
        return [chunk]

    def final_chunks(self) -> list[dict[str, Any]]:
        return self._usage_chunks


class ChatChunkRewriter:
    """Chat chunks from a ``ChunkSource`` encoded as a chat completion stream.

    As with the pass-through, the chunk carrying ``finish_reason`` is held for the metadata and
    the usage chunk (from the source's ``final_chunks``) follows it.
    """

    def __init__(
        self,
        source: ChunkSource,
        *,
        field: str,
        request_id: str,
        model: str,
        redact: Redact,
    ) -> None:
        self._source = source
        self._field = field
        self._request_id = request_id
        self._model = model
        self._redact = redact
        self._held: dict[str, Any] | None = None
        self.error_type: str | None = None

    @property
    def usage(self) -> Usage | None:
        return self._source.usage

    @property
    def completed(self) -> bool:
        return self._source.completed

    @property
    def done(self) -> bool:
        return self._source.completed or self._source.failed

    def feed(self, raw: bytes) -> list[bytes]:
        out: list[bytes] = []
        for chunk in self._source.feed(raw):
            if "error" in chunk:
                self.error_type = "upstream_stream_error"
                out.append(encode_event(self._redact(dumps(chunk).decode()).encode()))
                continue
            if self._held is not None:
                out.append(encode_event(dumps(self._held)))
                self._held = None
            choices = chunk.get("choices")
            if choices and any(c.get("finish_reason") for c in choices if isinstance(c, dict)):
                content = _split_content(chunk)
                if content is not None:
                    out.append(encode_event(dumps(content)))
                self._held = chunk
            else:
                out.append(encode_event(dumps(chunk)))
        return out

    def finish(self, metadata: dict[str, Any]) -> list[bytes]:
        held, self._held = self._held, None
        if held is None:
            held = metadata_chunk(
                self._field,
                metadata,
                chunk_id="chatcmpl-" + self._request_id,
                model=self._model,
            )
        out = [_stamp(held, self._field, metadata)]
        # The contract's "last event before [DONE]" carries the metadata too.
        out += [_stamp(chunk, self._field, metadata) for chunk in self._source.final_chunks()]
        return [*out, DONE_EVENT]

    def abort(self, error: dict[str, Any], metadata: dict[str, Any]) -> list[bytes]:
        held, self._held = self._held, None
        out = [encode_event(dumps(held))] if held is not None else []
        return [*out, error_event(error, self._field, metadata), DONE_EVENT]

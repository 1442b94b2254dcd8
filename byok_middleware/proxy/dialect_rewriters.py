"""Stream rewriters of the Responses and Messages dialects, for the one relay shell.

Two kinds, each a ``StreamRewriter`` (``proxy/rewriters.py``):

* translated: chat chunks from a ``ChunkSource`` (an OpenAI-wire chat stream, or Anthropic's
  events translated to chat) through the dialect's sans-I/O translator
  (``providers/responses_stream`` or ``providers/messages_ingress_stream``);
* native: the provider already speaks the client's dialect (OpenAI ``/responses``, Anthropic
  ``/v1/messages``), so events pass byte for byte but for the few that end the stream.

Either way the events that end a stream (``response.completed``/``incomplete``/``failed``;
``message_delta``/``message_stop``/``error``) are held until the relay knows the cost, then sent
with the metadata object: under ``response.<field>`` for Responses, as a top-level ``<field>`` of
``message_delta`` (or of the ``error`` event) for Messages. Every error text is redacted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from byok_middleware.asgi import dumps, loads
from byok_middleware.pricing import Usage, usage_from_openai
from byok_middleware.providers.anthropic import to_openai_usage
from byok_middleware.providers.responses_stream import ResponsesStreamTranslator
from byok_middleware.proxy.rewriters import ChunkSource
from byok_middleware.proxy.sse import encode_event, parse_event

__all__ = [
    "MessagesPassthrough",
    "MessagesTranslated",
    "ResponsesPassthrough",
    "ResponsesTranslated",
]

Frame = tuple[str, dict[str, Any]]
Redact = Callable[[str], str]
OnResponse = Callable[[dict[str, Any]], None]

_RESPONSE_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_MESSAGE_ENDS = frozenset({"message_delta", "message_stop", "error"})


class FrameTranslator(Protocol):
    """A dialect translator of chat chunks (``ResponsesStreamTranslator`` and the Messages one)."""

    @property
    def failed(self) -> bool: ...

    def feed(self, chunk: Mapping[str, Any]) -> list[Frame]: ...

    def finish(self) -> list[Frame]: ...


def _encode(name: str, data: dict[str, Any], redact: Redact | None = None) -> bytes:
    text = dumps(data)
    if redact is not None:
        text = redact(text.decode()).encode()
    return encode_event(text, event=name)


class _Endings:
    """What both kinds share: the held ending events, stamped and sent last (see module)."""

    _ends: frozenset[str] = frozenset()

    def __init__(self, *, field: str, redact: Redact) -> None:
        self._field = field
        self._redact = redact
        self._held: list[Frame] = []
        self.error_type: str | None = None

    @property
    def _failed(self) -> bool:
        """Whether the upstream's own failure event is among the held ones."""
        return self.error_type == "upstream_stream_error"

    def _release(self, metadata: dict[str, Any]) -> list[bytes]:
        held, self._held = self._held, []
        for name, data in held:
            self._stamp(name, data, metadata)
        return [_encode(name, data, self._redact) for name, data in held]

    def abort(self, error: dict[str, Any], metadata: dict[str, Any]) -> list[bytes]:
        if self._failed:
            return self._release(metadata)  # the upstream's own failure event ends it
        return [*self._release(metadata), _encode(*self._failure(error, metadata))]

    def _stamp(self, name: str, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        raise NotImplementedError

    def _failure(self, error: dict[str, Any], metadata: dict[str, Any]) -> Frame:
        raise NotImplementedError


class _ResponsesEndings(_Endings):
    """Responses: the metadata under ``response``; ``on_response`` gets a finished response."""

    _ends = _RESPONSE_ENDS
    _on_response: OnResponse | None = None
    _patch: Callable[[dict[str, Any]], None] | None = None

    def _stamp(self, name: str, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        response = data.get("response")
        if not isinstance(response, dict):
            return
        if self._patch is not None:
            self._patch(response)
        response[self._field] = metadata
        if name != "response.failed" and self._on_response is not None:
            self._on_response(response)

    def _failure(self, error: dict[str, Any], metadata: dict[str, Any]) -> Frame:
        envelope, sequence = self._so_far()
        failed = {
            **envelope,
            "status": "failed",
            "error": {"code": "server_error", "message": str(error.get("message") or "")},
            self._field: metadata,
        }
        data = {"type": "response.failed", "sequence_number": sequence, "response": failed}
        return "response.failed", data

    def _so_far(self) -> tuple[dict[str, Any], int]:
        """The response object as it stands, and the next sequence number."""
        raise NotImplementedError


class _MessagesEndings(_Endings):
    """Messages: the metadata on ``message_delta`` (and on an ``error`` event)."""

    _ends = _MESSAGE_ENDS

    def _stamp(self, name: str, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        if name != "message_stop":
            data[self._field] = metadata

    def _failure(self, error: dict[str, Any], metadata: dict[str, Any]) -> Frame:
        body = {"type": "api_error", "message": str(error.get("message") or "")}
        return "error", {"type": "error", "error": body, self._field: metadata}


class _Translated(_Endings):
    """Chat chunks from ``source`` through ``translator``."""

    def __init__(
        self, source: ChunkSource, translator: FrameTranslator, *, field: str, redact: Redact
    ) -> None:
        super().__init__(field=field, redact=redact)
        self._source = source
        self._translator = translator
        self._sequence = 0

    @property
    def usage(self) -> Usage | None:
        return self._source.usage

    @property
    def completed(self) -> bool:
        return self._source.completed and not self._translator.failed

    @property
    def done(self) -> bool:
        return self._source.completed or self._source.failed or self._translator.failed

    def _frames(self, frames: list[Frame]) -> list[bytes]:
        out = []
        for name, data in frames:
            sequence = data.get("sequence_number")
            if isinstance(sequence, int):
                self._sequence = sequence + 1
            if name in self._ends:
                self._held.append((name, data))
            else:
                out.append(_encode(name, data))
        return out

    def feed(self, raw: bytes) -> list[bytes]:
        out: list[bytes] = []
        for chunk in self._source.feed(raw):
            out += self._frames(self._translator.feed(chunk))
        if self._translator.failed:
            self.error_type = "upstream_stream_error"
        return out

    def finish(self, metadata: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        for chunk in self._source.final_chunks():  # the usage chunk a source kept back
            out += self._frames(self._translator.feed(chunk))
        out += self._frames(self._translator.finish())
        return out + self._release(metadata)


class ResponsesTranslated(_ResponsesEndings, _Translated):
    """A chat stream as Responses events; ``on_response`` gets the final response object."""

    def __init__(
        self,
        source: ChunkSource,
        translator: ResponsesStreamTranslator,
        *,
        field: str,
        redact: Redact,
        on_response: OnResponse | None = None,
    ) -> None:
        super().__init__(source, translator, field=field, redact=redact)
        self._responses = translator
        self._on_response = on_response

    def _so_far(self) -> tuple[dict[str, Any], int]:
        return self._responses.response, self._sequence


class MessagesTranslated(_MessagesEndings, _Translated):
    """A chat stream as Anthropic Messages events."""


class _Native(_Endings):
    """A stream already in the client's dialect: events pass byte for byte, endings held."""

    def __init__(self, *, provider: str, field: str, redact: Redact) -> None:
        super().__init__(field=field, redact=redact)
        self._provider = provider
        self._events = 0
        self.usage: Usage | None = None
        self.completed = False
        self.done = False

    def feed(self, raw: bytes) -> list[bytes]:
        event = parse_event(raw)
        if event is None:
            return []  # keep-alive comments
        self._events += 1
        name = event.event or ""
        if name not in self._ends and not self._wants(name):
            return [raw]
        data = loads(event.data)
        if not isinstance(data, dict):
            raise ValueError("a stream event is not a JSON object")
        self._read(name or str(data.get("type") or ""), data)
        if name in self._ends:
            self._held.append((name, data))
            return []
        return [raw]

    def finish(self, metadata: dict[str, Any]) -> list[bytes]:
        return self._release(metadata)

    def _wants(self, name: str) -> bool:
        """Whether a passed-through event must be read too (usage, the envelope)."""
        return False

    def _read(self, name: str, data: dict[str, Any]) -> None:
        raise NotImplementedError


class ResponsesPassthrough(_ResponsesEndings, _Native):
    """OpenAI's own ``/responses`` stream; usage from the final response object. ``patch``
    amends the final response before it is sent."""

    _ends = _RESPONSE_ENDS | {"error"}

    def __init__(
        self,
        *,
        provider: str,
        field: str,
        redact: Redact,
        patch: Callable[[dict[str, Any]], None] | None = None,
        on_response: OnResponse | None = None,
    ) -> None:
        super().__init__(provider=provider, field=field, redact=redact)
        self._patch = patch
        self._on_response = on_response
        self._envelope: dict[str, Any] = {}

    def _wants(self, name: str) -> bool:
        return name == "response.created"

    def _read(self, name: str, data: dict[str, Any]) -> None:
        response = data.get("response")
        if name == "response.created" and isinstance(response, dict):
            self._envelope = response
        elif name in ("response.completed", "response.incomplete") and isinstance(response, dict):
            self.usage = usage_from_openai(response.get("usage"), provider=self._provider)
            self.completed = self.done = True
        else:  # response.failed or error
            self.error_type = "upstream_stream_error"
            self.done = True

    def _so_far(self) -> tuple[dict[str, Any], int]:
        return self._envelope, self._events


class MessagesPassthrough(_MessagesEndings, _Native):
    """Anthropic's own ``/v1/messages`` stream; usage from ``message_start`` and
    ``message_delta`` (whose counts are cumulative)."""

    def __init__(self, *, provider: str, field: str, redact: Redact) -> None:
        super().__init__(provider=provider, field=field, redact=redact)
        self._usage: dict[str, Any] = {}

    def _wants(self, name: str) -> bool:
        return name == "message_start"

    def _read(self, name: str, data: dict[str, Any]) -> None:
        if name == "message_start":
            message = data.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
        elif name == "message_delta":
            usage = data.get("usage")
        elif name == "message_stop":
            self.completed = self.done = True
            return
        else:
            self.error_type = "upstream_stream_error"
            self.done = True
            return
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items() if v is not None})
            self.usage = usage_from_openai(to_openai_usage(self._usage), provider=self._provider)

"""Sans-I/O Server-Sent Events framing on bytes.

Events are split at blank lines (``\\n\\n``, ``\\r\\n\\r\\n`` or ``\\r\\r``) and handed back as the
exact bytes received, terminator included, so events the gateway does not rewrite are relayed
byte for byte.
"""

from __future__ import annotations

import re

__all__ = ["SSEEvent", "SSESplitter", "data_of", "encode_event", "parse_event"]

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(rb"\r\n|\n|\r")
MAX_BUFFER = 8 * 1024 * 1024


class SSESplitter:
    """Accumulates bytes and yields complete raw events."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = b""  # the start of an event not yet complete (empty between events)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every event completed by it, in order."""
        buffer = self.pending + data if self.pending else data
        events: list[bytes] = []
        start = 0
        if buffer.find(b"\r") < 0:  # (``in`` costs more on bytes: proxy/rewriters.py)
            # The common case (OpenAI-style LF framing): plain finds, no regex.
            end = buffer.find(b"\n\n")
            while end >= 0:
                events.append(buffer[start : end + 2])
                start = end + 2
                end = buffer.find(b"\n\n", start)
        else:
            while True:
                match = _BOUNDARY.search(buffer, start)
                if match is None:
                    break
                events.append(buffer[start : match.end()])
                start = match.end()
        self.pending = buffer[start:]
        if len(self.pending) > MAX_BUFFER:
            raise ValueError("an SSE event exceeds the maximum size")
        return events

    def flush(self) -> bytes:
        """Whatever is left (an unterminated last event), and reset."""
        rest, self.pending = self.pending, b""
        return rest


class SSEEvent:
    """A parsed event: its ``event`` name (or None) and its joined ``data`` lines."""

    __slots__ = ("data", "event")

    def __init__(self, event: str | None, data: bytes) -> None:
        self.event = event
        self.data = data

    def __repr__(self) -> str:
        return f"SSEEvent(event={self.event!r}, data={len(self.data)} bytes)"


def data_of(raw: bytes) -> bytes | None:
    """The data of a one-line ``data: ...`` event (the usual shape), or None for any other shape.

    A fast path for relays: the caller falls back to :func:`parse_event` on None.
    """
    if raw.startswith(b"data: ") and raw.endswith(b"\n\n") and raw.find(b"\n", 6) == len(raw) - 2:
        return raw[6:-2]
    return None


def parse_event(raw: bytes) -> SSEEvent | None:
    """Parse one raw event; None for an event with neither data nor a name (comments, blanks)."""
    name: str | None = None
    data: list[bytes] = []
    for line in _LINE.split(raw):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    if name is None and not data:
        return None
    return SSEEvent(name, b"\n".join(data))


def encode_event(data: bytes, event: str | None = None) -> bytes:
    """Frame one event (``data`` must not contain newlines: JSON from ``json.dumps`` never does)."""
    prefix = b"event: " + event.encode() + b"\n" if event else b""
    return prefix + b"data: " + data + b"\n\n"

"""A small streaming client over raw asyncio sockets + httptools: TTFB, full time, chunk gaps.

Each SSE event is timed when its closing blank line arrives. With a spaced upstream the mock writes
its send time (``time.monotonic_ns()``, the same clock in every process) into each content chunk,
so the client computes per chunk both the gap it saw minus the gap the upstream made and the
transit delay (arrival minus send time).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

_STAMP_RE = re.compile(rb"t(\d{6,})")


@dataclass
class StreamTiming:
    ttfb: float  # seconds to the first SSE event
    total: float  # seconds to the end of the response
    status: int
    events: list[tuple[float, bytes]] = field(default_factory=list)  # (monotonic_ns, data)


class _Response:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.buffer = b""
        self.events: list[tuple[float, bytes]] = []
        self.first_body: float | None = None
        self.complete = False

    def on_body(self, body: bytes) -> None:
        now = time.monotonic_ns()
        if self.first_body is None:
            self.first_body = now
        self.buffer += body
        while b"\n\n" in self.buffer:
            event, self.buffer = self.buffer.split(b"\n\n", 1)
            self.events.append((now, event))

    def on_message_complete(self) -> None:
        self.complete = True


class StreamClient:
    """One keep-alive connection posting ``body`` and reading the SSE response."""

    def __init__(self, url: str, body: bytes, auth: str | None) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        headers = [
            f"POST {parts.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            "Accept: text/event-stream",
            f"Content-Length: {len(body)}",
        ]
        if auth:
            headers.append(f"Authorization: Bearer {auth}")
        self.request = ("\r\n".join(headers) + "\r\n\r\n").encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def fetch(self) -> StreamTiming:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        response = _Response()
        start = time.monotonic_ns()
        self.writer.write(self.request)
        while not response.complete:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("the server closed the connection mid-response")
            response.parser.feed_data(data)
        end = time.monotonic_ns()
        if not response.parser.should_keep_alive():
            await self.close()
        data_events = [(t, e) for t, e in response.events if e.startswith(b"data:")]
        first = data_events[0][0] if data_events else end
        return StreamTiming(
            ttfb=(first - start) / 1e9,
            total=(end - start) / 1e9,
            status=response.parser.get_status_code(),
            events=data_events,
        )

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.writer = None


def content_stamps(timing: StreamTiming) -> list[tuple[float, float | None]]:
    """(arrival ns, upstream send ns or None) of each event that carries content."""
    found: list[tuple[float, float | None]] = []
    for arrival, event in timing.events:
        payload = event[5:].strip()
        if payload == b"[DONE]":
            continue
        try:
            chunk = json.loads(payload)
        except ValueError:
            continue
        choices = chunk.get("choices") or []
        content = (choices[0].get("delta") or {}).get("content") if choices else None
        if not content:
            continue
        match = _STAMP_RE.search(content.encode())
        found.append((arrival, float(match.group(1)) if match else None))
    return found


async def run_sequential(
    url: str, body: bytes, auth: str | None, count: int, concurrency: int = 1
) -> list[StreamTiming]:
    """``count`` requests per connection on ``concurrency`` connections."""

    async def worker() -> list[StreamTiming]:
        client = StreamClient(url, body, auth)
        try:
            return [await client.fetch() for _ in range(count)]
        finally:
            await client.close()

    batches = await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [timing for batch in batches for timing in batch]

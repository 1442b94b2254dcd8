"""A fast OpenAI-compatible mock upstream: raw asyncio Protocol + httptools, keep-alive.

``POST .../chat/completions`` answers plain JSON with usage, or (``"stream": true``) SSE with 20
chunks, a usage chunk and ``[DONE]``. A per-chunk delay comes from the ``x-mock-chunk-delay-ms``
header, the ``delay_ms`` query parameter or a ``"mock_chunk_delay_ms"`` body field (body fields
reach the mock through every target). A key whose ``Authorization`` header contains ``flaky``
is answered 503 on every tenth request made with it (the soak's failovers). With a delay, each
content chunk carries its send time
(``time.monotonic_ns()``, system-wide) as its text, so a client can tell upstream spacing from the
delay a proxy adds.

Run: ``python -m benchmarks.mock_upstream --port 18000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from typing import cast
from urllib.parse import parse_qs, urlsplit

import httptools

CHUNKS = 20
MODEL = "gpt-4o-mini"
_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_DELAY_RE = re.compile(rb'"mock_chunk_delay_ms"\s*:\s*(\d+(?:\.\d+)?)')

_PLAIN = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18},
    },
    separators=(",", ":"),
).encode()


def _chunk(index: int, content: str) -> dict[str, object]:
    delta: dict[str, str] = {"content": content}
    if index == 0:
        delta["role"] = "assistant"
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": "stop" if index == CHUNKS - 1 else None,
            }
        ],
    }


def _event(payload: object) -> bytes:
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)  # one HTTP chunk per SSE event


_USAGE_EVENT = _event(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": CHUNKS, "total_tokens": 9 + CHUNKS},
    }
)
_DONE_EVENT = b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"
_CONTENT_EVENTS = [_event(_chunk(i, f"tok{i} ")) for i in range(CHUNKS)]
_PLAIN_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(_PLAIN)
)
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
_NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
)
_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b'content-length: 58\r\n\r\n{"error":{"message":"overloaded","type":"server_error"}}  '
)
FLAKY_EVERY = 10
_flaky_calls: dict[bytes, int] = {}


def _delay_ms(url: bytes, header: bytes | None, body: bytes) -> float:
    if header:
        return float(header)
    query = urlsplit(url).query
    if query:
        values = parse_qs(query.decode()).get("delay_ms")
        if values:
            return float(values[0])
    match = _DELAY_RE.search(body)
    return float(match.group(1)) if match else 0.0


class MockProtocol(asyncio.Protocol):
    """One keep-alive connection; requests are answered in order (clients do not pipeline)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []
        self.delay_header: bytes | None = None
        self.auth = b""
        self.busy: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.busy is not None:
            self.busy.cancel()
        self.transport = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.body, self.delay_header, self.auth = b"", [], None, b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"x-mock-chunk-delay-ms":
            self.delay_header = value
        elif lowered == b"authorization":
            self.auth = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        transport = self.transport
        if transport is None:
            return
        keep_alive = self.parser.should_keep_alive()
        path = self.url.split(b"?", 1)[0]
        if path.endswith(b"/chat/completions") and self.parser.get_method() == b"POST":
            body = b"".join(self.body)
            if b"flaky" in self.auth:
                calls = _flaky_calls[self.auth] = _flaky_calls.get(self.auth, 0) + 1
                if calls % FLAKY_EVERY == 0:
                    transport.write(_UNAVAILABLE)
                    if not keep_alive:
                        transport.close()
                    return
            if _STREAM_RE.search(body):
                delay = _delay_ms(self.url, self.delay_header, body)
                if delay > 0:
                    self.busy = asyncio.get_running_loop().create_task(
                        self._spaced_stream(transport, delay / 1000, keep_alive)
                    )
                    return
                transport.write(_SSE_HEAD)
                for event in _CONTENT_EVENTS:  # one write per event, as a live upstream sends
                    transport.write(event)
                transport.write(_USAGE_EVENT)
                transport.write(_DONE_EVENT)
            else:
                transport.write(_PLAIN_HEAD + _PLAIN)
        elif path.endswith(b"/health") or path == b"/":
            transport.write(_OK)
        else:
            transport.write(_NOT_FOUND)
        if not keep_alive:
            transport.close()

    async def _spaced_stream(
        self, transport: asyncio.Transport, delay: float, keep_alive: bool
    ) -> None:
        transport.write(_SSE_HEAD)
        for i in range(CHUNKS):
            if i:
                await asyncio.sleep(delay)
            if transport.is_closing():
                return
            # The send time rides in the text: proxies that re-serialise chunks keep content.
            transport.write(_event(_chunk(i, f"t{time.monotonic_ns()} ")))
        transport.write(_USAGE_EVENT)
        transport.write(_DONE_EVENT)
        if not keep_alive:
            transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MockProtocol, host, port, backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18000)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args.host, args.port))
    except ImportError:
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()

"""The async shell: a Starlette app that records each request and sends the chosen reply."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from byok_middleware.fake.dispatch import answer, unknown_prefix_reply
from byok_middleware.fake.providers import split_path
from byok_middleware.fake.records import RecordedRequest, Scripted, parse_json_body
from byok_middleware.fake.wire import Call, Frame, Reply

#: How often a pause checks for a client disconnect or a server shutdown (seconds).
POLL_INTERVAL: Final = 0.02
_METHODS: Final = ["GET", "POST", "PUT", "PATCH", "DELETE"]


class FakeSettings(Protocol):
    """The live knobs the app reads at each request."""

    @property
    def default_usage(self) -> Mapping[str, int]: ...

    @property
    def anthropic_usage(self) -> Mapping[str, int]: ...

    @property
    def chunk_delay(self) -> float: ...

    @property
    def stream_chunks(self) -> int: ...


class Journal:
    """Thread-safe shared state: recorded requests, script queues, and the shutdown flag."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._scripts: dict[str, deque[Scripted]] = {}
        self._count = 0
        #: Set while the server stops: pauses end at once so shutdown never waits on them.
        self.closing = threading.Event()

    def record(self, request: RecordedRequest) -> int:
        """Append `request`; return its arrival number (1-based, never reused)."""
        with self._lock:
            self._count += 1
            self._requests.append(request)
            return self._count

    def requests(self) -> list[RecordedRequest]:
        """A copy of the recorded requests in arrival order."""
        with self._lock:
            return list(self._requests)

    def push_scripts(self, provider: str, scripts: Iterable[Scripted]) -> None:
        """Queue `scripts` (FIFO) for the next requests to `provider`."""
        with self._lock:
            self._scripts.setdefault(provider, deque()).extend(scripts)

    def pop_script(self, provider: str) -> Scripted | None:
        """The next script for `provider`, removed from its queue; None when none is left."""
        with self._lock:
            queue = self._scripts.get(provider)
            return queue.popleft() if queue else None

    def pending(self, provider: str) -> int:
        """How many scripts are still queued for `provider`."""
        with self._lock:
            return len(self._scripts.get(provider, ()))

    def clear(self) -> None:
        """Forget recorded requests and every queued script."""
        with self._lock:
            self._requests.clear()
            self._scripts.clear()


async def pause(
    seconds: float, is_disconnected: Callable[[], Awaitable[bool]], closing: threading.Event
) -> bool:
    """Sleep `seconds` (cut short by shutdown); False as soon as the client has gone away."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await is_disconnected():
        remaining = deadline - loop.time()
        if remaining <= 0 or closing.is_set():
            return True
        await asyncio.sleep(min(remaining, POLL_INTERVAL))
    return False


class FrameStream(Response):
    """Streams a reply's frames, waiting `chunk_delay` before each counted frame and dropping
    the connection (no end of body) once `cut_after` counted frames went out."""

    def __init__(
        self,
        reply: Reply,
        chunk_delay: float,
        is_disconnected: Callable[[], Awaitable[bool]],
        closing: threading.Event,
    ) -> None:
        self.status_code = reply.status
        self.media_type = reply.media_type
        self.background = None
        self.init_headers(reply.headers)
        self._frames: tuple[Frame, ...] = reply.frames or ()
        self._cut_after = reply.cut_after
        self._chunk_delay = chunk_delay
        self._is_disconnected = is_disconnected
        self._closing = closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send(start | {"headers": self.raw_headers})
        sent = 0
        for frame in self._frames:
            if frame.counted:
                if self._cut_after is not None and sent >= self._cut_after:
                    # Returning without the final body message makes uvicorn drop the connection.
                    return
                if not await pause(self._chunk_delay, self._is_disconnected, self._closing):
                    return
                sent += 1
            await send({"type": "http.response.body", "body": frame.data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def build_app(settings: FakeSettings, journal: Journal) -> Starlette:
    """The fake's ASGI app: every path and method goes to one recording endpoint."""

    async def endpoint(request: Request) -> Response:
        recorded, provider = await _record(request)
        seq = journal.record(recorded)
        if provider is None:
            return _plain(unknown_prefix_reply(request.method, request.url.path))
        script = journal.pop_script(provider)
        if script is not None and script.delay > 0:
            # A client that gave up meanwhile gets its answer into the void; nothing breaks.
            await pause(script.delay, request.is_disconnected, journal.closing)
        reply = answer(_call(provider, recorded, seq, settings), script)
        if reply.frames is None:
            return _plain(reply)
        delay = reply.chunk_delay if reply.chunk_delay is not None else settings.chunk_delay
        return FrameStream(reply, delay, request.is_disconnected, journal.closing)

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=_METHODS)])


async def _record(request: Request) -> tuple[RecordedRequest, str | None]:
    body = await request.body()
    provider, path = split_path(request.scope["path"])
    headers: dict[str, str] = {}
    for raw_name, raw_value in request.headers.raw:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    recorded = RecordedRequest(
        provider=provider or "unknown",
        method=request.method,
        path=path,
        query=request.scope["query_string"].decode("latin-1"),
        headers=headers,
        body=body,
        json=parse_json_body(body),
    )
    return recorded, provider


def _call(provider: str, recorded: RecordedRequest, seq: int, settings: FakeSettings) -> Call:
    return Call(
        provider=provider,
        path=recorded.path,
        request=recorded,
        seq=seq,
        created=int(time.time()),
        usage=dict(settings.default_usage),
        anthropic_usage=dict(settings.anthropic_usage),
        stream_chunks=settings.stream_chunks,
    )


def _plain(reply: Reply) -> Response:
    return Response(
        content=reply.body,
        status_code=reply.status,
        headers=dict(reply.headers),
        media_type=reply.media_type,
    )

"""The response cache at the HTTP edge: the control header, answering a hit, tapping a stream.

The engine decides (``gateway/caching.py``); this module only reads ``x-byok-cache``, writes a
hit as JSON or as a replayed SSE stream with its headers and metadata, and collects a streamed
answer from the frames the client got, so it can be stored once the stream completed.
"""

from __future__ import annotations

from typing import Any

from byok_middleware.asgi import Scope, Send, raw_header, send_bytes
from byok_middleware.cache import CacheControl, Hit, StreamAssembler, parse_control
from byok_middleware.gateway import Call, Gateway
from byok_middleware.pricing import Usage
from byok_middleware.proxy.relay import SSE_HEADERS
from byok_middleware.proxy.rewriters import StreamRewriter
from byok_middleware.proxy.sse import data_of, parse_event
from byok_middleware.router import Incoming

__all__ = ["CacheTap", "cache_control", "cache_header", "clear_cache", "serve_hit"]

DONE = b"[DONE]"


def cache_control(scope: Scope) -> CacheControl:
    """``x-byok-cache: skip | refresh | no-store`` (400 naming the header for anything else)."""
    raw = raw_header(scope, b"x-byok-cache")
    return parse_control(raw.decode("latin-1") if raw is not None else None)


def cache_header(value: str | None) -> list[tuple[bytes, bytes]]:
    """The ``x-byok-cache`` response header of a miss or a skip (none with the cache off)."""
    return [] if value is None else [(b"x-byok-cache", value.encode())]


async def clear_cache(gateway: Gateway, incoming: Incoming) -> None:
    """``DELETE /byok/cache``: every entry of the calling tenant goes (204), cache on or off."""
    if gateway.cache is not None:
        await gateway.cache.clear(incoming.tenant_id)
    await send_bytes(incoming.send, 204, b"", content_type=b"application/json")


async def serve_hit(
    gateway: Gateway,
    call: Call,
    hit: Hit,
    send: Send,
    *,
    stream: bool = False,
    include_usage: bool = False,
) -> None:
    """Answer from the cache: its own ledger row first, then the stored answer with this
    request's metadata (``cache_hit``, cost 0, ``cost_saved_usd``), as JSON or as SSE."""
    if gateway.cache is None:
        raise RuntimeError("a cache hit without a cache")
    gateway.cache.record_hit(call, hit)
    field = gateway.config.metadata_field
    meta = hit.metadata(call.request_id)
    headers = [
        (b"x-byok-request-id", call.request_id.encode()),
        (b"x-byok-cost-attribution", b"cache"),
        (b"x-byok-provider-used", hit.entry.provider.encode()),
        (b"x-byok-attempts", b"0"),
        *hit.headers(),
    ]
    if stream:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + headers})
        body = b"".join(hit.as_sse(include_usage, field, meta))
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return
    await send_bytes(
        send,
        200,
        hit.json_body(field, meta),
        content_type=b"application/json",
        extra_raw=[(b"x-byok-cost-usd", b"0"), *headers],
    )


class CacheTap:
    """A ``StreamRewriter`` that passes another one's frames through and assembles them into the
    whole answer (the frames are the client's chat chunks, whatever the upstream wire). A frame
    is only kept as it passes; the chunks are parsed in ``answer``, after the stream was sent,
    so the relay of each chunk pays nothing for the cache."""

    def __init__(self, inner: StreamRewriter, metadata_field: str) -> None:
        self._inner = inner
        self._metadata_field = metadata_field
        self._frames: list[bytes] = []

    @property
    def usage(self) -> Usage | None:
        return self._inner.usage

    @property
    def completed(self) -> bool:
        return self._inner.completed

    @property
    def done(self) -> bool:
        return self._inner.done

    @property
    def error_type(self) -> str | None:
        return self._inner.error_type

    def _tap(self, frames: list[bytes]) -> list[bytes]:
        self._frames += frames
        return frames

    def feed(self, raw: bytes) -> list[bytes]:
        return self._tap(self._inner.feed(raw))

    def finish(self, metadata: dict[str, Any]) -> list[bytes]:
        return self._tap(self._inner.finish(metadata))

    def abort(self, error: dict[str, Any], metadata: dict[str, Any]) -> list[bytes]:
        return self._inner.abort(error, metadata)

    def answer(self) -> dict[str, Any] | None:
        """The whole chat completion, or None when the stream did not complete cleanly."""
        if not self._inner.completed or self.error_type:
            return None
        assembler = StreamAssembler(self._metadata_field)
        for frame in self._frames:
            for raw in frame.split(b"\n\n"):
                if not raw.strip():
                    continue
                payload = data_of(raw + b"\n\n")
                if payload is None:
                    event = parse_event(raw + b"\n\n")
                    payload = event.data if event is not None else None
                if payload and payload != DONE:
                    assembler.feed_data(payload)
        return assembler.result(completed=True)

"""Relaying an OpenAI-wire SSE stream: chunks pass through as they arrive, byte for byte.

Only three kinds of event are looked at, found by a cheap byte check before any JSON parse: the
usage chunk (metered, and shown to the client only if it asked), a mid-stream error (redacted),
and ``[DONE]`` (preceded by one event carrying the metadata).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Any

import httpx

from byok_middleware.asgi import Receive, Send, dumps, loads
from byok_middleware.gateway import Call, Forwarded, Gateway
from byok_middleware.pricing import Usage, usage_from_chunk
from byok_middleware.proxy.metadata import CallMetadata
from byok_middleware.proxy.sse import SSESplitter, data_of, encode_event, parse_event

__all__ = [
    "StreamState",
    "relay_openai_stream",
    "run_until_disconnect",
    "send_body",
    "sse_start",
]

DONE = b"[DONE]"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class StreamState:
    """What a relay learned, for the ledger, whether it finished or was cut."""

    __slots__ = ("completed", "error_type", "first", "usage")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.completed = False
        self.error_type: str | None = None
        self.first: dict[str, Any] | None = None


def _has_usage(data: bytes) -> bool:
    index = data.find(b'"usage"')
    if index < 0:
        return False
    rest = data[index + 7 : index + 16].lstrip(b": \t")
    return not rest.startswith(b"null")


def _is_error(data: bytes) -> bool:
    # An "error" key anywhere (not only first): the bytes '"error"' cannot occur inside a JSON
    # string, whose quotes are escaped, so model text never trips it. One C-speed scan.
    return b'"error"' in data


def interrupted_event(redacted_message: str, code: str = "stream_interrupted") -> bytes:
    error = {"message": redacted_message, "type": "upstream_error", "param": None, "code": code}
    return encode_event(dumps({"error": error}))


async def sse_start(send: Send, meta: CallMetadata, status: int = 200) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": SSE_HEADERS + meta.headers(with_cost=False),
        }
    )


async def send_body(send: Send, events: list[bytes]) -> None:
    """Send ``events`` as one body part of a response that goes on."""
    await send({"type": "http.response.body", "body": b"".join(events), "more_body": True})


async def run_until_disconnect(receive: Receive, relay: Awaitable[None]) -> bool:
    """Run ``relay``; cancel it if the client goes away. True when the client disconnected."""
    task = asyncio.ensure_future(relay)

    async def watch() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        await task
    except asyncio.CancelledError:
        if watcher.done():
            return True  # the watcher cancelled the relay: the client left
        raise  # we are being cancelled ourselves
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return False


def _final_event(
    gateway: Gateway, state: StreamState, held: dict[str, Any] | None, meta: CallMetadata
) -> bytes:
    if held is None:
        first = state.first or {}
        held = {
            "id": first.get("id", "chatcmpl-" + meta.request_id),
            "object": "chat.completion.chunk",
            "created": first.get("created", int(time.time())),
            "model": first.get("model", meta.model),
            "choices": [],
        }
    held[gateway.config.metadata_field] = meta.as_dict()
    return encode_event(dumps(held))


async def relay_openai_stream(
    gateway: Gateway,
    call: Call,
    forwarded: Forwarded,
    meta: CallMetadata,
    *,
    include_usage: bool,
    receive: Receive,
    send: Send,
) -> None:
    state = StreamState()
    response = forwarded.response

    async def relay() -> None:
        splitter = SSESplitter()
        held: dict[str, Any] | None = None  # the usage chunk, sent last when the client asked
        await sse_start(send, meta)
        try:
            async for data in response.aiter_bytes():
                out: list[bytes] = []
                for raw in splitter.feed(data):
                    payload = data_of(raw)
                    if payload is None:
                        event = parse_event(raw)
                        if event is None:
                            continue  # comments such as DeepSeek's ": keep-alive"
                        payload = event.data
                    if payload == DONE:
                        if out:  # the last content goes out before the metering work
                            await send_body(send, out)
                            out = []
                        state.completed = True
                        meta.cost_usd = gateway.cost(call, state.usage)
                        out.append(_final_event(gateway, state, held, meta))
                        out.append(raw)
                        continue
                    if state.first is None:
                        with contextlib.suppress(ValueError):
                            state.first = loads(payload)
                    if _is_error(payload):
                        state.error_type = "upstream_stream_error"
                        out.append(call.redactor(raw.decode("utf-8", "replace")).encode())
                        continue
                    if _has_usage(payload):
                        if out:  # as before [DONE]: parsing the usage holds no chunk back
                            await send_body(send, out)
                            out = []
                        chunk = loads(payload)
                        state.usage = usage_from_chunk(chunk, provider=call.provider) or state.usage
                        if not chunk.get("choices"):
                            held = chunk if include_usage else None
                            continue
                    out.append(raw)
                if out:
                    await send_body(send, out)
        except httpx.HTTPError:
            state.error_type = "stream_interrupted"
        finally:
            await response.aclose()
        tail = b""
        if not state.completed:
            state.error_type = state.error_type or "stream_interrupted"
            if state.error_type == "stream_interrupted":
                tail = interrupted_event(
                    f"the {call.provider} stream ended before completion; the answer is incomplete"
                )
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    disconnected = await run_until_disconnect(receive, relay())
    if disconnected:
        state.error_type = "client_disconnected"
        await response.aclose()
    # Priced once at [DONE]; a cut stream is priced here on the usage known so far.
    cost = meta.cost_usd if state.completed else gateway.cost(call, state.usage)
    gateway.record(
        call,
        candidate=forwarded.candidate,
        usage=state.usage,
        cost=cost,
        status_code=200 if state.completed else 499 if disconnected else 502,
        error_type=state.error_type,
    )

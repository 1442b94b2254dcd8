"""The one SSE relay shell: bytes in from upstream, a rewriter's frames out to the client.

Every streamed answer goes through ``relay_stream``, whatever the upstream wire and the client's
dialect; only the ``StreamRewriter`` (``proxy/rewriters.py``) differs. The shell guarantees:

* frames are sent as the upstream events arrive, never buffered beyond one read;
* the client always gets a well-formed ending: the rewriter's ``finish`` after a completed
  stream, else its ``abort`` (an error event, then the dialect's end) when the upstream broke
  off, sent an event over the size limit, or sent something the rewriter cannot read;
* the ledger row is recorded before the last byte is sent, so a completed response's row is
  queued even if the process dies right after;
* a client that leaves stops the relay and closes the upstream response at once.

Budgets settle at ``Gateway.record``; a response cache stores a completed stream's answer from
the rewriter once ``completed`` is true (the shell's ``on_complete`` hook).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from byok_middleware.asgi import Receive, Send
from byok_middleware.cache.entry import CacheEntry
from byok_middleware.cache.stream import replay_as_sse
from byok_middleware.errors import ClientDisconnected
from byok_middleware.gateway import Call, Forwarded, Gateway
from byok_middleware.gateway.upstream import close_iterator
from byok_middleware.pricing import usage_from_openai
from byok_middleware.proxy.metadata import CallMetadata, call_metadata
from byok_middleware.proxy.rewriters import StreamRewriter
from byok_middleware.proxy.sse import SSESplitter

__all__ = [
    "SSE_HEADERS",
    "forward_watching",
    "relay_json_as_stream",
    "relay_stream",
    "run_until_disconnect",
    "upstream_error",
]

logger = logging.getLogger("byok_middleware.proxy.relay")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def upstream_error(message: str, code: str) -> dict[str, object]:
    """The ``error`` object of a stream that the upstream broke (OpenAI's shape)."""
    return {"message": message, "type": "upstream_error", "param": None, "code": code}


T = TypeVar("T")

# How long a forward or a relay runs before a watcher starts listening for the client leaving.
# A call quicker than this ends sooner than a cancellation would free anything, so it never pays
# for the watcher (a task and its wake-ups: ~40 us of CPU per request in-process); a client that
# leaves a slow call is noticed at most this much later.
WATCH_AFTER = 0.25


async def _watched(receive: Receive, work: Awaitable[T]) -> tuple[T | None, bool]:
    """Run ``work`` here, cancelled if the client goes away: (its result, False), or
    (None, True) when the client left.

    Once ``work`` has run ``WATCH_AFTER`` seconds, a watcher task (``_Watch``) listens and
    cancels this task on ``http.disconnect``; ``work`` runs in this task, with no task of its
    own. The watcher is cancelled, not awaited, at the end: awaiting it would cost two more
    turns of the event loop (its cancellation, then our wake-up).
    """
    # One look-up of the loop for both (on Python 3.11 each one is a getpid system call).
    loop = asyncio.get_running_loop()
    current = asyncio.current_task(loop)
    if current is None:
        return await work, False
    watch = _Watch(receive, current)
    timer = loop.call_later(WATCH_AFTER, watch.start)
    try:
        return await work, False
    except asyncio.CancelledError:
        if not watch.left:
            raise  # cancelled from outside, not by the client leaving
        current.uncancel()
        return None, True
    finally:
        timer.cancel()
        watch.stop()


async def run_until_disconnect(receive: Receive, relay: Awaitable[None]) -> bool:
    """Run ``relay`` here; True when the client left and it was cancelled (``_watched``). A
    stream that ends within ``WATCH_AFTER`` was relayed whole (and the upstream billed it)."""
    _, left = await _watched(receive, relay)
    return left


async def forward_watching(receive: Receive, forwarding: Awaitable[Forwarded]) -> Forwarded:
    """``forwarding`` (a ``Gateway.forward``), cancelled the moment the client leaves
    (``_watched``): the upstream connection is released at once instead of at the upstream
    timeout. Raises ``ClientDisconnected`` (recorded as a 499) then. The request body must be
    read already."""
    forwarded, left = await _watched(receive, forwarding)
    if left or forwarded is None:
        raise ClientDisconnected("the client left before the answer began")
    return forwarded


class _Watch:
    """Listens on ``receive`` for ``http.disconnect`` and then cancels ``task``."""

    __slots__ = ("_receive", "_task", "_watcher", "left")

    def __init__(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        self._receive = receive
        self._task = task
        self._watcher: asyncio.Task[None] | None = None
        self.left = False

    def start(self) -> None:
        self._watcher = asyncio.ensure_future(self._listen())

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    async def _listen(self) -> None:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.left = True
            self._task.cancel()
            return
        # After the body a server only ever says "http.disconnect"; a caller whose receive
        # answers anything else cannot tell us, so stop listening rather than spin.
        await asyncio.Future()


class _Ending:
    """How the relay ended, for the ledger."""

    __slots__ = ("error_type", "recorded")

    def __init__(self) -> None:
        self.error_type: str | None = None
        self.recorded = False


async def relay_stream(
    gateway: Gateway,
    call: Call,
    forwarded: Forwarded,
    rewriter: StreamRewriter,
    *,
    receive: Receive,
    send: Send,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    on_complete: Callable[[StreamRewriter], None] | None = None,
) -> CallMetadata:
    """Relay ``forwarded``'s SSE body through ``rewriter`` to the client, then record the call;
    the metadata it sent (priced) is returned."""
    meta = call_metadata(call, forwarded)
    response = forwarded.response
    ending = _Ending()

    def record(status: int) -> None:
        # Priced on the usage known so far: a cut stream is billed for what it used.
        meta.cost_usd = gateway.cost(call, rewriter.usage)
        meta.cost_source = gateway.cost_source(call, meta.cost_usd)
        gateway.record(
            call,
            candidate=forwarded.candidate,
            usage=rewriter.usage,
            cost=meta.cost_usd,
            status_code=status,
            error_type=rewriter.error_type or ending.error_type,
        )
        ending.recorded = True

    async def relay() -> None:
        headers = SSE_HEADERS + meta.headers(with_cost=False) + (extra_headers or [])
        headers += gateway.budget_headers(call)  # the reservation deducted
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        splitter = SSESplitter()
        # Both optional (proxy/rewriters.py): a read relayed as it came, several events at once.
        unchanged = getattr(rewriter, "unchanged", None)
        feed_many = getattr(rewriter, "feed_many", None)
        chunks = response.aiter_bytes()
        try:
            async for data in chunks:
                passed = 0
                if unchanged is not None and not splitter.pending:
                    passed = unchanged(data)  # leading bytes of whole events sent as they are
                if passed == len(data):
                    body = data
                else:
                    events = splitter.feed(data[passed:])  # (``data[0:]`` is ``data``)
                    frames: list[bytes] = [data[:passed]] if passed else []
                    if feed_many is not None:
                        frames += feed_many(events)
                    else:
                        for raw in events:
                            frames += rewriter.feed(raw)
                            if rewriter.done:
                                break
                    body = b"".join(frames)
                if body:
                    if call.first_byte is None:  # time to first token, for the ledger's ttft_ms
                        call.first_byte = time.perf_counter()
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                if rewriter.done:
                    break
        except httpx.HTTPError:
            ending.error_type = "stream_interrupted"
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # A malformed event, an oversized one, or a shape the translation cannot read.
            ending.error_type = "upstream_malformed"
            logger.warning(
                "the %s stream sent an event the gateway cannot read (%s): %s",
                call.provider,
                call.request_id,
                type(exc).__name__,
            )
        finally:
            await close_iterator(chunks)  # stopped at [DONE], not at its end
            await response.aclose()
        if rewriter.completed:
            record(200)
            if on_complete is not None:
                on_complete(rewriter)
            tail = rewriter.finish(meta.as_dict())
        else:
            ending.error_type = ending.error_type or "stream_interrupted"
            record(502)
            message = (
                f"the {call.provider} stream ended before completion; the answer is incomplete"
                if ending.error_type == "stream_interrupted"
                else f"the {call.provider} stream sent an event the gateway cannot read"
            )
            tail = rewriter.abort(upstream_error(message, ending.error_type), meta.as_dict())
        await send({"type": "http.response.body", "body": b"".join(tail), "more_body": False})

    try:
        disconnected = await run_until_disconnect(receive, relay())
    finally:
        await response.aclose()  # at once, whatever stopped the relay
    if disconnected and not ending.recorded:
        ending.error_type = "client_disconnected"
        record(499)
    return meta


async def relay_json_as_stream(
    gateway: Gateway,
    call: Call,
    forwarded: Forwarded,
    completion: dict[str, Any],
    *,
    send: Send,
    include_usage: bool,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer a stream request whose upstream sent one JSON completion: the same SSE events a
    stream of it would have had (metadata on the finish chunk, usage if asked, ``[DONE]``),
    priced and recorded once, with no second upstream call."""
    usage = usage_from_openai(completion.get("usage"), provider=call.provider)
    meta = call_metadata(call, forwarded)
    meta.cost_usd = gateway.cost(call, usage)
    meta.cost_source = gateway.cost_source(call, meta.cost_usd)
    entry = CacheEntry("chat", completion, meta.cost_usd, call.provider, call.model, time.time())
    field = gateway.config.metadata_field
    events = replay_as_sse(entry, include_usage, field, meta.as_dict())
    gateway.record(
        call,
        candidate=forwarded.candidate,
        usage=usage,
        cost=meta.cost_usd,
        status_code=200,
    )
    headers = SSE_HEADERS + meta.headers(with_cost=True) + (extra_headers or [])
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"".join(events), "more_body": False})

"""``python -m benchmarks.inproc``: the gateway's own CPU per request, without network or server.

The BYOK middleware (SQLite store in a temporary directory, one tenant with one OpenAI key) is
called as an ASGI app in-process; its upstream client is a stub that answers a canned chat
completion at once. What is left is exactly the package's per-request work: routing, identity,
the key plan, body parsing, metering, the metadata, the ledger row and its batched write. Prints
microseconds per request (best of ``--rounds``) and, with ``--profile``, the top cProfile
entries. Numbers are for comparing two versions of the code on one machine in one sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import os
import pstats
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from byok_middleware import BYOKConfig, BYOKMiddleware, create_tenant
from byok_middleware.asgi import Message, Receive, Scope, Send
from byok_middleware.gateway.keys import NewKey
from byok_middleware.gateway.transport import Body, UpstreamClient

ANSWER = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello."},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,'
    b'"total_tokens":15}}'
)
REQUEST = b'{"model":"openai/gpt-4o","messages":[{"role":"user","content":"Hi"}]}'


class StubResponse:
    """An upstream answer held in memory: ``chunks`` read one by one (a JSON body, SSE events)."""

    status_code = 200

    def __init__(self, chunks: Sequence[bytes], content_type: str, *, sleep: bool) -> None:
        self._chunks = chunks
        self._sleep = sleep
        self.headers: Mapping[str, str] = {"content-type": content_type}

    async def aread(self) -> bytes:
        return b"".join(self._chunks)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            if self._sleep:
                await asyncio.sleep(0)  # each chunk its own read, as over a socket
            yield chunk

    async def aclose(self) -> None:
        return None


class StubUpstream:
    """An upstream client that answers every request at once with ``chunks``: by default the
    canned chat completion; SSE events for a stream (``sleep``: one turn of the loop before each
    read, so that each event is its own read)."""

    def __init__(
        self,
        chunks: Sequence[bytes] = (ANSWER,),
        content_type: str = "application/json",
        *,
        sleep: bool = False,
    ) -> None:
        self._chunks, self._content_type, self._sleep = chunks, content_type, sleep

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: Body | None = None,
        time_limit: float | None = None,
    ) -> StubResponse:
        return StubResponse(self._chunks, self._content_type, sleep=self._sleep)

    async def aclose(self) -> None:
        return None


def receiver(body: bytes) -> Receive:
    """A request's ``receive`` as a server gives it: the body once, then nothing until the
    client leaves (here: never), so a disconnect watcher waits instead of spinning."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Future()  # cancelled when the request ends
        raise RuntimeError("unreachable")

    return receive


async def _host(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("the host app is not reached in this benchmark")


def chat_scope(gateway_key: str, body: bytes) -> Scope:
    """``POST /v1/chat/completions`` with ``body``, as ``gateway_key``'s tenant: its ASGI scope."""
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", b"Bearer " + gateway_key.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }


@contextlib.asynccontextmanager
async def bench_gateway(upstream: UpstreamClient) -> AsyncIterator[tuple[BYOKMiddleware, str]]:
    """The middleware on a SQLite store in a temporary directory, opened, with one tenant that
    holds one OpenAI key; yields it and the tenant's gateway key, and closes it afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        config = BYOKConfig(
            master_key=base64.b64encode(os.urandom(32)).decode(),
            database_url=f"sqlite:///{Path(tmp) / 'bench.db'}",
        )
        middleware = BYOKMiddleware(_host, config=config, upstream=upstream)
        gateway = middleware.gateway
        await middleware.open()
        try:
            tenant, gateway_key = await create_tenant(gateway.store, "bench")
            await gateway.keys.create(
                tenant.id, NewKey(provider="openai", api_key="sk-" + "a" * 40)
            )
            yield middleware, gateway_key
        finally:
            await gateway.close()


async def _run(requests: int, rounds: int, profile: bool, sort: str, top: int) -> None:
    async with bench_gateway(StubUpstream()) as (middleware, gateway_key):
        gateway = middleware.gateway
        scope = chat_scope(gateway_key, REQUEST)
        statuses: list[int] = []

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        async def batch() -> float:
            started = time.process_time()
            for _ in range(requests):
                await middleware(scope, receiver(REQUEST), send)
            await gateway.ledger.flush()
            return (time.process_time() - started) / requests * 1e6

        await batch()  # warm-up: caches, prices, the first SQLite write
        best = min([await batch() for _ in range(rounds)])
        if set(statuses) != {200}:
            raise RuntimeError(f"unexpected statuses: {sorted(set(statuses))}")
        print(f"gateway own CPU per plain request: {best:.1f} us (best of {rounds} x {requests})")
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await batch()
            profiler.disable()
            pstats.Stats(profiler).sort_stats(sort).print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="then one batch under cProfile")
    parser.add_argument("--sort", default="tottime", help="pstats order: tottime, cumulative")
    parser.add_argument("--top", type=int, default=30, help="profile entries to print")
    args = parser.parse_args()
    asyncio.run(_run(args.requests, args.rounds, args.profile, args.sort, args.top))


if __name__ == "__main__":
    main()

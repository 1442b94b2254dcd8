"""Bare Starlette pass-throughs to the mock: the floor the gateway is measured against.

Each forwards ``POST /v1/chat/completions`` (body and ``Authorization``) to ``BENCH_UPSTREAM`` and
answers the upstream's status and body: whole for JSON, chunk by chunk for ``text/event-stream``.
Uvicorn factories::

    uvicorn --factory benchmarks.passthrough:httpx_app           # httpx, default transport
    uvicorn --factory benchmarks.passthrough:httpx_aiohttp_app   # httpx over AiohttpTransport
    uvicorn --factory benchmarks.passthrough:aiohttp_app         # raw aiohttp ClientSession
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import aiohttp
import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

PATH = "/v1/chat/completions"
LIMITS = httpx.Limits(max_connections=512, keepalive_expiry=30)


def _upstream() -> str:
    return os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:18000").rstrip("/") + PATH


def _forward_headers(request: Request) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    auth = request.headers.get("authorization")
    if auth:
        headers["authorization"] = auth
    return headers


def _httpx_app(make_transport: Callable[[], httpx.AsyncBaseTransport]) -> Starlette:
    url = _upstream()
    client: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal client
        client = httpx.AsyncClient(transport=make_transport(), timeout=600)
        yield
        await client.aclose()

    async def chat(request: Request) -> Response:
        assert client is not None
        upstream_request = client.build_request(
            "POST", url, content=await request.body(), headers=_forward_headers(request)
        )
        upstream = await client.send(upstream_request, stream=True)
        media_type = upstream.headers.get("content-type", "application/json")
        if media_type.startswith("text/event-stream"):
            return StreamingResponse(
                upstream.aiter_raw(),
                status_code=upstream.status_code,
                media_type=media_type,
                background=BackgroundTask(upstream.aclose),
            )
        try:
            body = await upstream.aread()
        finally:
            await upstream.aclose()
        return Response(body, status_code=upstream.status_code, media_type=media_type)

    return Starlette(routes=[Route(PATH, chat, methods=["POST"])], lifespan=lifespan)


def httpx_app() -> Starlette:
    """httpx with its default transport (httpcore)."""
    return _httpx_app(lambda: httpx.AsyncHTTPTransport(limits=LIMITS))


def httpx_aiohttp_app() -> Starlette:
    """httpx's API over ``httpx_aiohttp.AiohttpTransport``."""
    from httpx_aiohttp import AiohttpTransport

    return _httpx_app(lambda: AiohttpTransport(limits=LIMITS))


def aiohttp_app() -> Starlette:
    """A raw ``aiohttp.ClientSession``: the reference for the ratios."""
    url = _upstream()
    session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal session
        connector = aiohttp.TCPConnector(limit=512, keepalive_timeout=30)
        session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=600)
        )
        yield
        await session.close()

    async def chat(request: Request) -> Response:
        assert session is not None
        context: AbstractAsyncContextManager[aiohttp.ClientResponse] = session.post(
            url, data=await request.body(), headers=_forward_headers(request)
        )
        upstream = await context.__aenter__()
        media_type = upstream.headers.get("content-type", "application/json")
        if media_type.startswith("text/event-stream"):

            async def relay() -> AsyncIterator[bytes]:
                async for chunk in upstream.content.iter_any():
                    yield chunk

            async def close() -> None:
                await context.__aexit__(None, None, None)

            return StreamingResponse(
                relay(),
                status_code=upstream.status,
                media_type=media_type,
                background=BackgroundTask(close),
            )
        try:
            body = await upstream.read()
        finally:
            await context.__aexit__(None, None, None)
        return Response(body, status_code=upstream.status, media_type=media_type)

    return Starlette(routes=[Route(PATH, chat, methods=["POST"])], lifespan=lifespan)

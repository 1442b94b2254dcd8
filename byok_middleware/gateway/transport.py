"""The seam between the gateway and the network: one small client interface, two implementations.

``AiohttpUpstream`` is the production client: aiohttp directly, one pooled session, no cookie jar.
Measured in ``benchmarks/`` it costs a fraction of httpx's default transport and ~40% less than
httpx's API over ``httpx-aiohttp`` (RESULTS.md). ``HttpxUpstream`` wraps an ``httpx.AsyncClient``
around any httpx transport, which is how tests script providers with ``httpx.MockTransport``.

Both speak httpx's exception vocabulary (``httpx.TimeoutException``, ``httpx.TransportError``),
so callers catch one family whichever client runs, and both refuse to keep upstream cookies: a
``Set-Cookie`` from one tenant's call must never ride along on another tenant's.

Both bound what a hostile or broken upstream can cost (issue 18): ``aread`` reads in chunks and
stops at ``max_body_bytes`` (``BodyTooLarge``, a 502 for the client; memory stays bounded
whatever the upstream sends), and every exchange has a ``deadline`` in seconds from the request
(``httpx.ReadTimeout`` on the first chunk past it; a silent upstream hits the read timeout), so
an upstream trickling keep-alive comments cannot hold a connection forever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Protocol

import aiohttp
import httpx

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "AiohttpUpstream",
    "BodyTooLarge",
    "HttpxUpstream",
    "UpstreamClient",
    "UpstreamResponse",
    "as_httpx_error",
]

Body = bytes | AsyncIterable[bytes]

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_DEADLINE = 900.0


class BodyTooLarge(httpx.TransportError):
    """The upstream body is larger than the client's ``max_body_bytes``: not read further."""


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"the upstream answer exceeds {limit} bytes (BYOK_MAX_UPSTREAM_BODY_BYTES)")


async def _read_capped(
    chunks: AsyncIterator[bytes], headers: Mapping[str, str], limit: int
) -> bytes:
    """The whole body, refused past ``limit`` bytes (declared or counted) with ``BodyTooLarge``."""
    if _declared_length(headers) > limit:
        raise _too_large(limit)
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def _declared_length(headers: Mapping[str, str]) -> int:
    try:
        return int(headers.get("content-length") or -1)
    except ValueError:
        return -1


def _past_deadline() -> httpx.ReadTimeout:
    return httpx.ReadTimeout("the upstream exchange exceeded its deadline")


class UpstreamResponse(Protocol):
    """An upstream answer whose headers arrived; the body is read or streamed, then closed."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive for ``get``."""

    async def aread(self) -> bytes: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The decoded body as it arrives."""

    async def aclose(self) -> None: ...


class UpstreamClient(Protocol):
    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: Body | None = None,
        time_limit: float | None = None,
    ) -> UpstreamResponse:
        """Send a request and return once the response headers arrived; ``time_limit`` (seconds)
        replaces the client's timeouts for this one exchange.

        Raises ``httpx.TimeoutException`` or another ``httpx.TransportError``.
        """

    async def aclose(self) -> None: ...


# What the aiohttp exceptions are, in httpx's vocabulary. A plain ``except`` (not a
# ``@contextmanager``): entering and leaving a generator context costs ~2 µs per call, and it sat
# on every upstream request.
_AIOHTTP_ERRORS = (TimeoutError, aiohttp.ClientError)


def as_httpx_error(exc: BaseException) -> httpx.TransportError:
    """The httpx exception for an aiohttp one (from ``_AIOHTTP_ERRORS``). Names no URL or header."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout("upstream timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError("upstream connection failed")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError("upstream closed the connection early")
    return httpx.TransportError(f"upstream transport error ({type(exc).__name__})")


class _CappedResponse:
    """What both transports' responses share: status and headers as plain attributes (each is
    read several times per call), the body cap and the deadline (``time.monotonic()``)."""

    __slots__ = ("_deadline", "_limit", "headers", "status_code")

    def __init__(
        self, status: int, headers: Mapping[str, str], limit: int, deadline: float
    ) -> None:
        self.status_code = status
        self.headers = headers
        self._limit = limit
        self._deadline = deadline

    def __repr__(self) -> str:
        return f"<upstream response {self.status_code}>"

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def aread(self) -> bytes:
        return await _read_capped(self.aiter_bytes(), self.headers, self._limit)


class _AiohttpResponse(_CappedResponse):
    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse, limit: int, deadline: float) -> None:
        super().__init__(response.status, response.headers, limit, deadline)
        self._response = response

    async def aread(self) -> bytes:
        content = self._response.content
        if content.is_eof():
            # The whole body has arrived (a small answer comes with its headers): reading it
            # cannot wait, so no deadline timer is armed (``asyncio.timeout`` costs ~7 µs).
            try:
                body = await content.read()
            except _AIOHTTP_ERRORS as exc:
                raise as_httpx_error(exc) from exc
            if len(body) > self._limit:
                raise _too_large(self._limit)
            return body
        declared = _declared_length(self.headers)
        if declared < 0:
            return await super().aread()  # no length given: counted as it arrives
        if declared > self._limit:
            raise _too_large(self._limit)
        # One read of the declared length (aiohttp holds the upstream to it) under the deadline:
        # cheaper than iterating chunks through an async generator.
        scope = asyncio.timeout(self._deadline - time.monotonic())
        try:
            async with scope:
                return await self._response.read()
        except _AIOHTTP_ERRORS as exc:
            if scope.expired():
                raise _past_deadline() from None
            raise as_httpx_error(exc) from exc

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        deadline = self._deadline
        try:
            async for chunk in self._response.content.iter_any():
                if time.monotonic() > deadline:
                    raise _past_deadline()
                yield chunk
        except _AIOHTTP_ERRORS as exc:
            raise as_httpx_error(exc) from exc

    async def aclose(self) -> None:
        # A fully read body returns the connection to the pool; a partial one closes it.
        self._response.release()


class AiohttpUpstream:
    """The production client: one ``aiohttp.ClientSession`` (created on first use, in the loop)."""

    def __init__(
        self,
        *,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        max_connections: int = 0,
        keepalive: float = 30.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=timeout
        )
        self._max_body_bytes = max_body_bytes
        self._deadline = deadline
        self._max_connections = max_connections
        self._keepalive = keepalive
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"AiohttpUpstream(open={self._session is not None})"

    def _open(self) -> aiohttp.ClientSession:
        # No cap by default (0): each upstream connection serves a request that already holds
        # a client connection, so a cap only queues requests behind long streams (2,000 open
        # streams waited up to 57 s for one of 512 slots, benchmarks/streams.py).
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, keepalive_timeout=self._keepalive
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=self._timeout,
            trust_env=False,
            auto_decompress=True,
        )
        return self._session

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: Body | None = None,
        time_limit: float | None = None,
    ) -> UpstreamResponse:
        session = self._session or self._open()
        deadline = time.monotonic() + (self._deadline if time_limit is None else time_limit)
        limit = self._timeout if time_limit is None else aiohttp.ClientTimeout(total=time_limit)
        try:
            response = await session.request(
                method,
                url,
                headers=headers,
                data=content,
                allow_redirects=False,
                timeout=limit,
            )
        except _AIOHTTP_ERRORS as exc:
            raise as_httpx_error(exc) from exc
        return _AiohttpResponse(response, self._max_body_bytes, deadline)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
            # Closed transports release their sockets on the loop's next turn; give it that turn
            # so a server that stops right after us leaves no socket to the garbage collector.
            await asyncio.sleep(0)


def _no_cookies() -> httpx.Cookies:
    return httpx.Cookies(CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])))


class _HttpxResponse(_CappedResponse):
    """An ``httpx.Response`` (streamed) with the body cap and the deadline."""

    __slots__ = ("_response",)

    def __init__(self, response: httpx.Response, limit: int, deadline: float) -> None:
        super().__init__(response.status_code, response.headers, limit, deadline)
        self._response = response

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_bytes():
            if time.monotonic() > self._deadline:
                raise _past_deadline()
            yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


class HttpxUpstream:
    """Any httpx transport behind the same interface (tests: ``httpx.MockTransport``)."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        deadline: float = DEFAULT_DEADLINE,
    ) -> None:
        self._max_body_bytes = max_body_bytes
        self._deadline = deadline
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            follow_redirects=False,
            trust_env=False,
        )
        self._client.cookies = _no_cookies()

    def __repr__(self) -> str:
        return "HttpxUpstream()"

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: Body | None = None,
        time_limit: float | None = None,
    ) -> UpstreamResponse:
        deadline = time.monotonic() + (self._deadline if time_limit is None else time_limit)
        request = self._client.build_request(
            method,
            url,
            content=content,
            headers=headers,
            timeout=httpx.USE_CLIENT_DEFAULT if time_limit is None else time_limit,
        )
        response = await self._client.send(request, stream=True)
        return _HttpxResponse(response, self._max_body_bytes, deadline)

    async def aclose(self) -> None:
        await self._client.aclose()

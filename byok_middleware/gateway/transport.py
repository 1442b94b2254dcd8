"""The seam between the gateway and the network: one small client interface, two implementations.

``AiohttpUpstream`` is the production client: aiohttp directly, one pooled session, no cookie jar.
Measured in ``benchmarks/`` it costs a fraction of httpx's default transport and ~40% less than
httpx's API over ``httpx-aiohttp`` (RESULTS.md). ``HttpxUpstream`` wraps an ``httpx.AsyncClient``
around any httpx transport, which is how tests script providers with ``httpx.MockTransport``.

Both speak httpx's exception vocabulary (``httpx.TimeoutException``, ``httpx.TransportError``),
so callers catch one family whichever client runs, and both refuse to keep upstream cookies: a
``Set-Cookie`` from one tenant's call must never ride along on another tenant's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Protocol

import aiohttp
import httpx

__all__ = [
    "AiohttpUpstream",
    "HttpxUpstream",
    "UpstreamClient",
    "UpstreamResponse",
    "as_httpx_error",
]

Body = bytes | AsyncIterable[bytes]


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


class _AiohttpResponse:
    __slots__ = ("_response", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        # Plain attributes, not properties: each is read several times per call.
        self.status_code: int = response.status
        self.headers: Mapping[str, str] = response.headers

    def __repr__(self) -> str:
        return f"<upstream response {self.status_code}>"

    async def aread(self) -> bytes:
        try:
            return await self._response.read()
        except _AIOHTTP_ERRORS as exc:
            raise as_httpx_error(exc) from exc

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
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
        max_connections: int = 512,
        keepalive: float = 30.0,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=timeout
        )
        self._max_connections = max_connections
        self._keepalive = keepalive
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"AiohttpUpstream(open={self._session is not None})"

    def _open(self) -> aiohttp.ClientSession:
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
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
            # Closed transports release their sockets on the loop's next turn; give it that turn
            # so a server that stops right after us leaves no socket to the garbage collector.
            await asyncio.sleep(0)


def _no_cookies() -> httpx.Cookies:
    return httpx.Cookies(CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])))


class HttpxUpstream:
    """Any httpx transport behind the same interface (tests: ``httpx.MockTransport``)."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        *,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
    ) -> None:
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
        request = self._client.build_request(
            method,
            url,
            content=content,
            headers=headers,
            timeout=httpx.USE_CLIENT_DEFAULT if time_limit is None else time_limit,
        )
        return await self._client.send(request, stream=True)

    async def aclose(self) -> None:
        await self._client.aclose()

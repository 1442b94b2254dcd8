"""Talking to providers: URLs, auth headers per key, the first-event wait, errors as OpenAI's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import httpx

from byok_middleware.crypto import SecretStr
from byok_middleware.errors import BYOKError, UpstreamError
from byok_middleware.gateway.calls import Candidate, KeyUse
from byok_middleware.gateway.transport import DEFAULT_MAX_BODY_BYTES, BodyTooLarge, UpstreamResponse
from byok_middleware.providers.specs import PROVIDERS, WireFormat
from byok_middleware.redaction import Redactor

__all__ = [
    "FIRST_EVENT_TIMEOUT",
    "RETRYABLE_STATUSES",
    "EmptyStream",
    "Upstreams",
    "auth_headers",
    "await_first_event",
    "close_iterator",
    "normalize_error",
    "upstream_url",
]

# Statuses after which the next candidate key is tried (DESIGN.md §5): a rejected key, a timeout,
# a rate limit, any 5xx (529 included). Other 4xx mean the request itself is wrong and another
# key would fail the same way. ``gateway.health.classify`` says what each means for the key.
RETRYABLE_STATUSES = frozenset({401, 403, 408, 429, *range(500, 600)})
KEY_REJECTED_STATUSES = frozenset({401, 403})


class EmptyStream(Exception):
    """A 2xx stream ended before its first event: nothing reached the client, so fail over."""


class _Replayed:
    """An upstream response whose first bytes were read ahead: they come first, then the rest."""

    __slots__ = ("_head", "_inner", "_rest")

    def __init__(
        self, inner: UpstreamResponse, head: list[bytes], rest: AsyncIterator[bytes]
    ) -> None:
        self._inner = inner
        self._head = head
        self._rest = rest

    @property
    def status_code(self) -> int:
        return self._inner.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._inner.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        head, self._head = self._head, []
        for chunk in head:
            yield chunk
        async for chunk in self._rest:
            yield chunk

    async def aread(self) -> bytes:
        # Capped like the transport's own aread (a JSON answer to a stream request).
        chunks, size = [], 0
        async for chunk in self.aiter_bytes():
            size += len(chunk)
            if size > DEFAULT_MAX_BODY_BYTES:
                raise BodyTooLarge(f"the upstream answer exceeds {DEFAULT_MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await close_iterator(self._rest)
        await self._inner.aclose()


async def close_iterator(iterator: AsyncIterator[bytes]) -> None:
    """Close an async generator the reader stopped early (a stream's ``[DONE]``, an error).

    Left to the garbage collector, each one costs the event loop a thread-safe wake-up and a
    task to run its ``aclose`` (``asyncio``'s async-generator finalizer hook): on a stream that
    was a third of the package's own CPU per request in-process.
    """
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


_FIRST_EVENT_LIMIT = 64 * 1024
FIRST_EVENT_TIMEOUT = 30.0


async def await_first_event(
    response: UpstreamResponse, *, limit: float = FIRST_EVENT_TIMEOUT
) -> UpstreamResponse:
    """Read a streamed 2xx answer up to its first SSE event; return it with those bytes kept.

    This defines "before the first byte" for failover: a stream is committed once its first
    event (a ``data:`` or ``event:`` line, not a keep-alive comment) arrived from upstream; until
    then nothing was sent to the client. ``limit`` (seconds, ``BYOK_FIRST_EVENT_TIMEOUT``) bounds
    the whole wait from here: comments (``: keep-alive``) do not reset it, so an upstream that
    only keeps the connection warm fails over. Raises ``EmptyStream``, ``httpx.ReadTimeout`` or the
    transport's ``httpx`` error (the response is then closed). A JSON answer is returned as it
    is: the provider answered in one piece instead of streaming.
    """
    media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        # A whole answer where a stream was asked for: no event will come, and failing over
        # would pay twice; the relay answers the client from it (proxy/chat.py).
        return response
    rest = response.aiter_bytes()
    head: list[bytes] = []
    try:
        async with asyncio.timeout(limit):
            seen = b""
            async for chunk in rest:
                if not chunk:
                    continue
                head.append(chunk)
                seen = (seen + chunk)[-_FIRST_EVENT_LIMIT:]
                if b"data:" in seen or b"event:" in seen or len(seen) >= _FIRST_EVENT_LIMIT:
                    break
            else:
                raise EmptyStream
    except BaseException as exc:
        await _Replayed(response, head, rest).aclose()
        if isinstance(exc, TimeoutError):
            raise httpx.ReadTimeout(f"no stream event within {limit:g} s") from None
        raise
    return _Replayed(response, head, rest)


def upstream_url(base_url: str, provider: str, path: str) -> str:
    """The full upstream URL of an OpenAI path (``/chat/completions``) at ``provider``."""
    if PROVIDERS[provider].wire is WireFormat.ANTHROPIC:
        return base_url + ("/v1/messages" if path == "/chat/completions" else "/v1" + path)
    return base_url + path


def auth_headers(provider: str, secret: SecretStr) -> dict[str, str]:
    if PROVIDERS[provider].wire is WireFormat.ANTHROPIC:
        return {"x-api-key": secret.reveal(), "anthropic-version": "2023-06-01"}
    return {"authorization": "Bearer " + secret.reveal()}


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body.lstrip() or b"null")
    except (UnicodeDecodeError, ValueError):
        return None


_MESSAGE_LIMIT = 500


def _fields(provider: str, status: int, body: bytes) -> tuple[int, str, str | None, str | None]:
    """(status, message, type, code) from any provider's error shape, not yet redacted nor cut
    (cutting first could leave a fragment of a key that redaction no longer recognises)."""
    data = _parse(body)
    if isinstance(data, list) and data and isinstance(data[0], dict):
        data = data[0]  # Gemini wraps its error in an array
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        message = str(err.get("message") or "")[: 64 * 1024]  # redacted in full, then cut
        etype = err.get("type") or err.get("status")
        code = err.get("code")
        reasons = json.dumps(err.get("details") or [])
        if "API_KEY_INVALID" in reasons or "API key not valid" in message:
            status, code = 401, "invalid_api_key"  # Gemini says 400 for a bad key
        elif err.get("status") == "RESOURCE_EXHAUSTED":
            status = 429
        return status, message, str(etype) if etype else None, str(code) if code else None
    if isinstance(data, dict) and ("detail" in data or "title" in data):
        # NVIDIA's problem-details shape
        message = " ".join(str(data[k]) for k in ("title", "detail") if data.get(k))
        return status, message, None, None
    text = body[: 64 * 1024].decode("utf-8", "replace").strip()
    return status, text, None, None


def normalize_error(
    provider: str,
    status: int,
    body: bytes,
    *,
    redactor: Redactor,
    attribution: str,
    retry_after: str | None = None,
) -> BYOKError:
    """An upstream error response as a client-safe ``UpstreamError`` in OpenAI's shape.

    A rejected key (401/403) gets a message of our own, never the provider's text, since
    providers echo keys there; every other message is redacted.
    """
    status, message, etype, code = _fields(provider, status, body)
    if status == 529:
        status, etype, code = 503, "overloaded_error", code or "overloaded"
    headers = {"retry-after": retry_after} if retry_after else None
    if status in KEY_REJECTED_STATUSES:
        whose = "the tenant's own" if attribution == "byok" else "the platform"
        return UpstreamError(
            f"{provider} rejected {whose} API key (HTTP {status}); "
            "check or rotate the key with PUT /byok/providers/{id}",
            error_type="authentication_error" if status == 401 else "permission_error",
            code="invalid_api_key" if status == 401 else "permission_denied",
            status_code=status,
            headers=headers,
        )
    if not message:
        message = f"{provider} returned HTTP {status}"
    return UpstreamError(
        redactor.truncated(f"{provider}: {message}", _MESSAGE_LIMIT),
        # Every provider field that reaches the client and the ledger is redacted, type too.
        error_type=redactor.truncated(etype, 100)
        if etype
        else ("server_error" if status >= 500 else "invalid_request_error"),
        code=redactor.truncated(code, 100) if code else None,
        status_code=status if 400 <= status <= 599 else 502,
        headers=headers,
    )


class Upstreams:
    """Where each provider lives and what paying with a key needs, computed once and reused.

    ``base_url(provider)`` gives a provider's base (an override or the default); the platform
    keys are redacted from every call's errors, whichever key served it.
    """

    _MAX_KEYS = 4096  # rotated-away keys must not pile up

    def __init__(
        self,
        base_url: Callable[[str], str],
        platform_keys: Sequence[str],
        *,
        first_event_timeout: float = FIRST_EVENT_TIMEOUT,
    ) -> None:
        self.first_event_timeout = first_event_timeout  # await_first_event's, for failover
        self._base_url = base_url
        self._platform_keys = tuple(platform_keys)
        self._urls: dict[tuple[str, str], str] = {}
        self._key_uses: dict[SecretStr, KeyUse] = {}

    def url(self, provider: str, path: str) -> str:
        """The full upstream URL of an OpenAI ``path`` at ``provider``."""
        url = self._urls.get((provider, path))
        if url is None:
            url = upstream_url(self._base_url(provider), provider, path)
            self._urls[(provider, path)] = url  # bounded: providers x gateway paths
        return url

    def key_use(self, candidate: Candidate) -> KeyUse:
        """The redactor and auth headers of ``candidate``'s key, built once per key."""
        use = self._key_uses.get(candidate.secret)
        if use is None:
            if len(self._key_uses) >= self._MAX_KEYS:
                self._key_uses.clear()
            redactor = Redactor([candidate.secret.reveal(), *self._platform_keys])
            use = KeyUse(redactor, auth_headers(candidate.provider, candidate.secret))
            self._key_uses[candidate.secret] = use
        return use

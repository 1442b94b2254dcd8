"""Small ASGI helpers shared by the gateway's handlers: bounded body reads and JSON replies."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from byok_middleware.errors import BYOKError, InvalidRequest, PayloadTooLarge
from byok_middleware.jsoncodec import dumps, loads

__all__ = [
    "MAX_HEADER_BYTES",
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "check_header_size",
    "dumps",
    "header",
    "json_body",
    "loads",
    "parse_json_object",
    "raw_header",
    "read_body",
    "send_error",
    "send_json",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_JSON_DEPTH = 64
# Servers differ (h11 stops near 16 KiB, httptools accepts megabytes): the gateway sets its own.
MAX_HEADER_BYTES = 32 * 1024


def raw_header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (``name`` lower-case bytes), as bytes."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (``name`` lower-case bytes), decoded as latin-1."""
    value = raw_header(scope, name)
    return None if value is None else value.decode("latin-1")


def check_header_size(scope: Scope, limit: int = MAX_HEADER_BYTES) -> None:
    """Refuse request headers larger than ``limit`` bytes in total with a 431."""
    size = 0
    for key, value in scope.get("headers", ()):  # a loop: half the cost of sum() over a genexpr
        size += len(key) + len(value)
    if size > limit:
        raise InvalidRequest(
            f"the request headers exceed the limit of {limit} bytes",
            code="request_headers_too_large",
            status_code=431,
        )


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes with a 413."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("the client disconnected before sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        if not message.get("more_body", False):
            if not chunks and type(chunk) is bytes:
                return chunk  # the usual single-message body, without a copy
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


def _depth(value: Any) -> int:
    # Iterative so that a hostile nesting cannot exhaust the Python stack.
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_JSON_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


# JSON may escape a lone UTF-16 surrogate ("\\ud800"), which no UTF-8 text (upstream bodies,
# the database) can hold; only bodies that contain such an escape pay for the full check.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Parse a request body that must be a JSON object (400 otherwise)."""
    if not raw:
        raise InvalidRequest("the request body is empty; a JSON object is expected")
    try:
        value = loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequest("the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidRequest("the request body must be a JSON object")
    if raw.find(b"\\u") >= 0 and _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(value):
        raise InvalidRequest("the request body contains an unpaired UTF-16 surrogate escape")
    # Each level needs an opening bracket: counting them (C speed) spares most bodies the walk.
    brackets = raw.count(b"{") + raw.count(b"[")
    if brackets > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        raise InvalidRequest(f"the request body nests deeper than {MAX_JSON_DEPTH} levels")
    return value


async def json_body(receive: Receive, limit: int) -> dict[str, Any]:
    return parse_json_object(await read_body(receive, limit))


def _raw_headers(
    content_type: bytes, length: int, headers: Mapping[str, str] | None
) -> list[tuple[bytes, bytes]]:
    raw = [(b"content-type", content_type), (b"content-length", str(length).encode())]
    if headers:
        raw.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    return raw


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"application/json",
    headers: Mapping[str, str] | None = None,
    extra_raw: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    raw = _raw_headers(content_type, len(body), headers)
    raw.extend(extra_raw)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, value: Any, headers: Mapping[str, str] | None = None
) -> None:
    await send_bytes(send, status, dumps(value), headers=headers)


async def send_error(
    send: Send, error: BYOKError, headers: Mapping[str, str] | None = None
) -> None:
    merged = {**error.headers, **(headers or {})}
    await send_json(send, error.status_code, {"error": error.to_dict()}, merged)

"""Dispatch of the gateway's own paths (below the prefix) to their handlers."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from byok_middleware.asgi import (
    Message,
    Receive,
    Scope,
    Send,
    check_header_size,
    raw_header,
    send_error,
    send_json,
)
from byok_middleware.errors import AuthenticationFailed, BYOKError, InvalidRequest
from byok_middleware.identity import resolve_tenant
from byok_middleware.providers.messages_ingress_response import anthropic_error, anthropic_error_for
from byok_middleware.providers.specs import PROVIDERS
from byok_middleware.redaction import Redactor

if TYPE_CHECKING:
    from byok_middleware.gateway import Gateway

__all__ = ["Incoming", "Route", "Router", "escape_for_log"]

logger = logging.getLogger("byok_middleware.router")

Handler = Callable[["Gateway", "Incoming"], Awaitable[None]]

# Request ids: 64 random bits per process and a counter. Unique across replicas (the ledger's
# request_id is UNIQUE) without an os.urandom call per request, which profiles showed at ~3%.
_ID_PREFIX = "req_" + os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)


def escape_for_log(text: object) -> str:
    """``text`` with control characters escaped (``%0a`` in a path must not forge a log line)."""
    return str(text).encode("unicode_escape", "backslashreplace").decode("ascii")


def _next_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):012x}"


@dataclass(slots=True)
class Incoming:
    """One request to a gateway route, after identification."""

    scope: Scope
    receive: Receive
    send: Send
    tenant_id: str
    request_id: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    def query(self) -> dict[str, str]:
        raw = self.scope.get("query_string", b"").decode("latin-1")
        return dict(parse_qsl(raw, keep_blank_values=False))


@dataclass(frozen=True, slots=True)
class Route:
    """``anthropic``: a route of Anthropic's Messages dialect. Its callers may present the
    gateway key in ``x-api-key`` too (what Anthropic's SDKs send), and its errors take
    Anthropic's shape ``{"type": "error", "error": {"type", "message"}}``."""

    handlers: dict[str, Handler]  # method -> handler
    authenticated: bool = True
    anthropic: bool = False


class _ResponseGuard:
    """Wraps ``send`` to know whether the response has started (errors can only go before)."""

    __slots__ = ("send", "started")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class Router:
    """Exact paths, paths with one ``{id}`` segment (``/byok/providers/{id}/verify``), and
    paths ending in ``{id:path}``, whose id may hold slashes (``/models/openai/gpt-4o``)."""

    def __init__(self) -> None:
        self._exact: dict[str, Route] = {}
        self._with_id: dict[tuple[str, str], Route] = {}
        self._with_path: dict[str, Route] = {}

    def add(self, path: str, route: Route) -> None:
        if path.endswith("{id:path}"):
            self._with_path[path.removesuffix("{id:path}")] = route
        elif "{id}" in path:
            head, _, tail = path.partition("{id}")
            self._with_id[(head, tail)] = route
        else:
            self._exact[path] = route

    def match(self, path: str) -> tuple[Route, dict[str, str]] | None:
        route = self._exact.get(path)
        if route is not None:
            return route, {}
        for (head, tail), candidate in self._with_id.items():
            if path.startswith(head) and path.endswith(tail):
                value = path[len(head) : len(path) - len(tail)]
                if value and "/" not in value:
                    return candidate, {"id": value}
        for head, candidate in self._with_path.items():
            if path.startswith(head) and len(path) > len(head):
                return candidate, {"id": path[len(head) :]}
        return None

    async def dispatch(
        self,
        gateway: Gateway,
        route: Route,
        params: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        guard = _ResponseGuard(send)
        request_id = _next_request_id()
        tenant_id: str | None = None
        try:
            check_header_size(scope)
            handler = route.handlers.get(scope["method"])
            if handler is None:
                raise InvalidRequest(
                    f"method {scope['method']} is not allowed here; use "
                    + " or ".join(sorted(route.handlers)),
                    code="method_not_allowed",
                    status_code=405,
                )
            if route.authenticated:
                tenant_id = await _identify(gateway, scope, x_api_key=route.anthropic)
            else:
                tenant_id = ""
            if tenant_id is None:
                raise AuthenticationFailed(
                    "missing or invalid gateway API key: send Authorization: Bearer byok_..."
                    + (" or x-api-key: byok_..." if route.anthropic else "")
                )
            incoming = Incoming(scope, receive, guard, tenant_id, request_id, params)
            await handler(gateway, incoming)
        except BYOKError as exc:
            if guard.started:
                logger.warning("error after the response started (%s): %s", request_id, exc.code)
                return
            await _send_error(guard, exc, request_id, anthropic=route.anthropic)
        except Exception as exc:  # noqa: BLE001 -- the last line of defence; logged below
            # Rendered here and redacted against this tenant's own keys (of any shape), then
            # logged without exc_info, so no handler can render the original exception or its
            # frames' locals; the logger's RedactingFilter applies on top. The client gets a
            # generic message.
            logger.error(
                "unhandled error in %s %s (%s)\n%s",
                escape_for_log(scope["method"]),
                escape_for_log(scope["path"]),
                request_id,
                await _redacted_traceback(gateway, tenant_id, exc),
            )
            if not guard.started:
                internal = BYOKError(
                    f"internal gateway error (request {request_id})", code="internal_error"
                )
                await _send_error(guard, internal, request_id, anthropic=route.anthropic)


async def _send_error(send: Send, exc: BYOKError, request_id: str, *, anthropic: bool) -> None:
    """The error in OpenAI's shape, or in Anthropic's on the Messages dialect's routes."""
    if not anthropic:
        await send_error(send, exc, {"x-byok-request-id": request_id})
        return
    status, body = anthropic_error_for(exc)
    if exc.code == "internal_error":
        body = anthropic_error(500, exc.message, "api_error")
    await send_json(send, status, body, {**exc.headers, "x-byok-request-id": request_id})


async def _identify(gateway: Gateway, scope: Scope, *, x_api_key: bool = False) -> str | None:
    """The caller's tenant: the host's ``identify`` if it gave one, else its gateway API key
    (in ``Authorization: Bearer``, or in ``x-api-key`` where ``x_api_key`` allows it)."""
    if gateway.identify is None:
        authorization = raw_header(scope, b"authorization")
        if authorization is None and x_api_key:
            key = raw_header(scope, b"x-api-key")
            authorization = b"Bearer " + key.strip() if key else None
        return await gateway.gateway_keys.tenant_for(authorization)
    return await resolve_tenant(gateway.identify, scope)


async def _redacted_traceback(gateway: Gateway, tenant_id: str | None, exc: BaseException) -> str:
    secrets = gateway.config.log_secrets()
    if tenant_id:
        # Best effort: if the store is what failed, the patterns and platform keys still apply.
        with contextlib.suppress(Exception):
            for provider in PROVIDERS:
                resolved = await gateway.keys.keys_for(tenant_id, provider)
                secrets.extend(key.secret.reveal() for key in resolved)
    text = "".join(traceback.format_exception(exc)).rstrip("\n")
    return Redactor(secrets)(text)

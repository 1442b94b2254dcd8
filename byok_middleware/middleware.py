"""``BYOKMiddleware``: the one line that turns an ASGI app into a BYOK LLM gateway."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Unpack

from byok_middleware.asgi import ASGIApp, Message, Receive, Scope, Send, send_error
from byok_middleware.config import BYOKConfig, check_sqlite_path, store_failure
from byok_middleware.errors import BYOKError, ConfigurationError
from byok_middleware.gateway import Gateway
from byok_middleware.gateway.options import GatewayOptions, engine_options
from byok_middleware.redaction import install_log_redaction
from byok_middleware.routes import build_router

__all__ = ["BYOKMiddleware"]

logger = logging.getLogger("byok_middleware")


class BYOKMiddleware:
    """Pure ASGI middleware serving the gateway's routes below ``config.prefix``.

    Everything else (other paths, websockets) goes to the wrapped app untouched. At the
    server's lifespan start-up the gateway opens its store and upstream client *before* the
    host's own start-up runs, and closes them after the host's shutdown; a server that sends no
    lifespan gets them opened by the first gateway request.

    A configuration error (a missing or malformed ``BYOK_MASTER_KEY``, a malformed ``BYOK_*``
    value) is found here, without I/O, but raised at start-up, not by the constructor: under
    ``app.add_middleware`` the host framework builds its middleware inside its first ASGI call
    (the lifespan), where an exception reads to the server as "lifespan unsupported", and the
    server then starts with every route broken. So at start-up the middleware sends
    ``lifespan.startup.failed`` with the message (uvicorn logs it and exits non-zero, whatever
    its lifespan mode) and raises it, as Starlette's own router does; an unreachable store fails
    the start-up the same way. Without lifespan, gateway routes answer 503 and the log says why.

    Args:
        app: the host ASGI app.
        **options: :class:`~byok_middleware.gateway.options.GatewayOptions`: ``config``
            (``None``: the ``BYOK_*`` environment variables), ``store``, ``identify``,
            ``transport``, ``upstream``, ``prices``, ``clock``, ``bus``, ``counters``.
    """

    def __init__(self, app: ASGIApp, **options: Unpack[GatewayOptions]) -> None:
        self.app = app
        self._opened = False
        self._open_lock = asyncio.Lock()
        self._failure: str | None = None
        self._failure_logged = False
        self._prefix = self._below_prefix = ""
        self._store_given = options.get("store") is not None
        try:
            config = options.get("config")
            self.config = config if config is not None else BYOKConfig.from_env()
            self._prefix = self.config.prefix
            self._below_prefix = self._prefix + "/"
            self.gateway = Gateway(self.config, **engine_options(options))
        except ConfigurationError as exc:
            self._failure = str(exc)
            return
        install_log_redaction(self.config.log_secrets())
        telemetry = self.gateway.telemetry
        self.router = build_router(self.config, metrics=telemetry.registry if telemetry else None)

    def __repr__(self) -> str:
        return f"BYOKMiddleware(prefix={self._prefix!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._failure is None:
            path: str = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            if path.startswith(self._below_prefix):
                match = self.router.match(path[len(self._prefix) :])
                if match is not None:
                    if not self._opened and not await self._open_for_request(send):
                        return
                    route, params = match
                    await self.router.dispatch(self.gateway, route, params, scope, receive, send)
                    return
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        elif self._failure is not None and not self._failure_logged:
            # No lifespan told the server: say it once, where the operator looks.
            self._failure_logged = True
            logger.error("byok_middleware cannot start: %s", self._failure)
        await self.app(scope, receive, send)

    async def open(self) -> None:
        """Open the store, the shared state and the upstream client (idempotent).

        The lifespan start-up calls it; call it yourself when you drive the middleware without
        a lifespan and want errors before the first request.

        Raises:
            ConfigurationError: the configuration error found at construction (the message
                names the variable and the fix), or a store or Redis that cannot be reached.
        """
        if self._failure is not None:
            raise ConfigurationError(self._failure)
        if self._opened:
            return
        async with self._open_lock:
            if not self._opened:
                if not self._store_given:
                    check_sqlite_path(self.config.database_url)
                try:
                    await self.gateway.open()
                except (sqlite3.Error, OSError) as exc:
                    # A driver's own error (an unusable SQLite path): name the setting instead.
                    url = None if self._store_given else self.config.database_url
                    raise store_failure(url, exc) from exc
                self._opened = True

    async def aclose(self) -> None:
        """Flush the ledger and close the store and upstream client (idempotent)."""
        async with self._open_lock:
            if self._opened:
                self._opened = False
                await self.gateway.close()

    async def _open_for_request(self, send: Send) -> bool:
        """Open lazily for a server without lifespan; a failure is a 503 and a log line."""
        try:
            await self.open()
        except ConfigurationError as exc:
            logger.error("byok_middleware cannot start: %s", exc)
            unavailable = BYOKError(
                "the gateway cannot start; the server log says why",
                code="gateway_unavailable",
                status_code=503,
            )
            await send_error(send, unavailable)
            return False
        return True

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Open before the host's start-up; on failure report it and never start the host.

        ``lifespan.startup.failed`` makes uvicorn log the message and exit non-zero in every
        lifespan mode, where an exception alone reads as "lifespan unsupported" in ``auto``.
        """
        first = await receive()
        if first["type"] == "lifespan.startup":
            try:
                await self.open()
            except Exception as exc:
                text = str(exc) if isinstance(exc, ConfigurationError) else repr(exc)
                if not isinstance(exc, ConfigurationError):
                    logger.exception("byok_middleware failed to open")
                await send({"type": "lifespan.startup.failed", "message": _failed(text)})
                raise  # as Starlette's router does: a test client sees the error itself

        replay: list[Message] = [first]

        async def host_receive() -> Message:
            return replay.pop() if replay else await receive()

        async def host_send(message: Message) -> None:
            if message["type"] in _LIFESPAN_ENDS:
                await self.aclose()
            await send(message)

        await self.app(scope, host_receive, host_send)


_LIFESPAN_ENDS = frozenset(
    {"lifespan.startup.failed", "lifespan.shutdown.complete", "lifespan.shutdown.failed"}
)


def _failed(reason: str) -> str:
    return f"byok_middleware cannot start: {reason}"

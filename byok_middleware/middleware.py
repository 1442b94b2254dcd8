"""``BYOKMiddleware``: the one line that turns an ASGI app into a BYOK LLM gateway."""

from __future__ import annotations

import asyncio
import logging

import httpx

from byok_middleware.asgi import ASGIApp, Message, Receive, Scope, Send
from byok_middleware.clock import Clock, utcnow
from byok_middleware.config import BYOKConfig
from byok_middleware.errors import ConfigurationError
from byok_middleware.gateway import Gateway
from byok_middleware.identity import Identify
from byok_middleware.pricing import PriceSource
from byok_middleware.redaction import install_log_redaction
from byok_middleware.routes import build_router
from byok_middleware.storage.base import KeyStore

__all__ = ["BYOKMiddleware"]

logger = logging.getLogger("byok_middleware")


class BYOKMiddleware:
    """Pure ASGI middleware serving the gateway's routes below ``config.prefix``.

    Everything else (other paths, websockets) goes to the wrapped app untouched. Lifespan events
    are passed through as well; the gateway opens its store and upstream client when the host's
    startup completes and closes them at shutdown, or lazily on the first request when the host
    sends no lifespan.

    Args:
        app: the host ASGI app.
        config: settings; ``None`` reads ``BYOK_*`` environment variables.
        store: a ``KeyStore``; overrides ``config.database_url``.
        identify: ``callable(scope) -> tenant id | None``, sync or async; default: gateway keys.
        transport: the upstream ``httpx`` transport (tests pass ``httpx.MockTransport``).
        prices: a ``PriceSource``; default: genai-prices with the project's gap table.
        clock: returns the current UTC time (tests inject one).

    Raises:
        ConfigurationError: at construction, for a missing or malformed master key or setting.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        config: BYOKConfig | None = None,
        store: KeyStore | None = None,
        identify: Identify | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        prices: PriceSource | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.app = app
        try:
            self.config = config if config is not None else BYOKConfig.from_env()
            self.gateway = Gateway(
                self.config,
                store=store,
                identify=identify,
                transport=transport,
                prices=prices,
                clock=clock,
            )
        except ConfigurationError as exc:
            logger.error("byok_middleware is misconfigured: %s", exc)
            raise
        install_log_redaction(self.config.log_secrets())
        self.router = build_router(dashboard=self.config.dashboard)
        self._prefix = self.config.prefix
        self._below_prefix = self._prefix + "/"
        self._opened = False
        self._open_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"BYOKMiddleware(prefix={self._prefix!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            if path.startswith(self._below_prefix):
                match = self.router.match(path[len(self._prefix) :])
                if match is not None:
                    if not self._opened:
                        await self._ensure_open()
                    route, params = match
                    await self.router.dispatch(self.gateway, route, params, scope, receive, send)
                    return
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _ensure_open(self) -> None:
        if self._opened:
            return
        async with self._open_lock:
            if not self._opened:
                await self.gateway.open()
                self._opened = True

    async def aclose(self) -> None:
        """Flush the ledger and close the store and upstream client (idempotent)."""
        async with self._open_lock:
            if self._opened:
                self._opened = False
                await self.gateway.close()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_wrapper(message: Message) -> None:
            kind = message["type"]
            if kind == "lifespan.startup.complete":
                try:
                    await self._ensure_open()
                except Exception as exc:
                    logger.exception("byok_middleware failed to start")
                    message = {
                        "type": "lifespan.startup.failed",
                        "message": f"byok_middleware failed to start: {type(exc).__name__}: {exc}",
                    }
            elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.aclose()
            await send(message)

        await self.app(scope, receive, send_wrapper)

"""Litestar support: the gateway's routes in a Litestar app, with one line.

Litestar runs app-level ``middleware=[...]`` *after* routing, so ``BYOKMiddleware`` placed there
never sees ``/v1/...``: Litestar has already answered 404. Use the plugin instead::

    from byok_middleware.contrib.litestar import BYOKPlugin

    app = Litestar(route_handlers=[...], plugins=[BYOKPlugin()])  # settings from BYOK_* env

``BYOKPlugin`` mounts the gateway as an ASGI route at ``config.prefix`` and opens / closes it in
Litestar's ``on_startup`` / ``on_shutdown``. It reads the config (``BYOKConfig.from_env()`` when
none is given) when the ``Litestar`` app is built, to know the prefix; the master key is checked
and the store opened at start-up, so a missing key stops the server with the usual message.

How requests are routed with the plugin:

* Litestar tries the host's own routes before its mounts, so a host route below the prefix
  (``GET /v1/health``, ``/v1/items/{item_id:int}``) stays the host's. Everything else below the
  prefix reaches the gateway; what the gateway does not serve gets Litestar's own 404 (raised as
  ``NotFoundException``, so the host's exception handlers shape it).
* Litestar cuts the mount path off ``scope["path"]`` and appends a "/". The plugin restores the
  full path (``/v1/chat/completions``; a trailing slash only if the client sent one, read from
  ``raw_path``), so the gateway sees the request exactly as it would as middleware.
* What the mount cannot do (Litestar's routing, checked against 2.25): a host route at exactly a
  gateway path (``/v1/models``) wins over the gateway, where as middleware the gateway wins; a
  host route at the prefix itself (``GET /v1``) is shadowed by the mount (404); a host route
  with path parameters whose first segment below the prefix is also a gateway segment
  (``/v1/byok/{x:int}``) takes that whole segment, so the gateway's ``/v1/byok/...`` answer 404;
  and a path parameter right below the prefix (``/v1/{slug:str}``) makes Litestar refuse to
  build the app ("Path parameters are not allowed under a static or mount route"). An empty
  prefix is refused: a mount at "/" would swallow every host route with path parameters.
  Where any of this matters, use :func:`wrap`.
* The mount is a Litestar route, so the host's app-level middleware runs before the gateway.
  With the default identity (gateway API keys, ``Authorization: Bearer byok_...``) the mount
  opts out of the host's authentication and CSRF middleware through Litestar's default ``opt``
  keys ``exclude_from_auth`` and ``exclude_from_csrf``: the gateway authenticates every request
  itself, and a bearer header is not sent by browsers on their own, so there is nothing to
  forge cross-site. Host compression still wraps the mount; exclude the prefix from it
  (``CompressionConfig(..., exclude="^/v1/")``) so streamed completions are not re-encoded.

With ``identify=`` both the host's authentication and CSRF middleware run first, so
``identify`` can read the user Litestar's auth middleware (``JWTAuth``, session auth, any
``AbstractAuthenticationMiddleware``) put in the scope::

    def tenant_of(scope: Scope) -> str | None:
        user = scope.get("user")  # set by the host's auth middleware
        return None if user is None else user.tenant_id

    app = Litestar(
        ..., on_app_init=[jwt_auth.on_app_init], plugins=[BYOKPlugin(identify=tenant_of)]
    )

The host's auth middleware then refuses unauthenticated calls itself (in Litestar's error
shape, not OpenAI's), and a cookie-based identity needs Litestar's CSRF token on POSTs.

:func:`wrap` is the other design: ``wrap(Litestar(...))`` returns ``BYOKMiddleware`` around the
whole app (serve that object), which answers the gateway's paths before Litestar routes
anything, exactly as in Starlette or FastAPI, and passes other paths and lifespan through. No
Litestar middleware, auth or exception handler runs for gateway requests, so ``scope["user"]``
is never set there: ``identify`` must read the request itself (headers, cookies).
"""

from __future__ import annotations

import logging
from typing import Unpack, cast

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.exceptions import NotFoundException
from litestar.handlers import ASGIRouteHandler, asgi
from litestar.plugins import InitPluginProtocol

from byok_middleware.asgi import ASGIApp, Receive, Scope, Send
from byok_middleware.config import BYOKConfig
from byok_middleware.errors import ConfigurationError
from byok_middleware.gateway.options import GatewayOptions
from byok_middleware.middleware import BYOKMiddleware

__all__ = ["BYOKPlugin", "wrap"]

logger = logging.getLogger("byok_middleware")


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """Below the prefix but not a gateway route: Litestar's own 404, via its exception handlers."""
    raise NotFoundException()


def _restore_path(mount_path: str, scope: Scope) -> str:
    """The path below ``root_path`` as the client sent it, from what Litestar left of it.

    For a mount, Litestar's router sets ``scope["path"]`` to the rest of the (normalised) path
    after ``mount_path``, with a "/" appended; ``raw_path`` tells whether the client's path
    really ended in "/" (a server that sends no ``raw_path`` gets no trailing slash). A rest not
    starting with "/" (``/v1abc``: Litestar matches mounts by string prefix) stays outside the
    prefix, as it should.
    """
    rest: str = scope["path"]
    raw: bytes = scope.get("raw_path") or b""
    if rest.endswith("/") and not raw.endswith(b"/"):
        rest = rest[:-1]
    return mount_path + rest


class BYOKPlugin(InitPluginProtocol):
    """A Litestar plugin that serves the gateway's routes below ``config.prefix``.

    ``Litestar(plugins=[BYOKPlugin()])`` is the Litestar form of
    ``app.add_middleware(BYOKMiddleware)``; the module docstring says how it routes and
    authenticates. It subclasses ``InitPluginProtocol`` rather than 2.15's ``InitPlugin`` so
    that every Litestar 2.10+ recognises it.

    Args:
        **options: :class:`~byok_middleware.gateway.options.GatewayOptions`, as for
            ``BYOKMiddleware``; ``config=None`` reads the ``BYOK_*`` variables when the app is
            built. Without ``identify`` the mount opts out of the host's auth and CSRF
            middleware (the gateway API keys authenticate every request).

    Raises:
        ConfigurationError: an empty prefix or a malformed ``BYOK_*`` setting when the app is
            built; a missing or malformed master key, or an unreachable store, at start-up
            (Litestar then fails its startup and uvicorn exits non-zero).
    """

    def __init__(self, **options: Unpack[GatewayOptions]) -> None:
        self._options = options
        self._config = options.get("config")
        # Built at start-up (or by the first request when the server sends no lifespan), so that
        # importing a module that builds the app needs no master key, as with add_middleware.
        self._middleware: BYOKMiddleware | None = None

    def __repr__(self) -> str:
        prefix = None if self._config is None else self._config.prefix
        return f"BYOKPlugin(prefix={prefix!r})"

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Mount the gateway at the prefix and hook its open / close into the app's lifespan."""
        if self._config is None:
            self._config = BYOKConfig.from_env()
        if not self._config.prefix:
            raise ConfigurationError(
                "BYOKPlugin needs a non-empty prefix (BYOK_PREFIX): a Litestar mount at '/' "
                "would hide the app's routes with path parameters; use "
                "byok_middleware.contrib.litestar.wrap"
            )
        app_config.route_handlers.append(self._mount(self._config.prefix))
        app_config.on_startup.append(self._open)
        app_config.on_shutdown.append(self._close)
        return app_config

    def _gateway(self) -> BYOKMiddleware:
        if self._middleware is None:
            options = self._options.copy()
            options["config"] = self._config  # as read when the app was built
            self._middleware = BYOKMiddleware(_not_found, **options)
        return self._middleware

    async def _open(self) -> None:
        # The middleware's own opener, so a request racing start-up cannot open twice.
        try:
            await self._gateway().open()
        except ConfigurationError as exc:
            # Litestar reports the failure with a traceback; this line is the one to read.
            logger.error("byok_middleware cannot start: %s", exc)
            raise

    async def _close(self) -> None:
        # Dropped after closing: a later start-up (a new event loop) builds a fresh gateway.
        middleware, self._middleware = self._middleware, None
        if middleware is not None:
            await middleware.aclose()

    def _mount(self, mount_path: str) -> ASGIRouteHandler:
        own_auth = self._options.get("identify") is None

        async def byok_gateway(scope: Scope, receive: Receive, send: Send) -> None:
            # copy_scope=True: this rewrite stays out of the host's scope.
            scope["path"] = scope.get("root_path", "") + _restore_path(mount_path, scope)
            await self._gateway()(scope, receive, send)

        return asgi(
            mount_path,
            is_mount=True,
            copy_scope=True,
            name="byok_gateway",
            opt={"exclude_from_auth": own_auth, "exclude_from_csrf": own_auth},
        )(byok_gateway)


def wrap(app: Litestar, **options: Unpack[GatewayOptions]) -> BYOKMiddleware:
    """``BYOKMiddleware`` around a whole Litestar app; serve the returned object.

    The gateway's paths are answered before Litestar routes; everything else, and lifespan, goes
    to ``app`` untouched, and the gateway opens / closes with the app's lifespan. Options as for
    :class:`BYOKPlugin`, except that ``identify`` cannot read ``scope["user"]`` (Litestar's
    middleware has not run). A configuration error fails the server's start-up, as for
    ``BYOKMiddleware``.
    """
    # Litestar's __call__ takes its TypedDict scopes; at run time it is an ordinary ASGI app.
    return BYOKMiddleware(cast(ASGIApp, app), **options)

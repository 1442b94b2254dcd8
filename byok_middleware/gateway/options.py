"""The options every entry point takes: one definition, documented once.

``BYOKMiddleware(app, **options)``, ``BYOKPlugin(**options)``, ``contrib.litestar.wrap(app,
**options)`` take :class:`GatewayOptions`; ``Gateway(config, **options)`` takes the same minus
``config`` (:class:`EngineOptions`), since the engine needs a config already read. Every key is
optional; what is left out gets the default named below. Typed with ``typing.Unpack``, so a
misspelt option is a type error, and at run time a ``TypeError`` as for any unknown keyword.
"""

from __future__ import annotations

from typing import TypedDict

import httpx

from byok_middleware.clock import Clock
from byok_middleware.config import BYOKConfig
from byok_middleware.gateway.tenants import Identify
from byok_middleware.gateway.transport import UpstreamClient
from byok_middleware.pricing import PriceSource
from byok_middleware.state import Counters, InvalidationBus
from byok_middleware.storage.base import KeyStore
from byok_middleware.telemetry.observer import Observer

__all__ = ["EngineOptions", "GatewayOptions", "engine_options"]


class EngineOptions(TypedDict, total=False):
    """The gateway's collaborators; each one replaces the default built from the config.

    Keys:
        store: a ``KeyStore``; default: ``store_from_url(config.database_url)``.
        identify: ``callable(scope) -> tenant id | None``, sync or async; default: the gateway
            API keys (``Authorization: Bearer byok_...``).
        transport: an ``httpx.AsyncBaseTransport`` for upstream calls (tests pass
            ``httpx.MockTransport``); default: aiohttp directly.
        upstream: a whole ``UpstreamClient`` (takes precedence over ``transport``); the gateway
            closes it at shutdown as it would its own.
        prices: a ``PriceSource``; default: genai-prices with the project's gap table.
        clock: returns the current UTC time; default: the system clock.
        bus: the key-change ``InvalidationBus``; default: Redis pub/sub with
            ``config.redis_url``, else in-process.
        counters: the rate-limit ``Counters``; default: Redis with ``config.redis_url``, else
            in-process.
        observer: an ``Observer`` (``byok_middleware.telemetry``) told of every request,
            attempt and key event, beside the ones the config turns on; default: none.
    """

    store: KeyStore | None
    identify: Identify | None
    transport: httpx.AsyncBaseTransport | None
    upstream: UpstreamClient | None
    prices: PriceSource | None
    clock: Clock
    bus: InvalidationBus | None
    counters: Counters | None
    observer: Observer | None


class GatewayOptions(EngineOptions, total=False):
    """:class:`EngineOptions` plus ``config``: a ``BYOKConfig``; ``None`` or left out reads the
    ``BYOK_*`` environment variables (``BYOKConfig.from_env()``)."""

    config: BYOKConfig | None


def engine_options(options: GatewayOptions) -> EngineOptions:
    """``options`` without ``config``, for ``Gateway(config, **engine_options(options))``."""
    engine: EngineOptions = {}
    for key, value in options.items():
        if key != "config":
            engine[key] = value  # type: ignore[literal-required]  # keys of a GatewayOptions
    return engine

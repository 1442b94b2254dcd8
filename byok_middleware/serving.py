"""The app ``byok-middleware serve`` runs, and the start-up step that keeps its pauses short.

``create_app()`` is the gateway alone: :class:`BYOKMiddleware` around a bare Starlette app,
settings from the ``BYOK_*`` variables. It is a factory (``uvicorn --factory
byok_middleware.serving:create_app``), so every worker of ``serve --workers N`` or uvicorn's own
``--workers`` builds its own gateway after the fork: its own store connection, upstream client
and ledger journal segment.

Its lifespan start-up ends with :func:`freeze_startup_heap`: one full collection, then
``gc.freeze()``, which moves every object alive at that moment (modules, the price data, the
gateway's collaborators) into the collector's permanent generation. A full collection walks
every tracked object in the process and holds up the event loop meanwhile; with about 90,000
start-up objects that was 40-60 ms, once every few thousand requests, and it made the p99
under load. Frozen objects are no longer walked, so those collections take a few ms
(``docs/performance.md``, "Pauses"). The cost: garbage cycles among the frozen objects are
never freed, and the start-up objects are expected to live as long as the process anyway.

The same step raises the youngest generation's threshold from 700 to ``YOUNG_THRESHOLD``
(50,000) tracked objects. With 32 requests in flight their own objects alone are thousands,
so at 700 a young collection ran every ~13 requests (~270 us each), walked objects that were
about to be freed anyway and promoted them, which fed the older collections: about 33 us of
CPU per request in all. Nearly everything a request allocates dies by reference count, so
under steady load the count of young objects never reaches 50,000: no young collection runs
at all, and plain requests spent 7-9% less CPU (same-run comparison, ``docs/performance.md``).
What waits longer is garbage in reference cycles, at most that many objects.

These are process-wide choices, so only the process ``serve`` owns makes them. A gateway mounted
in a host's app (``app.add_middleware(BYOKMiddleware)``) leaves it to the host, which can wrap
its own app in :class:`FreezeAfterStartup` or call ``gc.freeze()`` at the end of its start-up.
"""

from __future__ import annotations

import gc
import logging

from byok_middleware.asgi import ASGIApp, Message, Receive, Scope, Send

__all__ = ["YOUNG_THRESHOLD", "FreezeAfterStartup", "create_app", "freeze_startup_heap"]

logger = logging.getLogger("byok_middleware")

YOUNG_THRESHOLD = 50_000  # net new tracked objects before a young collection (CPython: 700)


def freeze_startup_heap() -> int:
    """Collect once, ``gc.freeze()`` what is left and raise the youngest generation's threshold
    to ``YOUNG_THRESHOLD`` (the older ones keep theirs); returns the objects now frozen."""
    gc.collect()
    gc.freeze()
    young, middle, oldest = gc.get_threshold()
    gc.set_threshold(max(YOUNG_THRESHOLD, young), middle, oldest)
    return gc.get_freeze_count()


class FreezeAfterStartup:
    """ASGI wrapper: when the wrapped app reports its lifespan start-up complete (the gateway
    opened, the price data loaded), freeze the heap (:func:`freeze_startup_heap`) before the
    server takes its first request. Every other message and scope passes through unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                frozen = freeze_startup_heap()
                logger.debug("froze %d start-up objects out of the garbage collector", frozen)
            await send(message)

        await self.app(scope, receive, lifespan_send)


def create_app() -> ASGIApp:
    """The gateway as ``serve`` runs it (a uvicorn ``--factory``); settings from ``BYOK_*``."""
    from starlette.applications import Starlette

    from byok_middleware.config import BYOKConfig
    from byok_middleware.middleware import BYOKMiddleware

    return FreezeAfterStartup(BYOKMiddleware(Starlette(), config=BYOKConfig.from_env()))

"""``RedisBus``: key-cache invalidation for many replicas over Redis publish/subscribe."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from byok_middleware.shared import EVERY_TENANT
from byok_middleware.shared.redis_client import REDIS_ERRORS, check_reachable, redis_client
from byok_middleware.state import Listener

__all__ = ["DEFAULT_CHANNEL", "RedisBus"]

logger = logging.getLogger("byok_middleware.shared")

DEFAULT_CHANNEL = "byok:key-changes"


class RedisBus:
    """An ``InvalidationBus`` on one Redis channel: every replica hears every publish.

    ``start`` subscribes before it returns (so nothing published afterwards is missed) and fails
    with a ``ConfigurationError`` naming Redis when it cannot. A background task then delivers
    tenant ids to the listener. When the connection drops (Redis restarted, network cut) the task
    reconnects with bounded exponential backoff and, once subscribed again, delivers
    :data:`~byok_middleware.shared.EVERY_TENANT`: messages sent while it was away are lost, so
    every cached key must be treated as stale.

    ``publish`` never raises for a Redis outage: the change is already stored and this replica's
    cache already dropped; it is logged, and the other replicas catch up when they reconnect.
    """

    def __init__(
        self,
        url: str,
        *,
        channel: str = DEFAULT_CHANNEL,
        client: Redis | None = None,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
    ) -> None:
        self._url = url
        self._client = client if client is not None else redis_client(url)
        self._channel = channel
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._listener: Listener | None = None
        self._task: asyncio.Task[None] | None = None
        self.reconnects = 0  # how many times the subscription was re-established

    def __repr__(self) -> str:
        state = "running" if self._task is not None else "stopped"
        return f"RedisBus(channel={self._channel!r}, {state}, reconnects={self.reconnects})"

    async def start(self, listener: Listener) -> None:
        if self._task is not None:
            self._listener = listener
            return
        await check_reachable(self._client, self._url)
        self._listener = listener
        pubsub = await self._subscribe()
        self._task = asyncio.get_running_loop().create_task(
            self._run(pubsub), name="byok-redis-bus"
        )

    async def publish(self, tenant_id: str) -> None:
        try:
            await self._client.publish(self._channel, tenant_id)
        except REDIS_ERRORS as exc:
            logger.warning(
                "could not publish a key change to Redis (%s); other replicas will reload "
                "their keys when their cache expires or they reconnect",
                type(exc).__name__,
            )

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._listener = None
        await self._client.aclose()

    async def _subscribe(self) -> PubSub:
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._channel)
        except BaseException:
            await _quietly_close(pubsub)
            raise
        return pubsub

    async def _run(self, pubsub: PubSub) -> None:
        try:
            while True:
                try:
                    await self._listen(pubsub)
                except REDIS_ERRORS as exc:
                    logger.warning(
                        "lost the Redis subscription (%s); reconnecting", type(exc).__name__
                    )
                await _quietly_close(pubsub)
                pubsub = await self._resubscribe()
                self.reconnects += 1
                await self._deliver(EVERY_TENANT)
        finally:
            await _quietly_close(pubsub)

    async def _listen(self, pubsub: PubSub) -> None:
        """Deliver messages until the connection fails (then raise)."""
        while True:
            # The timeout lets redis-py run its health-check ping on a quiet channel.
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message.get("type") == "message":
                await self._deliver(str(message["data"]))

    async def _resubscribe(self) -> PubSub:
        delay = self._min_backoff
        while True:
            await asyncio.sleep(delay)
            try:
                return await self._subscribe()
            except REDIS_ERRORS as exc:
                logger.debug("Redis still unreachable (%s)", type(exc).__name__)
            delay = min(delay * 2, self._max_backoff)

    async def _deliver(self, tenant_id: str) -> None:
        listener = self._listener
        if listener is None:
            return
        try:
            result = listener(tenant_id)
            if inspect.isawaitable(result):
                await result
        except Exception:
            # A failing listener must not stop the subscription for everyone else.
            logger.exception("the key-change listener failed")


async def _quietly_close(pubsub: PubSub) -> None:
    with contextlib.suppress(*REDIS_ERRORS):
        # Untyped before redis-py 8.2, typed since: Any keeps mypy quiet with either.
        await cast(Any, pubsub).aclose()

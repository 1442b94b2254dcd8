"""``RedisCounters``: per-key sliding windows that every replica adds to and reads atomically."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

from redis.asyncio import Redis

from byok_middleware.shared.redis_client import REDIS_ERRORS, redis_client
from byok_middleware.state import MemoryCounters

__all__ = ["KEY_PREFIX", "RedisCounters"]

logger = logging.getLogger("byok_middleware.shared")

KEY_PREFIX = "byok:window:"

# One sorted set per name: score = the time of an event in microseconds (Redis's clock, so
# replicas with drifting clocks still agree), member = "<amount>:<unique token>". Pruning,
# adding and summing run as one script, which Redis executes atomically.
_WINDOW_SCRIPT = """
local window_us = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window_us)
if amount ~= 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[2] .. ':' .. ARGV[3])
end
local total = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  total = total + tonumber(string.match(member, '^(-?%d+):'))
end
redis.call('PEXPIRE', KEYS[1], math.ceil(window_us / 1000) + 1000)
return total
"""


class RedisCounters:
    """A ``Counters`` in Redis: the window sums every replica sees are the same.

    A Redis outage does not fail requests: the counters fall back to this replica's own
    in-process windows (limits then hold per replica rather than in total) and a warning is
    logged at most once every ``warn_every`` seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        client: Redis | None = None,
        key_prefix: str = KEY_PREFIX,
        warn_every: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client if client is not None else redis_client(url)
        self._prefix = key_prefix
        self._script = self._client.register_script(_WINDOW_SCRIPT)
        self._fallback = MemoryCounters(monotonic)
        self._warn_every = warn_every
        self._now = monotonic
        self._warned_at: float | None = None

    def __repr__(self) -> str:
        return f"RedisCounters(prefix={self._prefix!r})"

    async def add(self, name: str, amount: int, window: float) -> int:
        return await self._run(name, amount, window)

    async def total(self, name: str, window: float) -> int:
        return await self._run(name, 0, window)

    async def close(self) -> None:
        await self._client.aclose()
        await self._fallback.close()

    async def _run(self, name: str, amount: int, window: float) -> int:
        if window <= 0:
            raise ValueError("window must be positive")
        token = secrets.token_hex(8)
        try:
            result = await self._script(
                keys=[self._prefix + name], args=[int(window * 1_000_000), int(amount), token]
            )
        except REDIS_ERRORS as exc:
            self._warn(exc)
            if amount:
                return await self._fallback.add(name, amount, window)
            return await self._fallback.total(name, window)
        return int(result)

    def _warn(self, exc: BaseException) -> None:
        now = self._now()
        if self._warned_at is None or now - self._warned_at >= self._warn_every:
            self._warned_at = now
            logger.warning(
                "Redis counters unavailable (%s); counting in this process only",
                type(exc).__name__,
            )

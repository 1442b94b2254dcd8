"""``RedisBudgets``: budget figures every replica reserves against atomically.

One hash per figure (``byok:budget:<line key>``): ``spent`` and ``reserved`` in nano-dollars
(integers, exact to 1e-9 USD up to millions of dollars in a Lua number), and one field
``h:<hold id>`` per reservation; a sorted set beside it (``...:exp``) holds each reservation's
expiry (Redis's clock, so replicas with drifting clocks agree). Reserving is one script: purge
the lapsed holds of every line, check ``spent + reserved + amount <= limit`` on each, then hold
on all of them or none. Settling is one script too. Redis runs a script alone, so however many
replicas race, no line overshoots what was reserved on it: zero cross-replica overshoot.

A figure missing from Redis (first use, a period just begun, a flushed Redis) is seeded from
PostgreSQL, the truth it is rebuilt from (``HSETNX``: of replicas seeding at once one wins).
Figures expire a day after their period ends. Redis unreachable: budgeted calls are refused
with a 503 (``BudgetUnavailable``) rather than admitted unchecked.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any

from redis.asyncio import Redis

from byok_middleware.gateway.budgets import (
    HOLD_TTL,
    BudgetUnavailable,
    Hold,
    Line,
    Refusal,
    Seed,
)
from byok_middleware.shared.redis_client import REDIS_ERRORS, redis_client

__all__ = ["KEY_PREFIX", "RedisBudgets"]

KEY_PREFIX = "byok:budget:"
_NANO = Decimal("1e9")
_UNLIMITED = -1
_KEPT_AFTER_RESET = timedelta(days=1)

# KEYS: hash1, expiries1, hash2, expiries2, ...
# ARGV: amount, hold id, ttl ms, then per line: limit (-1: none), expire-at ms.
# Returns {-1, i}: line i has no figure (seed it); {0, i, left}: line i refuses; {1, least}.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local amount = tonumber(ARGV[1])
local field = 'h:' .. ARGV[2]
local n = #KEYS / 2
local least = nil
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local spent = redis.call('HGET', h, 'spent')
  if not spent then return {-1, i} end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now)) do
    local held = redis.call('HGET', h, 'h:' .. id)
    if held then
      redis.call('HINCRBY', h, 'reserved', -tonumber(held))
      redis.call('HDEL', h, 'h:' .. id)
    end
    redis.call('ZREM', z, id)
  end
  local limit = tonumber(ARGV[2 + 2 * i])
  if limit >= 0 then
    local reserved = tonumber(redis.call('HGET', h, 'reserved') or '0')
    local left = limit - tonumber(spent) - reserved
    if amount > left then return {0, i, tostring(left)} end
    if least == nil or left < least then least = left end
  end
end
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('HSET', h, field, amount)
  redis.call('HINCRBY', h, 'reserved', amount)
  redis.call('ZADD', z, now + tonumber(ARGV[3]), ARGV[2])
  local expire_at = tonumber(ARGV[3 + 2 * i])
  redis.call('PEXPIREAT', h, expire_at)
  redis.call('PEXPIREAT', z, expire_at)
end
if least == nil then return {1} end
return {1, tostring(least - amount)}
"""

# KEYS: hash1, expiries1, ...; ARGV: hold id, cost. A figure gone from Redis stays gone: the
# ledger, which the cost reaches too, is what it is seeded from next time.
_SETTLE = """
local field = 'h:' .. ARGV[1]
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local held = redis.call('HGET', h, field)
  if held then
    redis.call('HINCRBY', h, 'reserved', -tonumber(held))
    redis.call('HDEL', h, field)
  end
  redis.call('ZREM', z, ARGV[1])
  if redis.call('HEXISTS', h, 'spent') == 1 then
    redis.call('HINCRBY', h, 'spent', tonumber(ARGV[2]))
  end
end
return 1
"""

# KEYS: hash, expiries; ARGV: spent, expire-at ms.
_SEED = """
redis.call('HSETNX', KEYS[1], 'spent', ARGV[1])
redis.call('HSETNX', KEYS[1], 'reserved', 0)
redis.call('PEXPIREAT', KEYS[1], tonumber(ARGV[2]))
return 1
"""

# KEYS: expiries of every figure of the holds; ARGV: ttl ms, then the hold id of each key.
_RENEW = """
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', until_ms, ARGV[i + 1])
end
return 1
"""

# KEYS: hash, expiries. Returns {spent, reserved} after purging lapsed holds, or {} (no figure).
_STANDING = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local spent = redis.call('HGET', KEYS[1], 'spent')
if not spent then return {} end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  local held = redis.call('HGET', KEYS[1], 'h:' .. id)
  if held then
    redis.call('HINCRBY', KEYS[1], 'reserved', -tonumber(held))
    redis.call('HDEL', KEYS[1], 'h:' .. id)
  end
  redis.call('ZREM', KEYS[2], id)
end
return {spent, redis.call('HGET', KEYS[1], 'reserved') or '0'}
"""


def to_nano(amount: Decimal, rounding: str = ROUND_HALF_EVEN) -> int:
    return int((amount * _NANO).to_integral_value(rounding=rounding))


def from_nano(value: Any) -> Decimal:
    # Lua prints numbers past 1e14 in exponent form ("1.5e+15"): Decimal reads both.
    text = value.decode() if isinstance(value, bytes) else str(value)
    return Decimal(text) / _NANO


def _expire_at_ms(line: Line) -> int:
    return int((line.reset + _KEPT_AFTER_RESET).timestamp() * 1000)


class RedisBudgets:
    """A ``BudgetBackend`` in Redis, shared by every replica (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        client: Redis | None = None,
        key_prefix: str = KEY_PREFIX,
        hold_ttl: float = HOLD_TTL,
    ) -> None:
        self._client = client if client is not None else redis_client(url)
        self._prefix = key_prefix
        self._ttl_ms = int(hold_ttl * 1000)
        self._reserve = self._client.register_script(_RESERVE)
        self._settle = self._client.register_script(_SETTLE)
        self._seed = self._client.register_script(_SEED)
        self._renew = self._client.register_script(_RENEW)
        self._standing = self._client.register_script(_STANDING)

    def __repr__(self) -> str:
        return f"RedisBudgets(prefix={self._prefix!r})"

    def _keys(self, figure: str) -> list[str]:
        name = self._prefix + figure
        return [name, name + ":exp"]

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except REDIS_ERRORS:
            raise BudgetUnavailable(
                "the gateway cannot reach its budget figures right now; try again shortly"
            ) from None

    async def _seed_line(self, line: Line, seed: Seed) -> None:
        spent = await seed(line)
        await self._run(self._seed, self._keys(line.key), [to_nano(spent), _expire_at_ms(line)])

    async def reserve(
        self, hold: Hold, lines: Sequence[Line], seed: Seed
    ) -> Refusal | Decimal | None:
        keys = [k for line in lines for k in self._keys(line.key)]
        args: list[Any] = [to_nano(hold.amount, ROUND_CEILING), hold.id, self._ttl_ms]
        for line in lines:
            limit = _UNLIMITED if line.limit is None else to_nano(line.limit, ROUND_FLOOR)
            args += [limit, _expire_at_ms(line)]
        for _ in range(len(lines) + 1):  # at most one seed per line
            result = await self._run(self._reserve, keys, args)
            status = int(result[0])
            if status == -1:
                await self._seed_line(lines[int(result[1]) - 1], seed)
                continue
            if status == 0:
                return Refusal(lines[int(result[1]) - 1], from_nano(result[2]))
            return from_nano(result[1]) if len(result) > 1 else None
        raise BudgetUnavailable("the budget figures could not be seeded; try again shortly")

    async def settle(self, hold: Hold, cost: Decimal) -> None:
        keys = [k for figure in hold.keys for k in self._keys(figure)]
        await self._run(self._settle, keys, [hold.id, to_nano(cost)])

    async def renew(self, holds: Sequence[Hold]) -> None:
        keys: list[str] = []
        ids: list[str] = []
        for hold in holds:
            for figure in hold.keys:
                keys.append(self._keys(figure)[1])
                ids.append(hold.id)
        if keys:
            await self._run(self._renew, keys, [self._ttl_ms, *ids])

    async def standing(self, line: Line, seed: Seed) -> tuple[Decimal, Decimal]:
        keys = self._keys(line.key)
        result = await self._run(self._standing, keys, [])
        if not result:
            await self._seed_line(line, seed)
            result = await self._run(self._standing, keys, [])
        if not result:
            raise BudgetUnavailable("the budget figures could not be seeded; try again shortly")
        return from_nano(result[0]), from_nano(result[1])

    async def close(self) -> None:
        await self._client.aclose()

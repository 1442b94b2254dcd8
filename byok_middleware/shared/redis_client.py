"""Redis connections for the shared state: one place that builds clients and checks they answer."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from byok_middleware.errors import ConfigurationError
from byok_middleware.shared import safe_url

__all__ = ["REDIS_ERRORS", "check_reachable", "redis_client"]

# What a lost or refused Redis connection raises (redis-py wraps most, not all, socket errors).
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)


def redis_client(url: str, *, health_check_interval: int = 15) -> Redis:
    """A client (with its own connection pool) for ``url``; nothing connects yet.

    redis-py's own retries are off: the bus must *see* a lost connection to know that it may
    have missed messages, and a retried counter script could count a request twice.

    Raises:
        ConfigurationError: ``url`` is not a Redis URL (the message hides the password).
    """
    try:
        client: Redis = Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=5,
            socket_keepalive=True,
            health_check_interval=health_check_interval,
            retry=Retry(NoBackoff(), 0),
            client_name="byok_middleware",
        )
    except ValueError:
        raise ConfigurationError(
            f"BYOK_REDIS_URL is not a Redis URL ({safe_url(url)}); use redis://host:port/db "
            "or rediss:// for TLS"
        ) from None
    return client


async def check_reachable(client: Redis, url: str) -> None:
    """Ping Redis once.

    Raises:
        ConfigurationError: it does not answer, naming Redis and the URL without its password.
    """
    try:
        await client.ping()
    except REDIS_ERRORS as exc:
        reason = f"{type(exc).__name__}: {exc}"
        password = _password(url)
        if password:
            reason = reason.replace(password, "***")
        raise ConfigurationError(
            f"Redis at {safe_url(url)} (BYOK_REDIS_URL) is unreachable: {reason}"
        ) from None


def _password(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None

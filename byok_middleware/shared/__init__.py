"""State that several replicas share, in Redis; and the bits both the stores and Redis use.

With ``BYOK_REDIS_URL`` set, the gateway uses :class:`~byok_middleware.shared.redis_bus.RedisBus`
(key-cache invalidation over publish/subscribe) and
:class:`~byok_middleware.shared.redis_counters.RedisCounters` (per-key sliding windows) instead of
the in-process ``LocalBus`` and ``MemoryCounters`` of :mod:`byok_middleware.state`. Those modules
need redis-py (``pip install 'byok_middleware[redis]'``); this one needs nothing, so importing it
is always safe.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["EVERY_TENANT", "safe_url"]

EVERY_TENANT = "*"
"""An invalidation naming no single tenant: drop every cached key and gateway-key lookup.

A bus delivers it after reconnecting (messages may have been missed while it was away); an
operator tool may publish it after revoking gateway keys.
"""


def safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, fit for an error message or a log line."""
    scheme, _, rest = url.partition("://")
    parts = urlsplit(url)
    if "@" in rest and "@" not in parts.netloc:
        # An unencoded '#', '?' or '/' in the password ends the netloc early, so urlsplit sees
        # no password: mask everything up to the last '@'.
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # e.g. a malformed port: show only the scheme
        return scheme + "://***"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal needs its brackets back
        host = f"[{host}]"
    netloc = f"{user}:***@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

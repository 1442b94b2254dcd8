"""Signed webhook deliveries: signing, verification, URL safety and bounded retries.

Every delivery is an HTTP ``POST`` of a JSON event with three headers:

* ``X-BYOK-Webhook-Id``: the event id (the same on every retry: deduplicate on it);
* ``X-BYOK-Webhook-Timestamp``: Unix seconds when this attempt was signed;
* ``X-BYOK-Webhook-Signature``: ``v1=`` + hex HMAC-SHA256 over ``"{timestamp}." + body`` with
  the tenant's webhook secret.

A receiver recomputes the HMAC (``verify_signature`` does it) and refuses a timestamp older or
newer than its replay window (default 300 s). Tenants choose webhook URLs, so a URL whose host
is, or resolves to, a private, loopback, link-local, shared or otherwise non-global address is
refused (at registration and again before each delivery, against DNS rebinding) unless the
operator allows it (``BYOK_WEBHOOK_ALLOW_PRIVATE``). Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

import httpx

__all__ = [
    "HEADER_ID",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "REPLAY_WINDOW_SECONDS",
    "UnsafeWebhookURL",
    "check_webhook_url",
    "deliver",
    "sign",
    "verify_signature",
]

HEADER_ID = "X-BYOK-Webhook-Id"
HEADER_TIMESTAMP = "X-BYOK-Webhook-Timestamp"
HEADER_SIGNATURE = "X-BYOK-Webhook-Signature"
REPLAY_WINDOW_SECONDS = 300
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

Resolver = Callable[[str, int], Awaitable[list[str]]]
AttemptLog = Callable[[int, int | None, str | None], Awaitable[None]]


class UnsafeWebhookURL(ValueError):
    """The URL is malformed or points at an address tenants may not reach."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-BYOK-Webhook-Signature`` value for ``body`` signed at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_signature(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float | None = None,
    tolerance: int = REPLAY_WINDOW_SECONDS,
) -> bool:
    """True when ``headers`` (case-insensitive names) sign ``body`` with ``secret`` within the
    replay window; for receivers and tests."""
    lowered = {k.lower(): v for k, v in headers.items()}
    stamp = lowered.get(HEADER_TIMESTAMP.lower(), "")
    given = lowered.get(HEADER_SIGNATURE.lower(), "")
    if not stamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, int(stamp), body), given)


def _is_refused(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def _resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port)
    return [str(info[4][0]) for info in infos]


async def check_webhook_url(
    url: str, *, allow_private: bool = False, resolve: Resolver = _resolve
) -> None:
    """Raise ``UnsafeWebhookURL`` unless ``url`` is an absolute http(s) URL whose host resolves
    only to global addresses (any address when ``allow_private``)."""
    if len(url) > 2048:
        raise UnsafeWebhookURL("the webhook URL is longer than 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeWebhookURL("the webhook URL is malformed") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeWebhookURL("the webhook URL must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise UnsafeWebhookURL("the webhook URL must not carry credentials; use the secret")
    if allow_private:
        return
    try:
        addresses = await resolve(parts.hostname, port)
    except OSError:
        raise UnsafeWebhookURL("the webhook URL's host does not resolve") from None
    if not addresses or any(_is_refused(a) for a in addresses):
        raise UnsafeWebhookURL(
            "the webhook URL points at a private, loopback or link-local address; the operator "
            "can allow that with BYOK_WEBHOOK_ALLOW_PRIVATE"
        )


async def deliver(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    secret: str,
    *,
    event_id: str,
    max_attempts: int = 5,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    log_attempt: AttemptLog | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> bool:
    """POST ``body`` signed afresh per attempt; retry connection errors, timeouts, 408/425/429
    and 5xx with exponential backoff (``backoff`` * 2^n, at most ``max_backoff``), at most
    ``max_attempts`` tries. True once a 2xx came. ``log_attempt(attempt, status, error)``
    records each try (error is a short class name, never a response body)."""
    for attempt in range(1, max_attempts + 1):
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "byok-middleware-webhooks",
            HEADER_ID: event_id,
            HEADER_TIMESTAMP: str(stamp),
            HEADER_SIGNATURE: sign(secret, stamp, body),
        }
        status: int | None = None
        error: str | None = None
        try:
            response = await client.post(url, content=body, headers=headers)
            status = response.status_code
            await response.aclose()
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.TransportError as exc:
            error = type(exc).__name__
        if status is not None and not 200 <= status < 300:
            error = f"HTTP {status}"
        if log_attempt is not None:
            await log_attempt(attempt, status, error)
        if error is None:
            return True
        if status is not None and status not in _RETRY_STATUS:
            return False  # the receiver refused the event itself: retrying will not help
        if attempt < max_attempts:
            await sleep(min(max_backoff, backoff * 2 ** (attempt - 1)))
    return False

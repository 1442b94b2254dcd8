"""Mission Control: a small cost dashboard served at ``{prefix}/byok/dashboard``.

The page is static (no secrets, no tenant data in it) and needs no auth to load; it asks for the
tenant's gateway key, keeps it in the tab's ``sessionStorage`` only, and reads the JSON API
(``/byok/usage`` and ``/byok/providers``) with it like any other client.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING

from byok_middleware.asgi import send_bytes

if TYPE_CHECKING:
    from byok_middleware.gateway import Gateway
    from byok_middleware.router import Incoming

__all__ = ["handle_dashboard"]

# The page builds its DOM with textContent only; this CSP forbids anything else from running.
_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@cache
def _page() -> bytes:
    return files("byok_middleware.dashboard").joinpath("page.html").read_bytes()


async def handle_dashboard(gateway: Gateway, incoming: Incoming) -> None:
    body = _page().replace(b"{{PREFIX}}", gateway.config.prefix.encode())
    await send_bytes(
        incoming.send, 200, body, content_type=b"text/html; charset=utf-8", headers=_HEADERS
    )

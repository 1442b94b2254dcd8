"""Mission Control: the dashboard page at ``{prefix}/byok/dashboard`` and its static files.

The page and its assets are static (no secrets, no tenant data) and need no auth to load; the
page asks for a gateway key (tenant view) or the operator key (operator view), keeps it in the
tab's ``sessionStorage`` only, and reads the JSON API with it like any other client.

Assets are served from this package (``/byok/dashboard/static/<name>``), so the page works
offline; the page links them as ``<name>?v=<content hash>`` and a request with the current hash
is cached for a year (a new release changes the hash), any other for no time at all. The CSP
allows scripts and styles from the gateway's origin only: no inline code, no CDN.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.resources import files
from typing import TYPE_CHECKING

from byok_middleware.asgi import send_bytes
from byok_middleware.errors import NotFound

if TYPE_CHECKING:
    from byok_middleware.gateway import Gateway
    from byok_middleware.router import Incoming

__all__ = ["ASSETS", "handle_dashboard", "handle_static"]

# name -> content type. chart.umd.min.js is Chart.js 4.5.1 (MIT), vendored unmodified; see the
# comment at its top and chart.js.LICENSE.txt.
ASSETS: dict[str, bytes] = {
    "app.js": b"text/javascript; charset=utf-8",
    "style.css": b"text/css; charset=utf-8",
    "chart.umd.min.js": b"text/javascript; charset=utf-8",
    "chart.js.LICENSE.txt": b"text/plain; charset=utf-8",
}

_SECURITY = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
_PAGE_HEADERS = {
    **_SECURITY,
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "cache-control": "no-store",
}
_IMMUTABLE = {**_SECURITY, "cache-control": "public, max-age=31536000, immutable"}
_UNVERSIONED = {**_SECURITY, "cache-control": "no-cache"}


@cache
def _asset(name: str) -> tuple[bytes, str]:
    body = files("byok_middleware.dashboard").joinpath(name).read_bytes()
    return body, hashlib.sha256(body).hexdigest()[:16]


@cache
def _page(prefix: str) -> bytes:
    page = files("byok_middleware.dashboard").joinpath("page.html").read_text("utf-8")
    for name in ASSETS:
        url = f"{prefix}/byok/dashboard/static/{name}?v={_asset(name)[1]}"
        page = page.replace("{{ASSET:" + name + "}}", url)
    return page.replace("{{PREFIX}}", prefix).encode("utf-8")


async def handle_dashboard(gateway: Gateway, incoming: Incoming) -> None:
    """``GET /byok/dashboard``: the page (public; it holds no data)."""
    body = _page(gateway.config.prefix)
    await send_bytes(
        incoming.send, 200, body, content_type=b"text/html; charset=utf-8", headers=_PAGE_HEADERS
    )


async def handle_static(gateway: Gateway, incoming: Incoming) -> None:
    """``GET /byok/dashboard/static/{id}``: one of ``ASSETS`` (public), else 404."""
    name = incoming.params.get("id", "")
    content_type = ASSETS.get(name)
    if content_type is None:
        raise NotFound("no such dashboard file")
    body, digest = _asset(name)
    headers = _IMMUTABLE if incoming.query().get("v") == digest else _UNVERSIONED
    await send_bytes(incoming.send, 200, body, content_type=content_type, headers=headers)

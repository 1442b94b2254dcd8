"""The engine: everything a proxied call needs below the HTTP layer.

``Gateway`` is the composition root (open/close, plan, forward, record). This package imports no
ASGI code and no pydantic, and never imports ``proxy/`` or ``keys/``: the HTTP handlers call into
it, never the reverse (``tests/test_layers.py`` enforces it).
"""

from __future__ import annotations

from byok_middleware.gateway.core import Call, Forwarded, Gateway, KeyUse, upstream_client

__all__ = ["Call", "Forwarded", "Gateway", "KeyUse", "upstream_client"]

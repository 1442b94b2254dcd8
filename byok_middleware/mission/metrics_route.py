"""``GET {prefix}/byok/metrics``: the Prometheus exposition text.

Behind the operator key (``Authorization: Bearer <BYOK_ADMIN_KEY>``) unless the operator made it
public (``BYOK_METRICS_PUBLIC``, e.g. for a scraper on a private network). Under several
workers the text sums every worker's values (``PROMETHEUS_MULTIPROC_DIR``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from byok_middleware.asgi import send_bytes
from byok_middleware.errors import AuthenticationFailed
from byok_middleware.mission.routes import is_admin
from byok_middleware.telemetry.metrics import CONTENT_TYPE, metrics_text

if TYPE_CHECKING:
    from byok_middleware.gateway import Gateway
    from byok_middleware.router import Handler, Incoming

__all__ = ["metrics_handler"]


def metrics_handler(
    registry: CollectorRegistry,
    *,
    admin_key: str | None,
    public: bool = False,
    multiprocess_dir: str | None = None,
) -> Handler:
    """The route's handler (mount it with ``authenticated=False``: it checks the key itself)."""

    async def run(gateway: Gateway, incoming: Incoming) -> None:
        if not public and not is_admin(incoming, admin_key):
            raise AuthenticationFailed(
                "metrics need the operator's key (Authorization: Bearer <BYOK_ADMIN_KEY>) "
                "unless BYOK_METRICS_PUBLIC is set"
            )
        body = metrics_text(registry, multiprocess_dir=multiprocess_dir)
        await send_bytes(
            incoming.send,
            200,
            body,
            content_type=CONTENT_TYPE.encode(),
            headers={"cache-control": "no-store"},
        )

    return run

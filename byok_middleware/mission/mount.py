"""``register``: adds Mission Control's routes to the gateway's ``Router`` (one call).

Routes added (all below the prefix)::

    GET  /byok/dashboard                    page (public; holds no data)     [dashboard=True]
    GET  /byok/dashboard/static/{name}      its assets (public)              [dashboard=True]
    GET  /byok/usage/series                 tenant
    GET  /byok/requests                     tenant
    GET  /byok/admin/usage/series           operator key                     [admin_key set]
    GET  /byok/admin/requests               operator key                     [admin_key set]
    GET|PUT|DELETE /byok/webhooks           tenant
    GET  /byok/webhooks/deliveries          tenant
    GET  /byok/metrics                      operator key, or public          [metrics given]

Without an ``admin_key`` the operator routes do not exist (404), as the admin API's do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from byok_middleware.dashboard import handle_dashboard, handle_static
from byok_middleware.mission.routes import (
    admin_only,
    handle_admin_requests,
    handle_admin_series,
    handle_requests,
    handle_series,
)
from byok_middleware.mission.webhook_routes import webhook_handlers
from byok_middleware.router import Route, Router

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["register"]


def register(
    router: Router,
    *,
    admin_key: str | None = None,
    dashboard: bool = True,
    webhook_allow_private: bool = False,
    metrics: CollectorRegistry | None = None,
    metrics_public: bool = False,
    multiprocess_dir: str | None = None,
) -> None:
    """Add the dashboard, the data and webhook routes, (with ``admin_key``) the operator
    versions, and (with a ``metrics`` registry) ``/byok/metrics``."""
    router.add("/byok/usage/series", Route({"GET": handle_series}))
    router.add("/byok/requests", Route({"GET": handle_requests}))
    webhook, deliveries = webhook_handlers(allow_private=webhook_allow_private)
    router.add("/byok/webhooks", Route({"GET": webhook, "PUT": webhook, "DELETE": webhook}))
    router.add("/byok/webhooks/deliveries", Route({"GET": deliveries}))
    if metrics is not None:
        # Imported here: prometheus-client is the optional 'telemetry' extra.
        from byok_middleware.mission.metrics_route import metrics_handler

        handler = metrics_handler(
            metrics, admin_key=admin_key, public=metrics_public, multiprocess_dir=multiprocess_dir
        )
        router.add("/byok/metrics", Route({"GET": handler}, authenticated=False))
    if admin_key:
        # Authenticated by the operator key inside the handler, not by the tenant identify hook.
        series = admin_only(handle_admin_series, admin_key)
        requests = admin_only(handle_admin_requests, admin_key)
        router.add("/byok/admin/usage/series", Route({"GET": series}, authenticated=False))
        router.add("/byok/admin/requests", Route({"GET": requests}, authenticated=False))
    if dashboard:
        router.add("/byok/dashboard", Route({"GET": handle_dashboard}, authenticated=False))
        router.add(
            "/byok/dashboard/static/{id}", Route({"GET": handle_static}, authenticated=False)
        )

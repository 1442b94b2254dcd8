"""``register``: adds Mission Control's routes to the gateway's ``Router`` (one call).

Routes added (all below the prefix)::

    GET  /byok/dashboard                    page (public; holds no data)     [dashboard=True]
    GET  /byok/dashboard/static/{name}      its assets (public)              [dashboard=True]
    GET  /byok/usage/series                 tenant
    GET  /byok/requests                     tenant
    GET  /byok/admin/usage/series           operator key                     [admin_key set]
    GET  /byok/admin/requests               operator key                     [admin_key set]

Without an ``admin_key`` the operator routes do not exist (404), as the admin API's do.
"""

from __future__ import annotations

from byok_middleware.dashboard import handle_dashboard, handle_static
from byok_middleware.mission.routes import (
    admin_only,
    handle_admin_requests,
    handle_admin_series,
    handle_requests,
    handle_series,
)
from byok_middleware.router import Route, Router

__all__ = ["register"]


def register(router: Router, *, admin_key: str | None = None, dashboard: bool = True) -> None:
    """Add the dashboard, the data routes and (with ``admin_key``) their operator versions."""
    router.add("/byok/usage/series", Route({"GET": handle_series}))
    router.add("/byok/requests", Route({"GET": handle_requests}))
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

"""HTTP handlers of Mission Control's data: usage series and the request log.

Tenant routes (the caller's own rows, identified like every tenant route)::

    GET {prefix}/byok/usage/series?since=&until=&bucket=hour|day
        &group_by=attribution|provider|model|key
    GET {prefix}/byok/requests?since=&until=&status=&provider=&model=&limit=&cursor=&format=json|csv

Operator routes (every tenant; ``Authorization: Bearer <BYOK_ADMIN_KEY>``; absent without one)::

    GET {prefix}/byok/admin/usage/series   same parameters, plus group_by=tenant
    GET {prefix}/byok/admin/requests       same parameters, plus tenant_id=

``register`` adds them (with the dashboard, webhooks and metrics routes) to a ``Router``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from byok_middleware.admin.routes import is_admin as operator_key_matches
from byok_middleware.asgi import header, send_bytes, send_json
from byok_middleware.errors import AuthenticationFailed, InvalidRequest
from byok_middleware.mission.params import parse_request_filter, parse_series_query
from byok_middleware.mission.requests import request_view, requests_csv
from byok_middleware.mission.series import series_view
from byok_middleware.mission.store import ledger_store

if TYPE_CHECKING:
    from byok_middleware.gateway import Gateway
    from byok_middleware.router import Handler, Incoming

__all__ = ["admin_only", "handle_requests", "handle_series", "is_admin"]

MAX_SERIES_ROWS = 100_000


def is_admin(incoming: Incoming, admin_key: str | None) -> bool:
    """True when the request carries ``Authorization: Bearer <admin_key>``: the operator API's
    own check (``admin.routes.is_admin``, constant time), so both accept the same header."""
    if not admin_key:
        return False
    return operator_key_matches(header(incoming.scope, b"authorization"), admin_key)


def admin_only(handle: Handler, admin_key: str | None) -> Handler:
    """``handle`` behind the operator's key: a 401 in OpenAI's shape without it."""

    async def run(gateway: Gateway, incoming: Incoming) -> None:
        if not is_admin(incoming, admin_key):
            raise AuthenticationFailed(
                "this route needs the operator's key: send Authorization: Bearer <BYOK_ADMIN_KEY>",
                code="invalid_admin_key",
            )
        await handle(gateway, incoming)

    return run


async def _series(gateway: Gateway, incoming: Incoming, tenant_id: str | None) -> None:
    query = parse_series_query(incoming.query(), gateway.clock(), operator=tenant_id is None)
    await gateway.ledger.flush()  # a caller sees its own requests, even the last one
    rows = await ledger_store(gateway).usage_rows(
        tenant_id, since=query.since, until=query.until, limit=MAX_SERIES_ROWS
    )
    view = series_view(
        rows, since=query.since, until=query.until, bucket=query.bucket, group_by=query.group_by
    )
    view["truncated"] = len(rows) >= MAX_SERIES_ROWS
    await send_json(incoming.send, 200, view)


async def _requests(gateway: Gateway, incoming: Incoming, tenant_id: str | None) -> None:
    operator = tenant_id is None
    query = parse_request_filter(incoming.query(), operator=operator)
    await gateway.ledger.flush()
    try:
        rows, next_cursor = await ledger_store(gateway).list_requests(
            query.tenant_id if operator else tenant_id,
            since=query.since,
            until=query.until,
            status=query.status,
            provider=query.provider,
            model=query.model,
            limit=query.limit,
            cursor=query.cursor,
        )
    except ValueError:
        # The store refuses a cursor it did not make; nothing else here reaches it unchecked.
        raise InvalidRequest("'cursor' is not a cursor this API returned", param="cursor") from None
    if query.format == "csv":
        headers = {"content-disposition": 'attachment; filename="byok-requests.csv"'}
        if next_cursor:
            headers["x-byok-next-cursor"] = next_cursor
        body = requests_csv(rows, with_tenant=operator)
        await send_bytes(
            incoming.send, 200, body, content_type=b"text/csv; charset=utf-8", headers=headers
        )
        return
    data = [request_view(row, with_tenant=operator) for row in rows]
    await send_json(
        incoming.send, 200, {"object": "list", "data": data, "next_cursor": next_cursor}
    )


async def handle_series(gateway: Gateway, incoming: Incoming) -> None:
    """``GET /byok/usage/series``: the caller's ledger in time buckets."""
    await _series(gateway, incoming, incoming.tenant_id)


async def handle_requests(gateway: Gateway, incoming: Incoming) -> None:
    """``GET /byok/requests``: the caller's ledger rows, newest first, a page at a time."""
    await _requests(gateway, incoming, incoming.tenant_id)


async def handle_admin_series(gateway: Gateway, incoming: Incoming) -> None:
    """``GET /byok/admin/usage/series``: every tenant's ledger in time buckets (wrap in
    ``admin_only``)."""
    await _series(gateway, incoming, None)


async def handle_admin_requests(gateway: Gateway, incoming: Incoming) -> None:
    """``GET /byok/admin/requests``: every tenant's rows, or one's with ``tenant_id=`` (wrap in
    ``admin_only``)."""
    await _requests(gateway, incoming, None)

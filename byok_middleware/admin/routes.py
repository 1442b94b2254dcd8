"""``/byok/admin/...``: tenants, their gateway keys, their policies and the usage export.

Threat model: these routes act on every tenant, so they take one secret, ``BYOK_ADMIN_KEY``,
sent as ``Authorization: Bearer <key>`` and compared in constant time (SHA-256 digests, so
even the length is not leaked by timing). Without ``BYOK_ADMIN_KEY`` the routes are not
mounted at all. The admin key is not a gateway key (no stored hash matches it), so tenant
routes refuse it, and no admin answer ever contains a provider key: a new gateway key is shown
once, in the answer that created it.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime
from typing import Any

from byok_middleware.admin.policy import apply_update, parse_update, policy_view
from byok_middleware.admin.usage import export_rows, usage_csv
from byok_middleware.asgi import header, json_body, send_bytes, send_json
from byok_middleware.errors import AuthenticationFailed, BYOKError, InvalidRequest, NotFound
from byok_middleware.gateway import Gateway
from byok_middleware.gateway.tenants import hash_gateway_key, new_gateway_key
from byok_middleware.router import Incoming
from byok_middleware.shared import EVERY_TENANT
from byok_middleware.storage.base import ADMIN_GROUP_BY, AdminStore, GatewayKeyInfo, Tenant

__all__ = ["handle_admin", "is_admin"]

KEY_PREFIX_SHOWN = 12  # "byok_" and 7 characters: enough to tell keys apart in a listing


def is_admin(authorization: str | None, admin_key: str) -> bool:
    """Whether ``authorization`` is ``Bearer <admin_key>`` (constant time)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    given = hashlib.sha256(token.strip().encode()).digest()
    return hmac.compare_digest(given, hashlib.sha256(admin_key.encode()).digest())


def _admin_store(gateway: Gateway) -> AdminStore:
    store = gateway.store
    if not isinstance(store, AdminStore):
        raise BYOKError("the configured store does not offer the operator API", status_code=501)
    return store


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _tenant_view(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.id,
        "name": tenant.name,
        "created_at": _time(tenant.created_at),
        "revoked_at": _time(tenant.revoked_at),
        "status": "revoked" if tenant.revoked_at else "active",
    }


def _key_view(info: GatewayKeyInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "prefix": info.prefix,
        "created_at": _time(info.created_at),
        "last_used_at": _time(info.last_used_at),
        "status": info.status,
    }


def _parse_time(query: dict[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"'{name}' must be an ISO 8601 date or time (2025-06-01 or 2025-06-01T00:00:00Z)",
            param=name,
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def _tenants(gateway: Gateway, incoming: Incoming) -> None:
    store = _admin_store(gateway)
    if incoming.method == "GET":
        tenants = await store.list_tenants()
        await send_json(incoming.send, 200, {"data": [_tenant_view(t) for t in tenants]})
        return
    body = await json_body(incoming.receive, gateway.config.max_body_bytes)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InvalidRequest("'name' is required: a string of 1 to 200 characters", param="name")
    key = new_gateway_key()
    tenant = Tenant(id=uuid.uuid4().hex, name=name.strip(), created_at=gateway.clock())
    try:
        # KeyStore.create_tenant takes no prefix yet: the first key is listed without one.
        await store.create_tenant(tenant, hash_gateway_key(key))
    except ValueError:
        raise InvalidRequest(
            f"a tenant named {tenant.name!r} exists",
            param="name",
            code="tenant_exists",
            status_code=409,
        ) from None
    view = {"id": tenant.id, "name": tenant.name, "gateway_key": key}
    await send_json(incoming.send, 201, {**view, "created_at": _time(tenant.created_at)})


async def _tenant(gateway: Gateway, incoming: Incoming, tenant_id: str) -> None:
    store = _admin_store(gateway)
    tenant = await store.get_tenant(tenant_id)
    if incoming.method == "DELETE":
        if tenant is None or not await store.revoke_tenant_by_id(tenant_id, gateway.clock()):
            raise NotFound("no active tenant with this id")
        await gateway.bus.publish(EVERY_TENANT)  # every replica forgets its gateway keys
        await send_bytes(incoming.send, 204, b"")
        return
    policy = await store.get_policy(tenant_id)
    if tenant is None and policy is None:
        raise NotFound("no tenant with this id (and no policy for it)")
    standing = await gateway.spend.standing(tenant_id, policy)
    view = _tenant_view(tenant) if tenant is not None else {"id": tenant_id, "name": None}
    await send_json(
        incoming.send,
        200,
        {
            **view,
            "policy": policy_view(policy, tenant_id),
            "period": {
                "start": _time(standing.period_start),
                "resets_at": _time(standing.resets_at),
            },
            "spend_usd": float(standing.spent_usd),
            "platform_spend_usd": float(standing.platform_spent_usd),
            "reserved_usd": float(standing.reserved_usd),
        },
    )


async def _gateway_keys(gateway: Gateway, incoming: Incoming, tenant_id: str) -> None:
    store = _admin_store(gateway)
    tenant = await store.get_tenant(tenant_id)
    if tenant is None:
        raise NotFound("no tenant with this id")
    if incoming.method == "GET":
        keys = await store.list_gateway_keys(tenant_id)
        await send_json(incoming.send, 200, {"data": [_key_view(k) for k in keys]})
        return
    if tenant.revoked_at is not None:
        raise InvalidRequest("the tenant is revoked", code="tenant_revoked", status_code=409)
    key = new_gateway_key()
    info = await store.add_gateway_key(
        tenant_id, hash_gateway_key(key), gateway.clock(), prefix=key[:KEY_PREFIX_SHOWN]
    )
    await send_json(
        incoming.send,
        201,
        {"id": info.id, "gateway_key": key, "created_at": _time(info.created_at)},
    )


async def _gateway_key(gateway: Gateway, incoming: Incoming, tenant_id: str, key_id: str) -> None:
    store = _admin_store(gateway)
    if not await store.revoke_gateway_key(tenant_id, key_id, gateway.clock()):
        raise NotFound("no active gateway key with this id for this tenant")
    await gateway.bus.publish(EVERY_TENANT)  # effective at once here and on every replica
    await send_bytes(incoming.send, 204, b"")


async def _policy(gateway: Gateway, incoming: Incoming, tenant_id: str) -> None:
    store = _admin_store(gateway)
    current = await store.get_policy(tenant_id)
    if incoming.method == "PUT":
        body = await json_body(incoming.receive, gateway.config.max_body_bytes)
        update, named = parse_update(body)
        current = apply_update(current, tenant_id, update, named, gateway.clock())
        await store.put_policy(current)
        await gateway.bus.publish(tenant_id)  # every replica drops its cached copy
    await send_json(incoming.send, 200, policy_view(current, tenant_id))


async def _usage(gateway: Gateway, incoming: Incoming) -> None:
    store = _admin_store(gateway)
    query = incoming.query()
    group_by = [g.strip() for g in query.get("group_by", "").split(",") if g.strip()]
    unknown = [g for g in group_by if g not in ADMIN_GROUP_BY]
    if unknown or len(set(group_by)) != len(group_by):
        raise InvalidRequest(
            f"group_by takes distinct names among {', '.join(ADMIN_GROUP_BY)}", param="group_by"
        )
    form = query.get("format", "json")
    if form not in ("json", "csv"):
        raise InvalidRequest("format must be json or csv", param="format")
    since, until = _parse_time(query, "since"), _parse_time(query, "until")
    await gateway.ledger.flush()  # this replica's queued rows count too
    rows = await store.admin_usage(since=since, until=until, group_by=group_by)
    if form == "csv":
        await send_bytes(
            incoming.send,
            200,
            usage_csv(rows, group_by).encode(),
            content_type=b"text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="usage.csv"'},
        )
        return
    await send_json(incoming.send, 200, {"data": export_rows(rows, group_by)})


_METHODS: dict[str, tuple[str, ...]] = {
    "tenants": ("GET", "POST"),
    "tenant": ("GET", "DELETE"),
    "gateway-keys": ("GET", "POST"),
    "gateway-key": ("DELETE",),
    "policy": ("GET", "PUT"),
    "usage": ("GET",),
}


def _resolve(rest: str) -> tuple[str, list[str]] | None:
    """Which admin route ``rest`` (the path after ``/byok/admin/``) is, and its ids."""
    parts = rest.strip("/").split("/")
    if parts == ["usage"]:
        return "usage", []
    if not parts or parts[0] != "tenants" or any(not p for p in parts):
        return None
    shapes = {1: "tenants", 2: "tenant"}
    if len(parts) in shapes:
        return shapes[len(parts)], parts[1:]
    if len(parts) == 3 and parts[2] in ("policy", "gateway-keys"):
        return parts[2], parts[1:2]
    if len(parts) == 4 and parts[2] == "gateway-keys":
        return "gateway-key", [parts[1], parts[3]]
    return None


async def handle_admin(gateway: Gateway, incoming: Incoming) -> None:
    """Answer one admin request (``incoming.params["id"]``: the path below ``/byok/admin/``)."""
    admin_key = gateway.config.admin_key
    if not admin_key:
        raise NotFound("not found")  # not mounted without BYOK_ADMIN_KEY; defence in depth
    if not is_admin(header(incoming.scope, b"authorization"), admin_key):
        raise AuthenticationFailed(
            "the operator API needs Authorization: Bearer <BYOK_ADMIN_KEY>",
            code="invalid_admin_key",
        )
    found = _resolve(incoming.params.get("id", ""))
    if found is None:
        raise NotFound("no such admin route")
    name, ids = found
    if incoming.method not in _METHODS[name]:
        raise InvalidRequest(
            f"method {incoming.method} is not allowed here; use {' or '.join(_METHODS[name])}",
            code="method_not_allowed",
            status_code=405,
        )
    if name == "tenants":
        await _tenants(gateway, incoming)
    elif name == "tenant":
        await _tenant(gateway, incoming, ids[0])
    elif name == "gateway-keys":
        await _gateway_keys(gateway, incoming, ids[0])
    elif name == "gateway-key":
        await _gateway_key(gateway, incoming, ids[0], ids[1])
    elif name == "policy":
        await _policy(gateway, incoming, ids[0])
    else:
        await _usage(gateway, incoming)

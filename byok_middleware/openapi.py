"""The OpenAPI 3.1 document of the management API, generated from its pydantic schemas.

Served at ``{prefix}/byok/openapi.json`` without authentication: it describes routes and shapes
that are public in the package anyway and holds no tenant data, and client generators and
schema-driven test tools need it before they hold a key. The routes it describes all require the
gateway key (``bearerAuth``). The proxy routes follow OpenAI's own published specification and
are not repeated here; the dashboard page and this document are not JSON APIs. Every other
``/byok/...`` route of the router is here (``tests/test_first_hour.py`` compares the two).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from byok_middleware.admin.policy import PolicyUpdate
from byok_middleware.asgi import Send, dumps, send_bytes
from byok_middleware.keys.schemas import (
    ErrorBody,
    KeyCreate,
    KeyList,
    KeyUpdate,
    KeyView,
    UsageView,
)
from byok_middleware.storage.base import GROUP_BY

__all__ = ["build_openapi", "handle_openapi"]

_REF = "#/components/schemas/{model}"
_MODELS: tuple[tuple[type[BaseModel], Literal["validation", "serialization"]], ...] = (
    (KeyCreate, "validation"),
    (KeyUpdate, "validation"),
    (KeyView, "serialization"),
    (KeyList, "serialization"),
    (UsageView, "serialization"),
    (ErrorBody, "serialization"),
)
_ERRORS = {
    "400": "Malformed JSON, a body that is not an object, or nothing to update",
    "401": "Missing or invalid gateway API key (the same answer whatever the reason)",
    "409": "The request was scored already",
    "413": "The body exceeds the configured limit",
    "422": "A field failed validation; `param` names it",
    "431": "The request headers are too large",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _errors(*statuses: str) -> dict[str, Any]:
    return {status: _json("ErrorBody", _ERRORS.get(status, "Not found")) for status in statuses}


def _operation(
    summary: str,
    responses: dict[str, Any],
    *,
    body: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    if parameters:
        operation["parameters"] = parameters
    return operation


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_USAGE_QUERY = [
    {"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}},
    {"name": "until", "in": "query", "schema": {"type": "string", "format": "date-time"}},
    {"name": "group_by", "in": "query", "schema": {"type": "string", "enum": list(GROUP_BY)}},
]


_PRICE = {
    "type": ["number", "null"],
    "description": "The provider's list price in USD of a reference call of 1,000,000 input "
    "plus 1,000,000 output tokens (for comparing providers); null where no price is known",
}
_ROUTE_VIEW = {
    "type": "object",
    "description": "For a named model: the providers that serve it, the key that would serve "
    "the call now and the verdict on each of the caller's keys; for model=auto, the auto "
    "router's scored candidates instead",
    "properties": {
        "object": {"type": "string"},
        "model": {"type": "string"},
        "providers": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "provider": {"type": "string"},
                    "model": {"type": "string"},
                    "reference_price_usd": _PRICE,
                },
            },
        },
        "would_use": {"type": ["object", "null"]},
        "candidates": {"type": "array", "items": {"type": "object"}},
        "keys": {"type": "array", "items": {"type": "object"}},
        "platform_fallback": {"type": "object"},
        "error": {"type": "object", "description": "Why no key would serve the call now"},
    },
}
_ROUTE_QUERY = [
    {
        "name": "model",
        "in": "query",
        "description": "provider/model, a bare model name, or auto (auto:cheap, auto:best)",
        "schema": {"type": "string"},
    },
    {
        "name": "cost_weight",
        "in": "query",
        "description": "For model=auto: 0 (quality only) to 1 (cost only)",
        "schema": {"type": "number", "minimum": 0, "maximum": 1},
    },
]
_FEEDBACK = {
    "type": "object",
    "required": ["request_id", "score"],
    "properties": {
        "request_id": {"type": "string", "description": "x-byok-request-id of an auto call"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
    },
}
_FEEDBACK_VIEW = {
    "type": "object",
    "properties": {
        "object": {"const": "byok.feedback"},
        "request_id": {"type": "string"},
        "model": {"type": "string"},
        "score": {"type": "number"},
    },
}


def _inline(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema}


_TIME = {"type": "string", "format": "date-time"}
_OBJECT = {"type": "object"}
_WEBHOOK_EVENTS = [
    "key.invalid",
    "key.cooling_down",
    "key.recovered",
    "platform_fallback.used",
    "budget.threshold",
]
_WEBHOOK_PUT = {
    "type": "object",
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "description": "https:// URL the signed events are POSTed to"},
        "events": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "enum": _WEBHOOK_EVENTS},
        },
        "secret": {"type": "string", "minLength": 16, "maxLength": 256},
    },
}


def _mission_paths() -> dict[str, Any]:
    """Mission Control's data and alert routes (README "Mission Control and telemetry")."""
    series = [
        _query("since", _TIME),
        _query("until", _TIME),
        _query("bucket", {"type": "string", "enum": ["hour", "day"]}),
        _query("group_by", {"type": "string", "enum": ["attribution", "provider", "model", "key"]}),
    ]
    requests = [
        _query("since", _TIME),
        _query("until", _TIME),
        _query("status", {"type": "integer", "minimum": 100, "maximum": 599}),
        _query("provider", {"type": "string"}),
        _query("model", {"type": "string"}),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
        _query("cursor", {"type": "string"}),
    ]
    return {
        "/byok/usage/series": {
            "get": _operation(
                "The caller's ledger in time buckets (requests, tokens, cost, errors, latency)",
                {"200": _inline(_OBJECT, "Buckets over [since, until)"), **_errors("400", "401")},
                parameters=series,
            ),
        },
        "/byok/requests": {
            "get": _operation(
                "The caller's ledger rows, newest first, a page at a time (never prompt text)",
                {
                    "200": _inline(_OBJECT, '{"data": [...], "next_cursor": ...}'),
                    **_errors("400", "401"),
                },
                parameters=requests,
            ),
        },
        "/byok/webhooks": {
            "get": _operation(
                "The caller's alert webhook (never its secret)",
                {"200": _inline(_OBJECT, "The webhook"), **_errors("401", "404")},
            ),
            "put": {
                **_operation(
                    "Set the caller's alert webhook (a generated secret is shown once)",
                    {"200": _inline(_OBJECT, "The webhook"), **_errors("400", "401", "413")},
                ),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _WEBHOOK_PUT}},
                },
            },
            "delete": _operation(
                "Remove the caller's alert webhook",
                {"204": {"description": "Removed"}, **_errors("401", "404")},
            ),
        },
        "/byok/webhooks/deliveries": {
            "get": _operation(
                "The caller's webhook deliveries, newest first",
                {"200": _inline(_OBJECT, '{"data": [...]}'), **_errors("400", "401")},
                parameters=[_query("limit", {"type": "integer", "minimum": 1, "maximum": 500})],
            ),
        },
    }


def _management_extras() -> dict[str, Any]:
    """The routes whose shapes are plain dicts rather than pydantic models."""
    route = {
        "200": _inline(_ROUTE_VIEW, "The plan; nothing is called upstream"),
        **_errors("400", "401"),
    }
    return {
        "/byok/providers/{id}/verify": {
            "post": _operation(
                "Check a key with a cheap upstream call (list models) and update its status",
                {"200": _json("KeyView", "The key, its status updated"), **_errors("401", "404")},
                parameters=[_ID],
            ),
        },
        "/byok/route": {
            "get": _operation(
                "Dry run: which key would serve a model now, and why",
                route,
                parameters=_ROUTE_QUERY,
            ),
            "post": {
                **_operation(
                    "Dry run for model=auto with a sample request body",
                    route,
                    parameters=_ROUTE_QUERY,
                ),
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
            },
        },
        **_mission_paths(),
        "/byok/cache": {
            "delete": _operation(
                "Remove every response-cache entry of the caller's tenant",
                {"204": {"description": "Removed (also when the cache is off)"}, **_errors("401")},
            ),
        },
        "/byok/feedback": {
            "post": {
                **_operation(
                    "Score a request that model=auto routed (the router learns from it)",
                    {
                        "200": _inline(_FEEDBACK_VIEW, "The score, recorded"),
                        **_errors("400", "401", "404", "409"),
                    },
                ),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _FEEDBACK}},
                },
            },
        },
    }


def build_openapi(prefix: str = "/v1") -> dict[str, Any]:
    """The document; ``servers`` is the gateway's prefix, so paths read as in DESIGN.md §3."""
    _, definitions = models_json_schema(list(_MODELS), ref_template=_REF)
    update = _operation(
        "Change or rotate a key",
        {"200": _json("KeyView", "The updated key"), **_errors("400", "401", "404", "413", "422")},
        body="KeyUpdate",
        parameters=[_ID],
    )
    paths = {
        "/byok/providers": {
            "get": _operation(
                "List the caller's provider keys",
                {"200": _json("KeyList", "Keys by provider, then priority"), **_errors("401")},
            ),
            "post": _operation(
                "Register a provider key",
                {
                    "201": _json("KeyView", "The stored key (never the key itself)"),
                    **_errors("400", "401", "413", "422"),
                },
                body="KeyCreate",
            ),
        },
        "/byok/providers/{id}": {
            "get": _operation(
                "One of the caller's keys",
                {"200": _json("KeyView", "The key"), **_errors("401", "404")},
                parameters=[_ID],
            ),
            "put": update,
            "patch": update,
            "delete": _operation(
                "Delete a key",
                {"204": {"description": "Deleted"}, **_errors("401", "404")},
                parameters=[_ID],
            ),
        },
        "/byok/usage": {
            "get": _operation(
                "Ledger totals of the caller's tenant",
                {"200": _json("UsageView", "Totals over [since, until)"), **_errors("400", "401")},
                parameters=_USAGE_QUERY,
            ),
        },
    }
    paths.update(_management_extras())
    for item in paths.values():
        for operation in item.values():
            operation["responses"].update(_errors("431"))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "byok_middleware management API",
            "version": "1",
            "description": "Each tenant manages its own provider keys and reads its own usage.",
        },
        "servers": [{"url": prefix or "/"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A gateway API key, byok_... (`python -m byok_middleware "
                    "tenant create NAME`)",
                }
            },
        },
    }


_TENANT_ID = {"name": "tenant_id", "in": "path", "required": True, "schema": {"type": "string"}}
_KEY_ID = {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}
_ADMIN: list[dict[str, list[str]]] = [{"adminKey": []}]


def _admin(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    operation = _operation(summary, {**responses, **_errors("401")}, **extra)
    operation["security"] = _ADMIN
    return operation


def _admin_paths() -> dict[str, Any]:
    """The operator API (README "Controlling spend"): only with ``BYOK_ADMIN_KEY`` set."""
    tenant = _inline(_OBJECT, "The tenant, its policy and this period's spend")
    created = _inline(_OBJECT, "The new tenant or key; its gateway key is shown this once")
    listing = _inline(_OBJECT, '{"data": [...]}')
    policy = {"$ref": _REF.format(model="PolicyUpdate")}
    return {
        "/byok/admin/tenants": {
            "get": _admin("Every tenant", {"200": listing}),
            "post": {
                **_admin("Create a tenant and its first gateway key", {"201": created}),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string", "minLength": 1}},
                            }
                        }
                    },
                },
            },
        },
        "/byok/admin/tenants/{tenant_id}": {
            "get": _admin("One tenant", {"200": tenant, **_errors("404")}, parameters=[_TENANT_ID]),
            "delete": _admin(
                "Revoke a tenant",
                {"204": {"description": "Revoked"}, **_errors("404")},
                parameters=[_TENANT_ID],
            ),
        },
        "/byok/admin/tenants/{tenant_id}/gateway-keys": {
            "get": _admin("A tenant's gateway keys", {"200": listing}, parameters=[_TENANT_ID]),
            "post": _admin(
                "Issue another gateway key (the old ones keep working)",
                {"201": created, **_errors("404")},
                parameters=[_TENANT_ID],
            ),
        },
        "/byok/admin/tenants/{tenant_id}/gateway-keys/{key_id}": {
            "delete": _admin(
                "Revoke one gateway key, on every replica",
                {"204": {"description": "Revoked"}, **_errors("404")},
                parameters=[_TENANT_ID, _KEY_ID],
            ),
        },
        "/byok/admin/tenants/{tenant_id}/policy": {
            "get": _admin(
                "A tenant's policy",
                {"200": _inline(policy, "The policy")},
                parameters=[_TENANT_ID],
            ),
            "put": {
                **_admin(
                    "Change the fields of a tenant's policy it names (null clears a limit)",
                    {"200": _inline(policy, "The policy"), **_errors("400", "422")},
                    parameters=[_TENANT_ID],
                ),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": policy}},
                },
            },
        },
        "/byok/admin/usage": {
            "get": _admin(
                "Totals across tenants, as JSON or CSV (what platform-paid usage is billed from)",
                {
                    "200": {
                        "description": "One row per group",
                        "content": {"application/json": {"schema": _OBJECT}, "text/csv": {}},
                    },
                    **_errors("400"),
                },
                parameters=[
                    _query("since", _TIME),
                    _query("until", _TIME),
                    _query(
                        "group_by",
                        {
                            "type": "string",
                            "description": "comma-separated: "
                            "tenant, attribution, provider, model, day",
                        },
                    ),
                    _query("format", {"type": "string", "enum": ["json", "csv"]}),
                ],
            ),
        },
        "/byok/admin/usage/series": {
            "get": _admin("Every tenant's ledger in time buckets", {"200": listing}),
        },
        "/byok/admin/requests": {
            "get": _admin("Every tenant's ledger rows, newest first", {"200": listing}),
        },
    }


def build_admin_openapi(prefix: str = "/v1") -> dict[str, Any]:
    """The document with the operator API added (served when ``BYOK_ADMIN_KEY`` is set)."""
    document = build_openapi(prefix)
    _, definitions = models_json_schema([(PolicyUpdate, "validation")], ref_template=_REF)
    document["components"]["schemas"].update(definitions["$defs"])
    document["paths"].update(_admin_paths())
    document["components"]["securitySchemes"]["adminKey"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "The operator's BYOK_ADMIN_KEY; never a tenant's gateway key",
    }
    return document


@lru_cache(maxsize=8)
def _document(prefix: str, admin: bool) -> bytes:
    return dumps(build_admin_openapi(prefix) if admin else build_openapi(prefix))


async def handle_openapi(prefix: str, send: Send, *, admin: bool = False) -> None:
    """Send the document (built once per prefix); with ``admin``, the operator API too."""
    await send_bytes(send, 200, _document(prefix, admin))

"""The OpenAPI 3.1 document of the management API, generated from its pydantic schemas.

Served at ``{prefix}/byok/openapi.json`` without authentication: it describes routes and shapes
that are public in the package anyway and holds no tenant data, and client generators and
schema-driven test tools need it before they hold a key. The routes it describes all require the
gateway key (``bearerAuth``). The proxy routes follow OpenAI's own published specification and
are not repeated here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

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


@lru_cache(maxsize=8)
def _document(prefix: str) -> bytes:
    return dumps(build_openapi(prefix))


async def handle_openapi(prefix: str, send: Send) -> None:
    """Send the document (built once per prefix)."""
    await send_bytes(send, 200, _document(prefix))

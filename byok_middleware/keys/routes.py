"""The management API: ``/byok/providers`` CRUD and ``/byok/usage`` (the caller's tenant only)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from byok_middleware.asgi import Receive, Send, json_body, send_bytes, send_json
from byok_middleware.errors import InvalidRequest, NotFound, UnprocessableEntity
from byok_middleware.gateway import Gateway
from byok_middleware.gateway.keys import KeyPatch, NewKey
from byok_middleware.keys.schemas import KeyCreate, KeyUpdate, key_view
from byok_middleware.storage.base import GROUP_BY, UsageTotal

__all__ = ["handle_providers", "handle_usage"]

_PROVIDER_ALLOWED = "openai, anthropic, groq, deepseek, nvidia, google"


def _validation_error(exc: ValidationError) -> UnprocessableEntity:
    # Messages come from the schema (field names and rules), never echo the input values.
    first = exc.errors(include_input=False, include_url=False)[0]
    param = ".".join(str(p) for p in first.get("loc", ())) or None
    message = str(first.get("msg", "invalid value"))
    if param == "provider":
        message = f"provider must be one of: {_PROVIDER_ALLOWED}"
    return UnprocessableEntity(
        f"{param}: {message}" if param else message, param=param, code="invalid_value"
    )


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], body: dict[str, Any]) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc) from None


async def handle_providers(
    gateway: Gateway,
    tenant_id: str,
    method: str,
    key_id: str | None,
    receive: Receive,
    send: Send,
) -> None:
    keys = gateway.keys
    limit = gateway.config.max_body_bytes
    now = gateway.clock()
    if method == "GET":
        await gateway.health.flush()  # last_used_at is written off the request path
    if key_id is None:
        if method == "GET":
            records = await keys.list_keys(tenant_id)
            broken = await keys.unopenable(tenant_id)
            data = [_reported(key_view(r, now=now), broken) for r in records]
            await send_json(send, 200, {"object": "list", "data": data})
            return
        body = _parse(KeyCreate, await json_body(receive, limit))
        record = await keys.create(tenant_id, NewKey(**body.model_dump()))
        await send_json(send, 201, key_view(record, now=now))
        return
    if len(key_id) > 128 or not key_id.isascii() or not key_id.isprintable():
        # Ids are ours (key_ + hex): a control character (NUL is a 500 on PostgreSQL, %0a
        # forges log lines) can name no key, whatever the store.
        raise NotFound("no provider key with that id")
    if method == "GET":
        view = key_view(await keys.get(tenant_id, key_id), now=now)
        await send_json(send, 200, _reported(view, await keys.unopenable(tenant_id)))
    elif method == "PUT" or method == "PATCH":
        body_update = _parse(KeyUpdate, await json_body(receive, limit))
        if not body_update.model_fields_set:
            raise InvalidRequest("nothing to update: send at least one field")
        fields = {name: getattr(body_update, name) for name in body_update.model_fields_set}
        patch = KeyPatch(api_key=fields.pop("api_key", None), fields=fields)
        updated = await keys.update(tenant_id, key_id, patch)
        await send_json(send, 200, key_view(updated, now=now))
    else:  # DELETE
        await keys.delete(tenant_id, key_id)
        await send_bytes(send, 204, b"", content_type=b"application/json")


def _reported(view: dict[str, Any], unopenable: dict[str, str]) -> dict[str, Any]:
    """A key this server cannot decrypt says so in ``last_error`` (with the master-key id)."""
    reason = unopenable.get(view["id"])
    if reason is not None:
        view["last_error"] = f"cannot be opened on this server: {reason}"
    return view


def _parse_time(params: dict[str, str], name: str) -> datetime | None:
    value = params.get(name)
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        # Normalised here: an offset that pushes the time past year 1..9999 overflows.
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest(f"'{name}' must be an ISO-8601 date or time", param=name) from None


def _total_view(total: UsageTotal) -> dict[str, Any]:
    return {
        "group": total.group,
        "requests": total.requests,
        "prompt_tokens": total.prompt_tokens,
        "completion_tokens": total.completion_tokens,
        "cost_usd": float(total.cost_usd),
        "unpriced_requests": total.unpriced_requests,
        "cache_hits": total.cache_hits,
        "saved_usd": float(total.saved_usd),
    }


async def handle_usage(
    gateway: Gateway, tenant_id: str, params: dict[str, str], send: Send
) -> None:
    group_by = params.get("group_by") or None
    if group_by is not None and group_by not in GROUP_BY:
        raise InvalidRequest(f"'group_by' must be one of: {', '.join(GROUP_BY)}", param="group_by")
    since, until = _parse_time(params, "since"), _parse_time(params, "until")
    await gateway.ledger.flush()  # a caller sees its own requests, even the last one
    overall = await gateway.store.usage_totals(tenant_id, since=since, until=until)
    totals = (
        await gateway.store.usage_totals(tenant_id, since=since, until=until, group_by=group_by)
        if group_by
        else []
    )
    await send_json(
        send,
        200,
        {
            "object": "byok.usage",
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "group_by": group_by,
            "total": _total_view(overall[0]) if overall else None,
            "data": [_total_view(t) for t in totals],
        },
    )

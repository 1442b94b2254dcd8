"""``POST /byok/providers/{id}/verify``: ask the provider whether a key works (list models)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx

from byok_middleware.errors import BYOKError, NotFound, UpstreamUnavailable
from byok_middleware.gateway import Gateway
from byok_middleware.gateway.health import (
    Outcome,
    classify,
    cooldown_seconds,
    describe_failure,
    retry_after_seconds,
)
from byok_middleware.gateway.transport import UpstreamResponse
from byok_middleware.gateway.upstream import auth_headers, normalize_error
from byok_middleware.redaction import Redactor
from byok_middleware.storage.base import KeyStatus, ProviderKeyRecord

__all__ = ["VERIFY_TIMEOUT", "verify_key"]

VERIFY_TIMEOUT = 15.0


def _is_json_object(response: UpstreamResponse, content: bytes) -> bool:
    """A JSON content type and a body that parses as a JSON object (the models list)."""
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        return False
    try:
        return isinstance(json.loads(content), dict)
    except ValueError:
        return False


async def verify_key(gateway: Gateway, tenant_id: str, key_id: str) -> ProviderKeyRecord:
    """Call ``GET /models`` with the key and record the verdict: ``active`` (or ``inactive`` if
    switched off) on 2xx, ``invalid`` on 401/403, ``cooling_down`` on 429.

    Raises ``NotFound`` for another tenant's id, ``UpstreamUnavailable`` when the provider gave
    no verdict (timeout, 5xx; the status is left alone, ``last_error`` notes it).
    """
    if not key_id.isascii() or not key_id.isprintable():
        raise NotFound("no provider key with that id")  # as in keys/routes.py
    record = await gateway.keys.get(tenant_id, key_id)
    resolved = next(
        (
            k
            for k in await gateway.keys.keys_for(tenant_id, record.provider)
            if k.record.id == key_id
        ),
        None,
    )
    if resolved is None or resolved.unopenable is not None:
        why = resolved.unopenable if resolved is not None else "not found in the cache"
        raise BYOKError(
            f"this key cannot be opened on this server ({why}); the operator must add the "
            "missing master key, or register the key again",
            code="key_unopenable",
            status_code=503,
        )
    provider = record.provider
    url = gateway.upstreams.url(provider, "/models")
    now = gateway.clock()
    changes: dict[str, Any]
    try:
        response = await gateway.client.send(
            "GET",
            url,
            headers=auth_headers(provider, resolved.secret),
            time_limit=min(VERIFY_TIMEOUT, gateway.config.upstream_timeout),
        )
        try:
            content = await response.aread()
        finally:
            await response.aclose()
    except httpx.HTTPError:
        await gateway.keys.set_health(
            record, last_error=describe_failure("timeout or connection error", provider, now)
        )
        raise UpstreamUnavailable(
            f"{provider} could not be reached to verify the key; its status is unchanged"
        ) from None
    if 200 <= response.status_code < 300 and not _is_json_object(response, content):
        # A captive portal, a proxy's HTML page or a redirect is no verdict on the key.
        await gateway.keys.set_health(
            record, last_error=describe_failure("malformed answer", provider, now) + " (verify)"
        )
        raise UpstreamUnavailable(
            f"{provider} answered the check with something other than JSON; "
            "the key's status is unchanged"
        )
    if 200 <= response.status_code < 300:
        status = KeyStatus.ACTIVE if record.is_active else KeyStatus.INACTIVE
        changes = {"status": status, "last_error": None, "cooldown_until": None}
    else:
        error = normalize_error(
            provider,
            response.status_code,
            content,
            redactor=Redactor([resolved.secret.reveal()]),
            attribution="byok",
        )
        outcome = classify(error.status_code)
        what = describe_failure(str(response.status_code), provider, now) + " (verify)"
        if outcome is Outcome.KEY_REJECTED:
            changes = {"status": KeyStatus.INVALID, "last_error": what, "cooldown_until": None}
        elif outcome is Outcome.RATE_LIMITED:
            wait = retry_after_seconds(response.headers, content, now)
            until = now + timedelta(seconds=cooldown_seconds(wait, 1))
            changes = {
                "status": KeyStatus.COOLING_DOWN,
                "last_error": what,
                "cooldown_until": until,
            }
        else:  # 3xx, other 4xx, 5xx: no verdict
            await gateway.keys.set_health(record, last_error=what)
            raise UpstreamUnavailable(
                f"{provider} answered HTTP {response.status_code} to the check; "
                "the key's status is unchanged"
            )
    if not record.is_active:
        changes["status"] = KeyStatus.INACTIVE  # a switched-off key stays off, verdict or not
    await gateway.keys.set_health(record, **changes)
    return await gateway.keys.get(tenant_id, key_id)

"""``POST /byok/providers/{id}/verify``: ask the provider whether a key works (list models)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from byok_middleware.errors import InvalidRequest, UpstreamUnavailable
from byok_middleware.gateway import Gateway
from byok_middleware.gateway.health import (
    Outcome,
    classify,
    cooldown_seconds,
    describe_failure,
    retry_after_seconds,
)
from byok_middleware.gateway.upstream import auth_headers, normalize_error
from byok_middleware.redaction import Redactor
from byok_middleware.storage.base import KeyStatus, ProviderKeyRecord

__all__ = ["VERIFY_TIMEOUT", "verify_key"]

VERIFY_TIMEOUT = 15.0


async def verify_key(gateway: Gateway, tenant_id: str, key_id: str) -> ProviderKeyRecord:
    """Call ``GET /models`` with the key and record the verdict: ``active`` (or ``inactive`` if
    switched off) on 2xx, ``invalid`` on 401/403, ``cooling_down`` on 429.

    Raises ``NotFound`` for another tenant's id, ``UpstreamUnavailable`` when the provider gave
    no verdict (timeout, 5xx; the status is left alone, ``last_error`` notes it).
    """
    record = await gateway.keys.get(tenant_id, key_id)
    resolved = next(
        (
            k
            for k in await gateway.keys.keys_for(tenant_id, record.provider)
            if k.record.id == key_id
        ),
        None,
    )
    if resolved is None:
        raise InvalidRequest("this key cannot be decrypted; register it again", code="key_unusable")
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
    if response.status_code < 400:
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
        else:
            await gateway.keys.set_health(record, last_error=what)
            raise UpstreamUnavailable(
                f"{provider} answered HTTP {response.status_code} to the check; "
                "the key's status is unchanged"
            )
    if not record.is_active:
        changes["status"] = KeyStatus.INACTIVE  # a switched-off key stays off, verdict or not
    await gateway.keys.set_health(record, **changes)
    return await gateway.keys.get(tenant_id, key_id)

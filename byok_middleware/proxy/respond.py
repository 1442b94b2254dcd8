"""Answering a proxied call: read the upstream JSON, meter it, add the metadata, send it."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import httpx

from byok_middleware.asgi import Send, dumps, loads, send_bytes
from byok_middleware.errors import UpstreamUnavailable
from byok_middleware.gateway import Call, Forwarded, Gateway
from byok_middleware.pricing import Usage
from byok_middleware.proxy.metadata import CallMetadata

__all__ = ["call_metadata", "passthrough_headers", "read_json", "send_metered"]


class _Priced:
    """Sentinel: price the usage (``None`` is a real answer, 'no price known')."""


_PRICED = _Priced()

_PASSTHROUGH = ("x-ratelimit-", "retry-after", "openai-processing-ms", "x-request-id")


def passthrough_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """Upstream headers that help clients back off (rate limits), never hop-by-hop ones."""
    return [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in headers.items()
        if k.startswith(_PASSTHROUGH)
    ]


def call_metadata(call: Call, forwarded: Forwarded) -> CallMetadata:
    """The metadata of a call served by ``forwarded.candidate`` (cost filled in later)."""
    candidate = forwarded.candidate
    return CallMetadata(
        call.request_id,
        candidate.attribution,
        call.provider,
        call.model,
        candidate.key_id,
        call.attempts,
    )


async def read_json(forwarded: Forwarded) -> tuple[bytes, Any]:
    """The whole upstream body and its JSON (None when it is not JSON); closes the response."""
    response = forwarded.response
    try:
        raw = await response.aread()
    except httpx.HTTPError:
        # A 502 the caller records like any failed call, not an internal error.
        provider = forwarded.candidate.provider
        raise UpstreamUnavailable(f"{provider} ended its answer before it was complete") from None
    finally:
        await response.aclose()
    try:
        return raw, loads(raw)
    except ValueError:
        return raw, None


def _splice(raw: bytes, field: str, value: dict[str, Any]) -> bytes | None:
    """``raw`` (a JSON object) with ``"field": value`` added as its last member, or None."""
    end = raw.rfind(b"}")
    if end < 0 or raw[end + 1 :].strip():
        return None
    head = raw[:end].rstrip()
    separator = b'"' if head.endswith(b"{") else b',"'
    return b"".join((head, separator, field.encode(), b'":', dumps(value), b"}"))


async def send_metered(
    gateway: Gateway,
    call: Call,
    forwarded: Forwarded,
    send: Send,
    *,
    raw: bytes,
    data: Any,
    usage: Usage | None,
    cost: Decimal | _Priced | None = _PRICED,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    data_is_raw: bool = False,
) -> None:
    """Record the ledger row and send the upstream answer with the metadata.

    ``cost`` defaults to the list price of ``usage``; pass one only to override it.

    A JSON object (``data``) gets the metadata object under ``config.metadata_field``; any other
    body (plain-text transcripts) is sent byte for byte with the upstream content type and
    carries the metadata in the ``x-byok-*`` headers only. ``extra_headers`` replace the default
    pass-through of upstream rate-limit headers (Anthropic's are translated). ``data_is_raw``
    says ``data`` is ``raw`` parsed and unchanged, so the metadata can be spliced onto the bytes
    instead of serialising the whole answer again.
    """
    now = gateway.clock()  # one reading prices the call and dates its ledger row
    if isinstance(cost, _Priced):
        cost = gateway.cost(call, usage, when=now)
    response = forwarded.response
    meta = call_metadata(call, forwarded)
    meta.cost_usd = cost
    gateway.record(
        call,
        candidate=forwarded.candidate,
        usage=usage,
        cost=cost,
        status_code=response.status_code,
        when=now,
    )
    if isinstance(data, dict):
        field = gateway.config.metadata_field
        spliced = _splice(raw, field, meta.as_dict()) if data_is_raw and field not in data else None
        if spliced is None:
            data[field] = meta.as_dict()
            spliced = dumps(data)
        raw = spliced
    if extra_headers is None:
        extra_headers = passthrough_headers(response.headers)
    content_type = response.headers.get("content-type", "application/json")
    await send_bytes(
        send,
        response.status_code,
        raw,
        content_type=content_type.encode("latin-1"),
        extra_raw=meta.headers(with_cost=True) + extra_headers,
    )

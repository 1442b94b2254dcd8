"""``POST /chat/completions``: route, forward with failover, meter, and answer with metadata."""

from __future__ import annotations

import json
from typing import Any

from byok_middleware.asgi import Receive, Send, dumps, send_bytes
from byok_middleware.errors import InvalidRequest
from byok_middleware.gateway import Call, Forwarded, Gateway
from byok_middleware.pricing import Usage, usage_from_openai
from byok_middleware.providers.specs import PROVIDERS, WireFormat
from byok_middleware.proxy.metadata import CallMetadata
from byok_middleware.proxy.stream import relay_openai_stream
from byok_middleware.proxy.upstream import Candidate

__all__ = ["handle_chat"]

JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}


def _upstream_body(body: dict[str, Any], model: str, *, stream: bool) -> bytes:
    upstream = dict(body)
    upstream["model"] = model
    if stream:
        # The gateway always meters streams, so it always asks for the usage chunk.
        options = body.get("stream_options")
        upstream["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    return dumps(upstream)


def _client_wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _validate(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")


async def handle_chat(
    gateway: Gateway, call: Call, body: dict[str, Any], receive: Receive, send: Send
) -> None:
    gateway.route_model(call, body.get("model"))
    _validate(body)
    stream = body.get("stream") is True
    if PROVIDERS[call.provider].wire is WireFormat.ANTHROPIC:
        from byok_middleware.proxy.anthropic_chat import handle_anthropic_chat

        await handle_anthropic_chat(gateway, call, body, receive, send)
        return

    payload = _upstream_body(body, call.model, stream=stream)

    def build(candidate: Candidate) -> tuple[bytes, dict[str, str]]:
        return payload, dict(JSON_HEADERS)

    forwarded = await gateway.forward(call, path="/chat/completions", build=build, stream=stream)
    meta = CallMetadata(
        request_id=call.request_id,
        attribution=forwarded.candidate.attribution,
        provider=call.provider,
        model=call.model,
        key_id=forwarded.candidate.key_id,
        attempts=call.attempts,
    )
    if stream:
        await relay_openai_stream(
            gateway,
            call,
            forwarded,
            meta,
            include_usage=_client_wants_usage(body),
            receive=receive,
            send=send,
        )
        return
    await answer_json(gateway, call, forwarded, meta, send)


async def read_json(forwarded: Forwarded) -> tuple[bytes, Any]:
    """The whole upstream body and its JSON (None when it is not JSON); closes the response."""
    response = forwarded.response
    try:
        raw = await response.aread()
    finally:
        await response.aclose()
    try:
        return raw, json.loads(raw)
    except ValueError:
        return raw, None


async def answer_json(
    gateway: Gateway, call: Call, forwarded: Forwarded, meta: CallMetadata, send: Send
) -> None:
    """Read an OpenAI-wire JSON answer, price its usage, add the metadata object, send it."""
    raw, data = await read_json(forwarded)
    usage = (
        usage_from_openai(data.get("usage"), provider=call.provider)
        if isinstance(data, dict)
        else None
    )
    await send_priced_json(
        gateway,
        call,
        forwarded,
        meta,
        send,
        raw=raw,
        data=data,
        usage=usage,
        extra_headers=passthrough_headers(forwarded.response.headers),
    )


async def send_priced_json(
    gateway: Gateway,
    call: Call,
    forwarded: Forwarded,
    meta: CallMetadata,
    send: Send,
    *,
    raw: bytes,
    data: Any,
    usage: Usage | None,
    extra_headers: list[tuple[bytes, bytes]],
) -> None:
    """Price ``usage``, record the ledger row, and send ``data`` with the metadata added."""
    response = forwarded.response
    meta.cost_usd = gateway.cost(call, usage)
    gateway.record(
        call,
        candidate=forwarded.candidate,
        usage=usage,
        cost=meta.cost_usd,
        status_code=response.status_code,
    )
    if isinstance(data, dict):
        data[gateway.config.metadata_field] = meta.as_dict()
        raw = dumps(data)
    await send_bytes(
        send,
        response.status_code,
        raw,
        content_type=response.headers.get("content-type", "application/json").encode("latin-1"),
        extra_raw=meta.headers(with_cost=True) + extra_headers,
    )


_PASSTHROUGH = ("x-ratelimit-", "retry-after", "openai-processing-ms", "x-request-id")


def passthrough_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """Upstream headers that help clients back off (rate limits), never hop-by-hop ones."""
    return [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in headers.items()
        if k.startswith(_PASSTHROUGH)
    ]

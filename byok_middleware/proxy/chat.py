"""``POST /chat/completions``: route, forward with failover, meter, answer with metadata.

The upstream wire decides two things, and only these: the upstream body (OpenAI's as sent, or
Anthropic's Messages translation) and how the answer reads (as is, or translated back). Plain
answers then go through the JSON pipeline's ``answer``; streams through the one relay shell with
the wire's rewriter (``proxy/rewriters.py``).
"""

from __future__ import annotations

import time
from typing import Any

from byok_middleware.asgi import Receive, Send, dumps
from byok_middleware.cache import CacheControl, CacheMode, status_header
from byok_middleware.errors import InvalidRequest
from byok_middleware.gateway import Call, Gateway
from byok_middleware.gateway.calls import Candidate
from byok_middleware.pricing import usage_from_openai
from byok_middleware.providers import anthropic
from byok_middleware.providers.specs import PROVIDERS, WireFormat
from byok_middleware.proxy.cached import CacheTap, cache_header, serve_hit
from byok_middleware.proxy.pipeline import JSON_HEADERS, answer, read_json
from byok_middleware.proxy.relay import forward_watching, relay_json_as_stream, relay_stream
from byok_middleware.proxy.rewriters import (
    AnthropicChunks,
    ChatChunkRewriter,
    OpenAIChatPassthrough,
    StreamRewriter,
)

__all__ = ["client_wants_usage", "handle_chat", "validate_chat"]


def _openai_body(body: dict[str, Any], model: str, *, stream: bool) -> bytes:
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


def client_wants_usage(body: dict[str, Any]) -> bool:
    """Whether the client asked for the usage chunk (``stream_options.include_usage``)."""
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def validate_chat(body: dict[str, Any]) -> None:
    """400 for a chat body the gateway cannot forward (the provider checks the rest)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def _rate_limit_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    translated = anthropic.openai_rate_limit_headers(headers)
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in translated.items()]


async def handle_chat(
    gateway: Gateway,
    call: Call,
    body: dict[str, Any],
    receive: Receive,
    send: Send,
    *,
    cache_control: CacheControl = CacheControl.DEFAULT,
) -> None:
    gateway.route_model(call, body.get("model"))
    validate_chat(body)
    stream = body.get("stream") is True
    include_usage = client_wants_usage(body)
    # The cache answers before any key is chosen: a hit pays nothing and uses no budget.
    mode = CacheMode.OFF
    if gateway.cache is not None:
        hit, mode = await gateway.cache.lookup(call, body, cache_control, "chat")
        if hit is not None:
            await serve_hit(gateway, call, hit, send, stream=stream, include_usage=include_usage)
            return
    also = cache_header(status_header(mode, cache_control, hit=False))
    keep = mode is not CacheMode.OFF and cache_control.store
    routed = (call.provider, call.model)  # the entry's key, as the lookup saw the request
    native = PROVIDERS[call.provider].wire is WireFormat.ANTHROPIC
    json_mode = native and anthropic.uses_json_tool(body)
    payloads: dict[str, bytes] = {}
    if native:
        # Translation errors are the request's fault: a 400 before any upstream call.
        payloads[call.model] = dumps(anthropic.to_messages_request(body, call.model))

    def build(candidate: Candidate) -> tuple[bytes, dict[str, str]]:
        # A bare model name may be served by several providers under different ids.
        model = candidate.model or call.model
        if model not in payloads:
            payloads[model] = _openai_body(body, model, stream=stream)
        return payloads[model], dict(JSON_HEADERS)

    forwarded = await forward_watching(
        receive, gateway.forward(call, path="/chat/completions", build=build, stream=stream)
    )
    headers = _rate_limit_headers(forwarded.response.headers) if native else None
    if stream and not _is_json(forwarded.response.headers.get("content-type", "")):
        field = gateway.config.metadata_field
        rewriter: StreamRewriter
        if native:
            source = AnthropicChunks(
                provider=call.provider,
                model=call.model,
                include_usage=include_usage,
                json_mode=json_mode,
            )
            rewriter = ChatChunkRewriter(
                source,
                field=field,
                request_id=call.request_id,
                model=call.model,
                redact=call.redactor,
            )
        else:
            rewriter = OpenAIChatPassthrough(
                provider=call.provider,
                model=call.model,
                field=field,
                include_usage=include_usage,
                redact=call.redactor,
            )
        tap = CacheTap(rewriter, field) if keep else None
        meta = await relay_stream(
            gateway,
            call,
            forwarded,
            tap or rewriter,
            receive=receive,
            send=send,
            extra_headers=(headers or []) + also,
        )
        if tap is not None and gateway.cache is not None:
            await gateway.cache.store(
                call, body, tap.answer(), cost=meta.cost_usd, mode=mode, kind="chat", routed=routed
            )
        return
    raw, data = await read_json(forwarded)
    if native:
        data = anthropic.to_chat_completion(
            data,
            model=str(data.get("model") or call.model),
            created=int(time.time()),
            json_mode=json_mode,
        )
    if stream:
        # The provider answered a stream request in one piece: replay it as a stream.
        await relay_json_as_stream(
            gateway,
            call,
            forwarded,
            data,
            send=send,
            include_usage=include_usage,
            extra_headers=(headers or []) + also,
        )
        return
    usage = usage_from_openai(data.get("usage"), provider=call.provider)
    cost = gateway.cost(call, usage)
    stored = {k: v for k, v in data.items()} if keep else None  # before the metadata goes in
    await answer(
        gateway,
        call,
        forwarded,
        send,
        raw=raw,
        data=data,
        usage=usage,
        cost=cost,
        priced=True,
        extra_headers=headers,
        also=also,
        data_is_raw=not native,
    )
    if stored is not None and gateway.cache is not None:
        await gateway.cache.store(
            call, body, stored, cost=cost, mode=mode, kind="chat", routed=routed
        )

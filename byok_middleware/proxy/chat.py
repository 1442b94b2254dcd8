"""``POST /chat/completions``: route, forward with failover, meter, and answer with metadata."""

from __future__ import annotations

from typing import Any

from byok_middleware.asgi import Receive, Send, dumps
from byok_middleware.errors import InvalidRequest
from byok_middleware.gateway import Call, Gateway
from byok_middleware.gateway.calls import Candidate
from byok_middleware.pricing import usage_from_openai
from byok_middleware.providers.specs import PROVIDERS, WireFormat
from byok_middleware.proxy.anthropic_chat import handle_anthropic_chat
from byok_middleware.proxy.endpoints import JSON_HEADERS
from byok_middleware.proxy.respond import call_metadata, read_json, send_metered
from byok_middleware.proxy.stream import relay_openai_stream

__all__ = ["handle_chat"]


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
    include_usage = _client_wants_usage(body)
    if PROVIDERS[call.provider].wire is WireFormat.ANTHROPIC:
        await handle_anthropic_chat(
            gateway, call, body, receive, send, stream=stream, include_usage=include_usage
        )
        return

    payloads: dict[str, bytes] = {}

    def build(candidate: Candidate) -> tuple[bytes, dict[str, str]]:
        # A bare model name may be served by several providers under different ids.
        model = candidate.model or call.model
        if model not in payloads:
            payloads[model] = _upstream_body(body, model, stream=stream)
        return payloads[model], dict(JSON_HEADERS)

    forwarded = await gateway.forward(call, path="/chat/completions", build=build, stream=stream)
    if stream:
        await relay_openai_stream(
            gateway,
            call,
            forwarded,
            call_metadata(call, forwarded),
            include_usage=include_usage,
            receive=receive,
            send=send,
        )
        return
    raw, data = await read_json(forwarded)
    usage = (
        usage_from_openai(data.get("usage"), provider=call.provider)
        if isinstance(data, dict)
        else None
    )
    await send_metered(
        gateway,
        call,
        forwarded,
        send,
        raw=raw,
        data=data,
        usage=usage,
        data_is_raw=True,
    )

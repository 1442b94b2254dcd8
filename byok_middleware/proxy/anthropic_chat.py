"""Chat completions served by Anthropic's native Messages API, translated both ways.

The translation itself is sans-I/O (``providers/anthropic*``); this module only moves bytes:
forward with failover, translate the answer or each streamed event as it arrives, meter, relay.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from byok_middleware.asgi import Receive, Send, dumps, loads
from byok_middleware.gateway import Call, Forwarded, Gateway
from byok_middleware.gateway.calls import Candidate
from byok_middleware.gateway.transport import UpstreamResponse
from byok_middleware.pricing import usage_from_openai
from byok_middleware.providers import anthropic
from byok_middleware.proxy.endpoints import JSON_HEADERS
from byok_middleware.proxy.metadata import CallMetadata
from byok_middleware.proxy.respond import call_metadata, read_json, send_metered
from byok_middleware.proxy.sse import SSESplitter, encode_event, parse_event
from byok_middleware.proxy.stream import (
    interrupted_event,
    run_until_disconnect,
    send_body,
    sse_start,
)

__all__ = ["handle_anthropic_chat"]

DONE_EVENT = b"data: [DONE]\n\n"


def _rate_limit_headers(response: UpstreamResponse) -> list[tuple[bytes, bytes]]:
    translated = anthropic.openai_rate_limit_headers(response.headers)
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in translated.items()]


async def handle_anthropic_chat(
    gateway: Gateway,
    call: Call,
    body: dict[str, Any],
    receive: Receive,
    send: Send,
    *,
    stream: bool,
    include_usage: bool,
) -> None:
    # Translation errors are the request's fault: a 400 before any upstream call.
    payload = dumps(anthropic.to_messages_request(body, call.model))
    json_mode = anthropic.uses_json_tool(body)

    def build(candidate: Candidate) -> tuple[bytes, dict[str, str]]:
        return payload, dict(JSON_HEADERS)

    forwarded = await gateway.forward(call, path="/chat/completions", build=build, stream=stream)
    meta = call_metadata(call, forwarded)
    if stream:
        await _relay_stream(
            gateway,
            call,
            forwarded,
            meta,
            include_usage=include_usage,
            json_mode=json_mode,
            receive=receive,
            send=send,
        )
        return
    raw, message = await read_json(forwarded)
    data: Any = None
    usage = None
    if isinstance(message, dict):
        data = anthropic.to_chat_completion(
            message,
            model=str(message.get("model") or call.model),
            created=int(time.time()),
            json_mode=json_mode,
        )
        usage = usage_from_openai(data.get("usage"), provider=call.provider)
    await send_metered(
        gateway,
        call,
        forwarded,
        send,
        raw=raw,
        data=data,
        usage=usage,
        extra_headers=_rate_limit_headers(forwarded.response),
    )


async def _relay_stream(
    gateway: Gateway,
    call: Call,
    forwarded: Forwarded,
    meta: CallMetadata,
    *,
    include_usage: bool,
    json_mode: bool,
    receive: Receive,
    send: Send,
) -> None:
    response = forwarded.response
    translator = anthropic.StreamTranslator(
        model=call.model,
        created=int(time.time()),
        include_usage=include_usage,
        json_mode=json_mode,
    )
    outcome: dict[str, str | None] = {"error": None}

    def usage() -> Any:
        return usage_from_openai(translator.usage, provider=call.provider)

    def finish() -> list[bytes]:
        meta.cost_usd = gateway.cost(call, usage())
        chunks = translator.final_chunks() or [
            {
                "id": "chatcmpl-" + call.request_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": call.model,
                "choices": [],
            }
        ]
        chunks[-1][gateway.config.metadata_field] = meta.as_dict()
        return [encode_event(dumps(chunk)) for chunk in chunks] + [DONE_EVENT]

    async def relay() -> None:
        splitter = SSESplitter()
        await sse_start(send, meta)
        try:
            async for data in response.aiter_bytes():
                out: list[bytes] = []
                for raw in splitter.feed(data):
                    event = parse_event(raw)
                    if event is None or not event.data:
                        continue
                    try:
                        parsed = loads(event.data)
                    except ValueError:
                        continue
                    for chunk in translator.feed(event.event or "", parsed):
                        encoded = dumps(chunk)
                        if "error" in chunk:
                            encoded = call.redactor(encoded.decode()).encode()
                        out.append(encode_event(encoded))
                    if translator.failed:
                        outcome["error"] = "upstream_stream_error"
                        break
                    if translator.finished:
                        if out:  # the last content goes out before the metering work
                            await send_body(send, out)
                        out = finish()
                        break
                if out:
                    await send_body(send, out)
                if translator.failed or translator.finished:
                    break
        except httpx.HTTPError:
            outcome["error"] = "stream_interrupted"
        finally:
            await response.aclose()
        tail = b""
        if not translator.finished and not translator.failed:
            outcome["error"] = "stream_interrupted"
            tail = interrupted_event(
                "the anthropic stream ended before completion; the answer is incomplete"
            )
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    disconnected = await run_until_disconnect(receive, relay())
    if disconnected:
        outcome["error"] = "client_disconnected"
        await response.aclose()
    final_usage = usage()
    gateway.record(
        call,
        candidate=forwarded.candidate,
        usage=final_usage,
        # A finished stream was priced in finish(); usage cannot change after it.
        cost=meta.cost_usd if translator.finished else gateway.cost(call, final_usage),
        status_code=200 if translator.finished else 499 if disconnected else 502,
        error_type=outcome["error"],
    )

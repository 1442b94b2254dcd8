"""``POST /audio/speech``: JSON in, audio streamed back as it arrives (never buffered).

The cost is known before the first byte (tts-1/tts-1-hd and Groq's TTS are priced per input
character, providers.md §1.8), so it goes out in ``x-byok-cost-usd`` with the other metadata
headers; the body is the provider's audio, byte for byte, with its ``Content-Type``. Token-priced
speech models (gpt-4o-mini-tts) cannot be priced from a binary answer: their cost is unknown
(no ``x-byok-cost-usd`` header, ``cost_usd`` null in the ledger). The ledger row is written
when the stream ends, with the outcome (complete, cut upstream, or the client left).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from byok_middleware.asgi import Receive, Send, dumps, json_body
from byok_middleware.errors import InvalidRequest
from byok_middleware.gateway import Call, Forwarded, Gateway
from byok_middleware.gateway.calls import Candidate
from byok_middleware.gateway.headers import relay_headers
from byok_middleware.pricing import Usage
from byok_middleware.providers.specs import Endpoint
from byok_middleware.proxy.metadata import CallMetadata
from byok_middleware.proxy.pipeline import (
    JSON_HEADERS,
    call_metadata,
    optional_str,
)
from byok_middleware.proxy.relay import run_until_disconnect
from byok_middleware.router import Incoming

__all__ = ["handle_speech"]

logger = logging.getLogger("byok_middleware.proxy.speech")


def _validate(body: dict[str, Any]) -> str:
    text = body.get("input")
    if not isinstance(text, str) or not text:
        raise InvalidRequest("'input' is required and must be a non-empty string", param="input")
    for name in ("response_format", "instructions", "stream_format"):
        optional_str(body, name)
    voice = body.get("voice")
    if voice is not None and not isinstance(voice, str | dict):
        raise InvalidRequest("'voice' must be a string or an object", param="voice")
    return text


async def handle_speech(gateway: Gateway, call: Call, incoming: Incoming) -> None:
    body = await json_body(incoming.receive, gateway.config.max_body_bytes)
    gateway.route_model(call, body.get("model"), Endpoint.SPEECH)
    text = _validate(body)

    def build(candidate: Candidate) -> tuple[bytes, dict[str, str]]:
        return dumps({**body, "model": call.model}), {**JSON_HEADERS, "accept": "audio/*, */*"}

    forwarded = await gateway.forward(call, path=Endpoint.SPEECH.value, build=build)
    usage = Usage(characters=len(text))
    meta = call_metadata(call, forwarded)
    meta.cost_usd = gateway.cost(call, usage)
    await relay_audio(gateway, call, forwarded, meta, usage, incoming.receive, incoming.send)


async def relay_audio(
    gateway: Gateway,
    call: Call,
    forwarded: Forwarded,
    meta: CallMetadata,
    usage: Usage,
    receive: Receive,
    send: Send,
) -> None:
    """Stream the upstream body to the client as it arrives; the ledger row is recorded before
    the last byte (or, for a cut or abandoned answer, once it ended)."""
    response = forwarded.response
    content_type = response.headers.get("content-type", "application/octet-stream")
    headers = [(b"content-type", content_type.encode("latin-1"))]
    headers += meta.headers(with_cost=True) + relay_headers(response.headers, call.redactor)
    outcome: dict[str, Any] = {"status": 502, "error": "stream_interrupted", "recorded": False}

    def record() -> None:
        outcome["recorded"] = True
        gateway.record(
            call,
            candidate=forwarded.candidate,
            usage=usage,
            cost=meta.cost_usd,
            status_code=outcome["status"],
            error_type=outcome["error"],
        )

    async def relay() -> None:
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        try:
            async for chunk in response.aiter_bytes():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError:
            # Leaving the body unfinished (no final message) tells the client, through the
            # server closing the connection mid-body, that its audio is incomplete.
            logger.warning("the %s audio stream broke off (%s)", call.provider, call.request_id)
            return
        outcome.update(status=response.status_code, error=None)
        record()  # before the last byte: a completed answer's row survives a crash after it
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    try:
        if await run_until_disconnect(receive, relay()):
            outcome.update(status=499, error="client_disconnected")
    finally:
        await response.aclose()
        if not outcome["recorded"]:
            record()

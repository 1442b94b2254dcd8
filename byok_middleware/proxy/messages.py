"""Anthropic's Messages API: ``POST /messages`` (plain and streamed) and
``POST /messages/count_tokens``, over every provider.

``model`` is ``provider/model``, or a bare ``claude-*`` name (anthropic); other bare names are
resolved as for chat.

* anthropic: the body goes to Anthropic's own ``/v1/messages`` with the chosen key, with the
  client's ``anthropic-beta`` header (``anthropic-version`` is the one version there is,
  ``2023-06-01``, which the gateway always sends);
* OpenAI-wire providers: the body is translated to chat (``providers/messages_ingress``) and the
  answer back (``messages_ingress_response``, ``messages_ingress_stream``).

Errors take Anthropic's shape (the router renders them for these routes). Metadata: a top-level
field of the Message (JSON), and of the ``message_delta`` event (streams); headers as on chat.
The ledger row's endpoint is ``/messages`` (``/messages/count_tokens`` for counts, at no cost).
``count_tokens`` of a model Anthropic does not serve is an estimate and says so
(``"estimated": true``); it calls no provider.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from byok_middleware.asgi import Receive, Scope, Send, dumps, header, send_json
from byok_middleware.errors import InvalidRequest
from byok_middleware.gateway import Call, Gateway
from byok_middleware.gateway.calls import Candidate
from byok_middleware.gateway.headers import relay_headers
from byok_middleware.pricing import usage_from_openai
from byok_middleware.providers import messages_ingress
from byok_middleware.providers.anthropic import to_openai_usage
from byok_middleware.providers.messages_ingress_response import estimate_input_tokens, to_message
from byok_middleware.providers.messages_ingress_stream import MessagesStreamTranslator
from byok_middleware.providers.specs import PROVIDERS, Endpoint, WireFormat
from byok_middleware.proxy.dialect_rewriters import MessagesPassthrough, MessagesTranslated
from byok_middleware.proxy.pipeline import JSON_HEADERS, answer, read_json
from byok_middleware.proxy.relay import relay_stream
from byok_middleware.proxy.rewriters import OpenAIChunks

__all__ = ["handle_count_tokens", "handle_messages", "messages_model"]


def messages_model(model: object) -> object:
    """``claude-*`` means anthropic; anything else is resolved as for chat."""
    if isinstance(model, str) and model.startswith("claude-"):
        return "anthropic/" + model
    return model


def _native(call: Call) -> bool:
    return PROVIDERS[call.provider].wire is WireFormat.ANTHROPIC


def _upstream_headers(scope: Scope) -> dict[str, str]:
    headers = dict(JSON_HEADERS)
    beta = header(scope, b"anthropic-beta")
    if beta:
        headers["anthropic-beta"] = beta
    return headers


def _check_stream(body: Mapping[str, Any]) -> bool:
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    return stream is True


async def handle_messages(
    gateway: Gateway, call: Call, body: dict[str, Any], scope: Scope, receive: Receive, send: Send
) -> None:
    stream = _check_stream(body)
    gateway.route_model(call, messages_model(body.get("model")), Endpoint.CHAT)
    field = gateway.config.metadata_field
    if _native(call):
        headers = _upstream_headers(scope)

        def build_native(candidate: Candidate) -> tuple[bytes, dict[str, str]]:
            return dumps({**body, "model": candidate.model or call.model}), dict(headers)

        forwarded = await gateway.forward(call, path="/messages", build=build_native, stream=stream)
        passed = relay_headers(forwarded.response.headers, call.redactor)
        if stream:
            native = MessagesPassthrough(provider=call.provider, field=field, redact=call.redactor)
            await relay_stream(
                gateway,
                call,
                forwarded,
                native,
                receive=receive,
                send=send,
                extra_headers=passed,
            )
            return
        raw, data = await read_json(forwarded)
        reported = data.get("usage")
        usage = usage_from_openai(
            to_openai_usage(reported if isinstance(reported, dict) else {}),
            provider=call.provider,
        )
        await answer(
            gateway,
            call,
            forwarded,
            send,
            raw=raw,
            data=data,
            usage=usage,
            extra_headers=passed,
            data_is_raw=True,
        )
        return
    # Translation errors are the request's fault: a 400 before any upstream call.
    chat = messages_ingress.to_chat_request(body)
    payloads: dict[tuple[str, str], bytes] = {}

    def build(candidate: Candidate) -> tuple[bytes, dict[str, str]]:
        key = (candidate.provider, candidate.model or call.model)
        if key not in payloads:
            upstream = {**chat, "model": key[1]}
            if candidate.provider == "openai":
                upstream["max_completion_tokens"] = upstream.pop("max_tokens")
            payloads[key] = dumps(upstream)
        return payloads[key], dict(JSON_HEADERS)

    forwarded = await gateway.forward(call, path="/chat/completions", build=build, stream=stream)
    if stream:
        translated = MessagesTranslated(
            OpenAIChunks(provider=call.provider),
            MessagesStreamTranslator(model=call.model),
            field=field,
            redact=call.redactor,
        )
        await relay_stream(gateway, call, forwarded, translated, receive=receive, send=send)
        return
    _, data = await read_json(forwarded)
    usage = usage_from_openai(data.get("usage"), provider=call.provider)
    message = to_message(data, model=call.model)
    await answer(gateway, call, forwarded, send, raw=b"", data=message, usage=usage)


async def handle_count_tokens(
    gateway: Gateway, call: Call, body: dict[str, Any], scope: Scope, send: Send
) -> None:
    gateway.route_model(call, messages_model(body.get("model")), Endpoint.CHAT)
    if not isinstance(body.get("messages"), list):
        raise InvalidRequest("'messages' must be an array", param="messages")
    if not _native(call):
        count = estimate_input_tokens(body)
        headers = {"x-byok-request-id": call.request_id, "x-byok-provider-used": call.provider}
        await send_json(send, 200, count, headers)
        return
    headers = _upstream_headers(scope)

    def build(candidate: Candidate) -> tuple[bytes, dict[str, str]]:
        return dumps({**body, "model": candidate.model or call.model}), dict(headers)

    forwarded = await gateway.forward(call, path="/messages/count_tokens", build=build)
    raw, data = await read_json(forwarded)
    await answer(
        gateway,
        call,
        forwarded,
        send,
        raw=raw,
        data=data,
        usage=None,
        cost=Decimal(0),
        priced=True,
        extra_headers=relay_headers(forwarded.response.headers, call.redactor),
        data_is_raw=True,
    )

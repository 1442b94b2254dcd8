"""OpenAI's Responses API: ``POST /responses`` (plain and streamed), ``GET``/``DELETE
/responses/{id}``, over every provider.

* openai: the body goes to the provider's own ``/responses`` with the chosen key;
* every other provider: the body is translated to chat (``providers/responses_request``) and
  the answer back (``providers/responses_response``, ``responses_stream``); Anthropic's chat is in
  turn its Messages translation, as on ``/chat/completions``.

``previous_response_id`` is the gateway's business on every provider: the conversation up to it
comes from the gateway's own store (``proxy/conversations``) and is sent as input, so the earlier
turn may have been served by any provider or key. ``store`` (default true) keeps this turn for a
later one. Metadata: the metadata object is a field of the response object (JSON), and of the
``response`` of ``response.completed`` (streams); headers as on chat. The ledger row's endpoint
is ``/responses``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from byok_middleware.asgi import Receive, Send, dumps, send_json
from byok_middleware.errors import InvalidRequest
from byok_middleware.gateway import Call, Gateway
from byok_middleware.gateway.calls import Candidate
from byok_middleware.pricing import usage_from_openai
from byok_middleware.providers import anthropic
from byok_middleware.providers.responses_request import input_items, to_chat_request
from byok_middleware.providers.responses_response import to_response
from byok_middleware.providers.responses_stream import ResponsesStreamTranslator
from byok_middleware.providers.specs import PROVIDERS, Endpoint, WireFormat
from byok_middleware.proxy.conversations import Conversation, Conversations
from byok_middleware.proxy.dialect_rewriters import ResponsesPassthrough, ResponsesTranslated
from byok_middleware.proxy.pipeline import (
    JSON_HEADERS,
    answer,
    optional_str,
    read_json,
)
from byok_middleware.proxy.relay import relay_stream
from byok_middleware.proxy.rewriters import AnthropicChunks, ChunkSource, OpenAIChunks
from byok_middleware.router import Incoming

__all__ = ["ResponsesAPI", "replayable"]

Item = dict[str, Any]
# Fields of an item that another turn may send back as input (ids and statuses are the
# serving provider's; reasoning items only it can read).
_REPLAYED = ("type", "role", "content", "call_id", "name", "arguments", "output")


def replayable(items: list[Item]) -> list[Item]:
    """Stored items as input any provider accepts: no reasoning items, no ids or statuses."""
    return [
        {k: item[k] for k in _REPLAYED if k in item}
        for item in items
        if item.get("type", "message") != "reasoning"
    ]


def _flag(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{name}' must be a boolean", param=name)
    return value


def _validate(body: Mapping[str, Any]) -> None:
    metadata = body.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        raise InvalidRequest("'metadata' must be an object of strings", param="metadata")


def _output_items(response: Mapping[str, Any]) -> list[Item]:
    output = response.get("output")
    return [item for item in output if isinstance(item, dict)] if isinstance(output, list) else []


class ResponsesAPI:
    """The three Responses routes, sharing the conversation store (one per router)."""

    def __init__(self, conversations: Conversations | None = None) -> None:
        self.conversations = conversations or Conversations()

    def __repr__(self) -> str:
        return f"ResponsesAPI({self.conversations!r})"

    async def retrieve(self, gateway: Gateway, incoming: Incoming) -> None:
        found = await self.conversations.require(
            gateway.store,
            gateway.keyring,
            gateway.clock(),
            incoming.tenant_id,
            incoming.params["id"],
        )
        await send_json(
            incoming.send, 200, found.response, {"x-byok-request-id": incoming.request_id}
        )

    async def delete(self, gateway: Gateway, incoming: Incoming) -> None:
        response_id = incoming.params["id"]
        await self.conversations.require(
            gateway.store, gateway.keyring, gateway.clock(), incoming.tenant_id, response_id
        )
        await self.conversations.delete(gateway.store, incoming.tenant_id, response_id)
        body = {"id": response_id, "object": "response.deleted", "deleted": True}
        await send_json(incoming.send, 200, body, {"x-byok-request-id": incoming.request_id})

    async def create(
        self, gateway: Gateway, call: Call, body: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        stream = _flag(body, "stream", False)
        store = _flag(body, "store", True)
        previous = optional_str(body, "previous_response_id")
        _validate(body)
        gateway.route_model(call, body.get("model"), Endpoint.CHAT)
        native = call.provider == "openai"
        if native:
            # One upstream path per call: the openai routes of a bare name answer /responses.
            call.routes = tuple(r for r in call.routes if r.provider == "openai")
        this_turn = input_items(body)  # 400 for a malformed input, before any upstream call
        history: list[Item] = []
        if previous:
            earlier = await self.conversations.require(
                gateway.store,
                gateway.keyring,
                gateway.clock(),
                call.tenant_id,
                previous,
                param="previous_response_id",
            )
            history = earlier.items
        turn = _Turn(self, gateway, call, body, history + this_turn, store=store)
        if native:
            await turn.native(receive, send, stream=stream)
        else:
            await turn.translated(receive, send, stream=stream, history=history)


class _Turn:
    """One ``POST /responses`` call after validation: forward, answer, store."""

    def __init__(
        self,
        api: ResponsesAPI,
        gateway: Gateway,
        call: Call,
        body: dict[str, Any],
        inputs: list[Item],
        *,
        store: bool,
    ) -> None:
        self.api = api
        self.gateway = gateway
        self.call = call
        self.body = body
        self.inputs = inputs  # the conversation up to and with this turn's input
        self.store = store
        self.previous = body.get("previous_response_id")
        self.field = gateway.config.metadata_field

    def _conversation(self, response: dict[str, Any]) -> Conversation:
        clean = {k: v for k, v in response.items() if k != self.field}
        return Conversation(clean, self.inputs + _output_items(response))

    async def _save(self, response: dict[str, Any]) -> None:
        if self.store:
            gateway = self.gateway
            await self.api.conversations.save(
                gateway.store,
                gateway.keyring,
                gateway.clock(),
                self.call.tenant_id,
                self._conversation(response),
            )

    def _save_later(self, response: dict[str, Any]) -> None:
        if self.store:
            gateway = self.gateway
            self.api.conversations.save_later(
                gateway.store,
                gateway.keyring,
                gateway.clock,
                self.call.tenant_id,
                self._conversation(response),
            )

    def _patch(self, response: dict[str, Any]) -> None:
        # The gateway resolved previous_response_id itself; the client sees its own value.
        response["previous_response_id"] = self.previous

    async def native(self, receive: Receive, send: Send, *, stream: bool) -> None:
        gateway, call = self.gateway, self.call
        upstream = {k: v for k, v in self.body.items() if k != "previous_response_id"}
        if self.previous:
            upstream["input"] = replayable(self.inputs)

        def build(candidate: Candidate) -> tuple[bytes, dict[str, str]]:
            return dumps({**upstream, "model": candidate.model or call.model}), dict(JSON_HEADERS)

        forwarded = await gateway.forward(call, path="/responses", build=build, stream=stream)
        if stream:
            rewriter = ResponsesPassthrough(
                provider=call.provider,
                field=self.field,
                redact=call.redactor,
                patch=self._patch if self.previous else None,
                on_response=self._save_later,
            )
            await relay_stream(gateway, call, forwarded, rewriter, receive=receive, send=send)
            return
        raw, data = await read_json(forwarded)
        if self.previous:
            self._patch(data)
        await self._save(data)
        usage = usage_from_openai(data.get("usage"), provider=call.provider)
        await answer(
            gateway,
            call,
            forwarded,
            send,
            raw=raw,
            data=data,
            usage=usage,
            data_is_raw=not self.previous,
        )

    async def translated(
        self, receive: Receive, send: Send, *, stream: bool, history: list[Item]
    ) -> None:
        gateway, call = self.gateway, self.call
        # Translation errors are the request's fault: a 400 before any upstream call.
        chat = to_chat_request(self.body, history=history)
        wire = PROVIDERS[call.provider].wire
        json_mode = wire is WireFormat.ANTHROPIC and anthropic.uses_json_tool(chat)
        payloads: dict[tuple[str, str], bytes] = {}

        def payload(provider: str, model: str) -> bytes:
            if PROVIDERS[provider].wire is WireFormat.ANTHROPIC:
                return dumps(anthropic.to_messages_request(chat, model))
            upstream = {**chat, "model": model}
            if provider == "openai" and "max_tokens" in upstream:
                upstream["max_completion_tokens"] = upstream.pop("max_tokens")
            return dumps(upstream)

        # Built now for the first route, so a parameter it cannot honour is a 400 up front.
        payloads[(call.provider, call.model)] = payload(call.provider, call.model)

        def build(candidate: Candidate) -> tuple[bytes, dict[str, str]]:
            key = (candidate.provider, candidate.model or call.model)
            if key not in payloads:
                payloads[key] = payload(*key)
            return payloads[key], dict(JSON_HEADERS)

        forwarded = await gateway.forward(
            call, path="/chat/completions", build=build, stream=stream
        )
        headers = None
        if wire is WireFormat.ANTHROPIC:
            translated = anthropic.openai_rate_limit_headers(forwarded.response.headers)
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in translated.items()]
        response_id = "resp_" + os.urandom(24).hex()
        created = int(time.time())
        if stream:
            source: ChunkSource
            if wire is WireFormat.ANTHROPIC:
                source = AnthropicChunks(
                    provider=call.provider,
                    model=call.model,
                    include_usage=True,
                    json_mode=json_mode,
                )
            else:
                source = OpenAIChunks(provider=call.provider)
            translator = ResponsesStreamTranslator(
                self.body, response_id=response_id, created_at=created, model=call.model
            )
            rewriter = ResponsesTranslated(
                source,
                translator,
                field=self.field,
                redact=call.redactor,
                on_response=self._save_later,
            )
            await relay_stream(
                gateway,
                call,
                forwarded,
                rewriter,
                receive=receive,
                send=send,
                extra_headers=headers,
            )
            return
        _, data = await read_json(forwarded)
        if wire is WireFormat.ANTHROPIC:
            data = anthropic.to_chat_completion(
                data,
                model=str(data.get("model") or call.model),
                created=created,
                json_mode=json_mode,
            )
        usage = usage_from_openai(data.get("usage"), provider=call.provider)
        response = to_response(
            data, self.body, response_id=response_id, created_at=created, model=call.model
        )
        await self._save(response)
        await answer(
            gateway,
            call,
            forwarded,
            send,
            raw=b"",
            data=response,
            usage=usage,
            extra_headers=headers,
        )

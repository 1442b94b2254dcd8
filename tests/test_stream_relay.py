"""Streams relayed in-process: content is never held back behind the gateway's metering work.

Upstreams often send the last content chunk, the usage and the end of the stream in one write.
The relay must hand the content to the client before it parses the usage, prices the call and
builds the metadata event, so those costs never delay a chunk the client is waiting for.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from byok_middleware import BYOKConfig, BYOKMiddleware, MemoryStore, create_tenant
from byok_middleware import generate_master_key as new_master_key
from byok_middleware.asgi import Message

LAST_WORDS = "the last words"


def _data(value: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(value).encode() + b"\n\n"


def _event(name: str, value: dict[str, Any]) -> bytes:
    return f"event: {name}\n".encode() + _data(value)


def _openai_body() -> bytes:
    def chunk(content: str | None, finish: str | None = None) -> dict[str, Any]:
        delta = {} if content is None else {"content": content}
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o",
                "created": 1, "choices": [choice]}  # fmt: skip

    usage = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    return (
        _data(chunk("Hello"))
        + _data(chunk(LAST_WORDS, "stop"))
        + _data({**chunk(None), "choices": [], "usage": usage})
        + b"data: [DONE]\n\n"
    )


def _anthropic_body() -> bytes:
    message = {"id": "m1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 9, "output_tokens": 1}}  # fmt: skip

    def delta(text: str) -> bytes:
        value = {"type": "text_delta", "text": text}
        return _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": value})  # fmt: skip

    stop = {"stop_reason": "end_turn", "stop_sequence": None}
    return (
        _event("message_start", {"type": "message_start", "message": message})
        + _event("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}})
        + delta("Hello")
        + delta(LAST_WORDS)
        + _event("content_block_stop", {"type": "content_block_stop", "index": 0})
        + _event("message_delta", {"type": "message_delta", "delta": stop,
                                   "usage": {"input_tokens": 9, "output_tokens": 3}})
        + _event("message_stop", {"type": "message_stop"})
    )  # fmt: skip


async def _relay(model: str, body: bytes) -> list[bytes]:
    """The body parts the client is sent for one streamed chat whose upstream answer is ``body``,
    delivered to the gateway in a single read."""

    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    provider = model.split("/")[0]
    store = MemoryStore()
    _, gateway_key = await create_tenant(store, "acme")
    config = BYOKConfig(
        master_key=new_master_key(), platform_keys={provider: "sk-platform-0000000000000000"}
    )
    app = BYOKMiddleware(
        Starlette(), config=config, store=store, transport=httpx.MockTransport(upstream)
    )
    request = {"model": model, "stream": True,
               "messages": [{"role": "user", "content": "Hi"}]}  # fmt: skip
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1234),
        "headers": [(b"authorization", f"Bearer {gateway_key}".encode()),
                    (b"content-type", b"application/json")],
    }  # fmt: skip
    incoming = [{"type": "http.request", "body": json.dumps(request).encode(), "more_body": False}]
    parts: list[bytes] = []
    done = asyncio.Event()

    async def receive() -> Message:
        if incoming:
            return incoming.pop()
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            if message["status"] != 200:
                raise AssertionError(f"status {message['status']}")
        else:
            if message["body"]:
                parts.append(message["body"])
            if not message.get("more_body"):
                done.set()

    try:
        await asyncio.wait_for(app(scope, receive, send), 10)
    finally:
        await app.aclose()
    return parts


@pytest.mark.parametrize(
    ("model", "body"),
    [("openai/gpt-4o", _openai_body()), ("anthropic/claude-sonnet-4-5", _anthropic_body())],
)
async def test_last_content_is_sent_before_the_metering(model: str, body: bytes) -> None:
    parts = await _relay(model, body)
    with_content = [i for i, part in enumerate(parts) if LAST_WORDS.encode() in part]
    with_metadata = [i for i, part in enumerate(parts) if b"xantly_metadata" in part]
    if not (with_content and with_metadata):
        raise AssertionError(f"content or metadata missing from {parts!r}")
    # The content went out in an earlier body part than the priced metadata event.
    assert with_content[-1] < with_metadata[0], parts
    assert parts[-1].endswith(b"data: [DONE]\n\n")
    final = json.loads(parts[-1].split(b"\n\n")[-3].removeprefix(b"data: "))
    assert final["xantly_metadata"]["cost_usd"] > 0  # priced from the usage that came with it

"""Ordinary streaming client code runs to the end and can read the gateway's metadata.

The metadata rides on the final chunk that has choices (the one with ``finish_reason``), so a
plain ``chunk.choices[0].delta.content`` loop never meets an empty ``choices`` list. The SDK's
``stream()`` helper, LiteLLM's and LangChain's clients are used the way the README's "Reading the
metadata from a stream" shows.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import pytest

from tests.conftest import PLATFORM_OPENAI_KEY, Gateway

MESSAGES = [{"role": "user", "content": "Say hello"}]
GPT4O_COST = 100 * 2.5 / 1e6 + 20 * 10 / 1e6
TENANT_ANTHROPIC_KEY = "sk-ant-api03-tenant-acme-000000000000000000000000"


@pytest.mark.parametrize("model", ["openai/gpt-4o", "anthropic/claude-sonnet-4-5"])
def test_the_plain_loop_reads_every_chunk_and_the_metadata(gateway: Gateway, model: str) -> None:
    """``for chunk in stream: chunk.choices[0].delta.content`` runs to the end (no IndexError)
    and the last chunk it sees carries the metadata."""
    if model.startswith("anthropic/"):
        gateway.add_key("acme", "anthropic", TENANT_ANTHROPIC_KEY)
    client = gateway.openai("acme")
    text, last = "", None
    for chunk in client.chat.completions.create(model=model, messages=MESSAGES, stream=True):
        text += chunk.choices[0].delta.content or ""
        last = chunk
    assert text.startswith("Hello from the fake")
    assert last is not None and last.choices[0].finish_reason is not None
    meta = last.model_extra["xantly_metadata"]
    assert meta["provider_used"] == model.split("/")[0]
    assert meta["cost_usd"] > 0


def test_the_stream_helper_runs_to_the_end(gateway: Gateway) -> None:
    """``chat.completions.stream()`` accumulates the answer; its chunk events carry the metadata."""
    client = gateway.openai("acme")
    with client.chat.completions.stream(model="openai/gpt-4o", messages=MESSAGES) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Hello from the fake openai."
    chunks = [event.chunk for event in events if event.type == "chunk"]
    meta = chunks[-1].model_extra["xantly_metadata"]
    assert meta["cost_attribution"] == "xantly"
    assert meta["cost_usd"] == pytest.approx(GPT4O_COST)


def test_usage_chunk_only_for_clients_that_ask(gateway: Gateway) -> None:
    """A client that asks for usage gets one usage-only chunk last, with the metadata too."""
    client = gateway.openai("acme")
    chunks = list(
        client.chat.completions.create(
            model="openai/gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    finish = chunks[-2]
    assert finish.choices[0].finish_reason == "stop"
    assert finish.model_extra["xantly_metadata"] == chunks[-1].model_extra["xantly_metadata"]


def _quiet_import(name: str) -> Any:
    # Third-party clients warn about their own dependencies at import; not ours to fix.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return __import__(name, fromlist=["_"])


def test_litellm_streams_keep_the_metadata(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LiteLLM's stream ends normally; its last chunk keeps the metadata as an attribute."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
    litellm = _quiet_import("litellm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = litellm.completion(
            model="openai/openai/gpt-4o",  # LiteLLM's "openai/" prefix: an OpenAI-compatible API
            api_base=gateway.url + "/v1",
            api_key=gateway.tenant("acme"),
            messages=MESSAGES,
            stream=True,
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake openai."
    meta = next(getattr(c, "xantly_metadata", None) for c in reversed(chunks))
    assert meta is not None and meta["cost_usd"] == pytest.approx(GPT4O_COST)
    headers = stream._hidden_params["additional_headers"]
    assert headers["llm_provider-x-byok-request-id"] == meta["request_id"]


def test_langchain_streams_expose_who_paid_in_headers(gateway: Gateway) -> None:
    """LangChain drops unknown chunk fields; with include_response_headers its first chunk
    carries the x-byok-* headers, and the request id finds the cost in the request log."""
    chat_openai = _quiet_import("langchain_openai").ChatOpenAI
    os.environ.pop("OPENAI_API_KEY", None)
    llm = chat_openai(
        model="openai/gpt-4o",
        base_url=gateway.url + "/v1",
        api_key=gateway.tenant("acme"),
        include_response_headers=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = list(llm.stream("Say hello"))
    assert "".join(str(p.content) for p in parts) == "Hello from the fake openai."
    headers = parts[0].response_metadata["headers"]
    assert headers["x-byok-cost-attribution"] == "xantly"
    assert headers["x-byok-provider-used"] == "openai"
    assert headers["x-byok-request-id"].startswith("req_")
    assert PLATFORM_OPENAI_KEY not in repr(parts)

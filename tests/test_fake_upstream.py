"""The fake upstream (byok_middleware.testing): a real server speaking the providers' wires."""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
import time
import wave
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from byok_middleware.fake.errors import openai_key_echo
from byok_middleware.fake.multipart import parse_multipart
from byok_middleware.fake.wire import split_text
from byok_middleware.testing import FakeUpstream, Scripted

OPENAI_WIRE = ["openai", "groq", "deepseek", "nvidia", "google"]
ALL_PROVIDERS = [*OPENAI_WIRE, "anthropic"]
LONG_KEY = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789wjh3"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test-key", "anthropic-version": "2023-06-01"}
ANTHROPIC_BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeUpstream) -> Iterator[FakeUpstream]:
    server.clear()
    server.chunk_delay = 0.0
    server.stream_chunks = 5
    server.default_usage = {"prompt_tokens": 100, "completion_tokens": 20}
    yield server
    server.clear()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as http:
        yield http


def bearer(key: str = "sk-test-key") -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat_url(fake: FakeUpstream, provider: str = "openai") -> str:
    return fake.base_url(provider) + "/chat/completions"


def timed_data_lines(response: httpx.Response) -> list[tuple[float, str]]:
    """(arrival time, payload) of each `data:` line, read as the bytes arrive."""
    lines = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            lines.append((time.monotonic(), line.removeprefix("data: ")))
    return lines


def collect_data_lines(client: httpx.Client, url: str, into: list[str]) -> None:
    """Append each `data:` payload of a streamed chat to `into` as it arrives."""
    with client.stream("POST", url, json=CHAT, headers=bearer()) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                into.append(line.removeprefix("data: "))


def stream_chat(client: httpx.Client, url: str, body: dict[str, Any]) -> list[str]:
    with client.stream("POST", url, json=body | {"stream": True}, headers=bearer()) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [payload for _, payload in timed_data_lines(response)]


def anthropic_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        name_line, data_line = block.split("\n")
        events.append((name_line.removeprefix("event: "), json.loads(data_line[6:])))
    return events


def make_wav(seconds: float, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\x00\x00" * int(seconds * rate))
    return buffer.getvalue()


# --- lifecycle and addressing ------------------------------------------------------------


def test_base_urls_follow_each_providers_layout(fake: FakeUpstream) -> None:
    """base_url appends each provider's path prefix to the fake's root URL."""
    assert fake.url.startswith("http://127.0.0.1:")
    assert fake.base_urls() == {
        "openai": fake.url + "/openai/v1",
        "anthropic": fake.url + "/anthropic",
        "groq": fake.url + "/groq/openai/v1",
        "deepseek": fake.url + "/deepseek",
        "nvidia": fake.url + "/nvidia/v1",
        "google": fake.url + "/google/v1beta/openai",
    }
    with pytest.raises(ValueError, match="unknown provider"):
        fake.base_url("mistral")


def test_lifecycle_start_twice_fails_stop_is_idempotent() -> None:
    """A fake serves between start and stop only; stop twice is harmless."""
    fake = FakeUpstream()
    with pytest.raises(RuntimeError):
        _ = fake.url
    fake.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            fake.start()
        url = fake.base_url("deepseek") + "/models"
        assert httpx.get(url, headers=bearer(), timeout=5).status_code == 200
    finally:
        fake.stop()
    fake.stop()
    with pytest.raises(RuntimeError):
        _ = fake.url


def test_settings_are_validated() -> None:
    """chunk_delay below 0 and stream_chunks below 1 are refused."""
    fake = FakeUpstream()
    with pytest.raises(ValueError, match="chunk_delay"):
        fake.chunk_delay = -1
    with pytest.raises(ValueError, match="stream_chunks"):
        fake.stream_chunks = 0


# --- chat on the OpenAI wire -------------------------------------------------------------


@pytest.mark.parametrize("provider", OPENAI_WIRE)
def test_default_chat_answer(fake: FakeUpstream, client: httpx.Client, provider: str) -> None:
    """A plain chat answer echoes the model, greets as the provider and reports usage."""
    response = client.post(chat_url(fake, provider), json=CHAT, headers=bearer())
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o"
    assert body["id"]
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"]["content"] == f"Hello from the fake {provider}."
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (
        100,
        20,
        120,
    )


def test_chat_usage_follows_default_usage(fake: FakeUpstream, client: httpx.Client) -> None:
    """default_usage drives usage; cached_tokens lands in prompt_tokens_details."""
    fake.default_usage = {"prompt_tokens": 50, "completion_tokens": 7, "cached_tokens": 30}
    usage = client.post(chat_url(fake), json=CHAT, headers=bearer()).json()["usage"]
    assert usage["total_tokens"] == 57
    assert usage["prompt_tokens_details"] == {"cached_tokens": 30}


def test_openai_success_carries_rate_limit_headers(
    fake: FakeUpstream, client: httpx.Client
) -> None:
    """OpenAI answers carry x-ratelimit-* headers; Anthropic's carry anthropic-ratelimit-*."""
    response = client.post(chat_url(fake), json=CHAT, headers=bearer())
    assert response.headers["x-ratelimit-remaining-requests"] == "9999"
    assert "x-ratelimit-reset-tokens" in response.headers
    url = fake.base_url("anthropic") + "/v1/messages"
    response = client.post(url, json=ANTHROPIC_BODY, headers=ANTHROPIC_HEADERS)
    assert response.headers["anthropic-ratelimit-requests-remaining"] == "3000"


def test_chat_without_bearer_key_is_rejected(fake: FakeUpstream, client: httpx.Client) -> None:
    """A request with no API key gets the provider's 401, as the real API would."""
    response = client.post(chat_url(fake), json=CHAT)
    assert response.status_code == 401
    assert "didn't provide an API key" in response.json()["error"]["message"]


def test_chat_tool_call_and_tool_choice_none(fake: FakeUpstream, client: httpx.Client) -> None:
    """With tools the answer calls the first tool with {"city": "Paris"}; tool_choice none
    answers with text."""
    body = CHAT | {"tools": [WEATHER_TOOL]}
    choice = client.post(chat_url(fake), json=body, headers=bearer()).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    body = body | {"tool_choice": "none"}
    choice = client.post(chat_url(fake), json=body, headers=bearer()).json()["choices"][0]
    assert choice["message"]["content"] == "Hello from the fake openai."


def test_stream_chunks_arrive_spaced_by_chunk_delay(
    fake: FakeUpstream, client: httpx.Client
) -> None:
    """Streamed content chunks arrive one by one, chunk_delay apart, not in one burst."""
    fake.chunk_delay = 0.1
    body = CHAT | {"stream": True}
    with client.stream("POST", chat_url(fake), json=body, headers=bearer()) as response:
        lines = timed_data_lines(response)
    content = [
        (at, json.loads(payload))
        for at, payload in lines
        if payload != "[DONE]" and json.loads(payload)["choices"][0]["delta"].get("content")
    ]
    assert len(content) == 5
    assert "".join(chunk["choices"][0]["delta"]["content"] for _, chunk in content) == (
        "Hello from the fake openai."
    )
    # Four gaps of 0.1 s between first and last content chunk; demand well over one gap.
    assert content[-1][0] - content[0][0] >= 0.25


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_usage_chunk_only_when_asked(
    fake: FakeUpstream, client: httpx.Client, include_usage: bool
) -> None:
    """The usage-only chunk comes before [DONE] exactly when include_usage is true."""
    body = CHAT | {"stream_options": {"include_usage": include_usage}}
    payloads = stream_chat(client, chat_url(fake), body)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(payload) for payload in payloads[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finals = [
        chunk for chunk in chunks if chunk["choices"] and chunk["choices"][0]["finish_reason"]
    ]
    assert len(finals) == 1
    assert finals[0]["choices"][0]["finish_reason"] == "stop"
    assert finals[0]["usage"] is None
    usage_chunks = [chunk for chunk in chunks if chunk["usage"] is not None]
    if include_usage:
        assert usage_chunks == [chunks[-1]]
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["total_tokens"] == 120
    else:
        assert usage_chunks == []


def test_streamed_tool_call_uses_openai_delta_form(
    fake: FakeUpstream, client: httpx.Client
) -> None:
    """A streamed tool call sends index/id/name first, then argument fragments."""
    payloads = stream_chat(client, chat_url(fake, "groq"), CHAT | {"tools": [WEATHER_TOOL]})
    deltas = [json.loads(p)["choices"][0]["delta"] for p in payloads[:-1]]
    calls = [delta["tool_calls"][0] for delta in deltas if "tool_calls" in delta]
    assert calls[0]["index"] == 0
    assert calls[0]["id"]
    assert calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert json.loads(arguments) == {"city": "Paris"}
    assert json.loads(payloads[-2])["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_sdk_talks_to_the_fake(fake: FakeUpstream) -> None:
    """The official openai SDK parses the fake's chat, stream, base64 embeddings and errors."""
    sdk = openai.OpenAI(api_key="sk-sdk-key", base_url=fake.base_url("openai"), max_retries=0)
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    answer = sdk.chat.completions.create(model="gpt-4o", messages=messages)
    assert answer.choices[0].message.content == "Hello from the fake openai."
    stream = sdk.chat.completions.create(
        model="gpt-4o", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Hello from the fake openai."
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 120
    embedding = sdk.embeddings.create(model="text-embedding-3-small", input="hello")
    assert len(embedding.data[0].embedding) == 8
    fake.script("openai", Scripted.invalid_key("openai"))
    with pytest.raises(openai.AuthenticationError, match="provided: sk-sdk-key"):
        sdk.chat.completions.create(model="gpt-4o", messages=messages)
    sdk.close()


# --- scripts -----------------------------------------------------------------------------


def test_scripts_are_consumed_fifo_then_default(fake: FakeUpstream, client: httpx.Client) -> None:
    """Queued scripts answer the next requests to that provider in order, on any path."""
    fake.script(
        "openai",
        Scripted(status=201, json={"n": 1}),
        Scripted(body="plain", headers={"X-Extra": "yes"}),
    )
    assert fake.pending_scripts("openai") == 2
    first = client.get(fake.base_url("openai") + "/models")
    second = client.post(chat_url(fake), json=CHAT, headers=bearer())
    third = client.post(chat_url(fake), json=CHAT, headers=bearer())
    assert (first.status_code, first.json()) == (201, {"n": 1})
    assert (second.text, second.headers["x-extra"]) == ("plain", "yes")
    assert third.json()["object"] == "chat.completion"
    assert fake.pending_scripts("openai") == 0


def test_scripts_belong_to_their_provider(fake: FakeUpstream, client: httpx.Client) -> None:
    """A script for one provider never answers another provider's request."""
    fake.script("groq", Scripted.server_error("groq"))
    assert client.post(chat_url(fake), json=CHAT, headers=bearer()).status_code == 200
    assert client.post(chat_url(fake, "groq"), json=CHAT, headers=bearer()).status_code == 500


def test_clear_forgets_requests_and_scripts(fake: FakeUpstream, client: httpx.Client) -> None:
    """clear() empties the record and the script queues."""
    fake.script("openai", Scripted.server_error("openai"))
    client.get(fake.base_url("openai") + "/models", headers=bearer())
    fake.script("openai", Scripted.server_error("openai"))
    fake.clear()
    assert fake.requests == []
    assert fake.pending_scripts("openai") == 0


@pytest.mark.parametrize(
    ("provider", "key", "status", "needle"),
    [
        ("openai", LONG_KEY, 401, f"provided: sk-proj-{'*' * (len(LONG_KEY) - 12)}wjh3."),
        ("openai", "kk", 401, "Incorrect API key provided: kk."),
        ("deepseek", LONG_KEY, 401, "Your api key: ****wjh3 is invalid"),
        ("google", LONG_KEY, 400, f"Invalid API key: {LONG_KEY}"),
        ("nvidia", LONG_KEY, 401, '"title":"Unauthorized"'),
        ("anthropic", LONG_KEY, 401, "invalid x-api-key"),
        ("groq", LONG_KEY, 401, "Invalid API Key"),
    ],
)
def test_invalid_key_echoes_the_request_key_like_the_provider(
    fake: FakeUpstream,
    client: httpx.Client,
    provider: str,
    key: str,
    status: int,
    needle: str,
) -> None:
    """invalid_key renders at answer time with the key the request actually carried."""
    fake.script(provider, Scripted.invalid_key(provider))
    headers = {"x-api-key": key} if provider == "anthropic" else bearer(key)
    response = client.post(fake.base_url(provider) + "/anything", json={}, headers=headers)
    assert response.status_code == status
    assert needle in response.text


def test_invalid_key_shapes(fake: FakeUpstream, client: httpx.Client) -> None:
    """Each provider's rejection has its real envelope (OpenAI, Google array, NVIDIA, Anthropic)."""
    bodies = {}
    for provider in ALL_PROVIDERS:
        fake.script(provider, Scripted.invalid_key(provider))
        headers = bearer(LONG_KEY) | {"x-api-key": LONG_KEY}
        bodies[provider] = client.post(fake.base_url(provider) + "/x", headers=headers).json()
    assert bodies["openai"]["error"]["code"] == "invalid_api_key"
    assert bodies["deepseek"]["error"]["type"] == "authentication_error"
    google = bodies["google"][0]["error"]
    assert google["status"] == "INVALID_ARGUMENT"
    assert google["details"][0]["reason"] == "API_KEY_INVALID"
    assert bodies["nvidia"] == {
        "status": 401,
        "title": "Unauthorized",
        "detail": "Authorization failed",
    }
    assert bodies["anthropic"]["type"] == "error"
    assert bodies["anthropic"]["error"]["type"] == "authentication_error"
    assert "request_id" in bodies["anthropic"]


def test_openai_key_echo_rule() -> None:
    """OpenAI shows 8 leading characters, stars and the last 4; short keys in full."""
    assert openai_key_echo("short-key") == "short-key"
    assert openai_key_echo("sk-12345678901234567890") == "sk-12345" + "*" * 11 + "7890"


@pytest.mark.parametrize("provider", ["openai", "anthropic", "deepseek", "nvidia"])
def test_rate_limited_sends_retry_after(
    fake: FakeUpstream, client: httpx.Client, provider: str
) -> None:
    """rate_limited answers 429 with a retry-after header in the provider's error shape."""
    fake.script(provider, Scripted.rate_limited(provider, retry_after=7))
    response = client.post(fake.base_url(provider) + "/x", headers=bearer())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert "429" in response.text or "rate" in response.text.lower()


def test_google_rate_limit_puts_retry_delay_in_the_body(
    fake: FakeUpstream, client: httpx.Client
) -> None:
    """Google's 429 is an array with RESOURCE_EXHAUSTED and RetryInfo.retryDelay, no header."""
    fake.script("google", Scripted.rate_limited("google", retry_after=47))
    response = client.post(chat_url(fake, "google"), json=CHAT, headers=bearer())
    assert response.status_code == 429
    error = response.json()[0]["error"]
    assert error["status"] == "RESOURCE_EXHAUSTED"
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "47s"} in error[
        "details"
    ]


def test_error_shapes_per_provider() -> None:
    """Scripted.error builds OpenAI, Anthropic, Google-array and NVIDIA bodies."""
    assert Scripted.error("groq", 400, "bad", "x").json == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": "x"}
    }
    anthropic = Scripted.error("anthropic", 404, "gone").json
    assert anthropic["error"] == {"type": "not_found_error", "message": "gone"}
    google = Scripted.error("google", 403, "no", "SERVICE_DISABLED").json
    assert google[0]["error"]["status"] == "PERMISSION_DENIED"
    assert google[0]["error"]["details"][0]["reason"] == "SERVICE_DISABLED"
    assert Scripted.error("nvidia", 404, "Function 'x': Not found").json == {
        "status": 404,
        "title": "Not Found",
        "detail": "Function 'x': Not found",
    }
    overloaded = Scripted.overloaded()
    assert overloaded.status == 529
    assert overloaded.json["error"]["type"] == "overloaded_error"
    assert Scripted.server_error("openai").json["error"]["type"] == "server_error"
    with pytest.raises(ValueError, match="unknown provider"):
        Scripted.error("mistral", 400)


def test_status_only_script_gets_the_provider_error_shape(
    fake: FakeUpstream, client: httpx.Client
) -> None:
    """Scripted(status=503) without a body answers in the provider's own error shape."""
    fake.script("nvidia", Scripted(status=503))
    response = client.post(chat_url(fake, "nvidia"), json=CHAT, headers=bearer())
    assert response.status_code == 503
    assert response.json()["title"] == "Service Unavailable"


def test_delay_lets_clients_time_out(fake: FakeUpstream, client: httpx.Client) -> None:
    """A scripted delay holds the answer back long enough for a client timeout."""
    fake.script("openai", Scripted(delay=3.0))
    with pytest.raises(httpx.ReadTimeout):
        client.post(chat_url(fake), json=CHAT, headers=bearer(), timeout=0.3)
    assert len(fake.requests_for("openai")) == 1


def test_cut_after_drops_the_connection(
    fake: FakeUpstream, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """cut_after sends that many content chunks, then closes without [DONE]; quietly."""
    fake.script("openai", Scripted(stream=True, cut_after=2))
    received: list[str] = []
    with caplog.at_level(logging.WARNING), pytest.raises(httpx.RemoteProtocolError):
        collect_data_lines(client, chat_url(fake), received)
    assert len(received) == 3  # the role chunk and two content chunks
    assert "[DONE]" not in received
    assert not [r for r in caplog.records if "without completing" in r.getMessage()]
    assert client.post(chat_url(fake), json=CHAT, headers=bearer()).status_code == 200


# --- Anthropic native --------------------------------------------------------------------


def test_anthropic_message(fake: FakeUpstream, client: httpx.Client) -> None:
    """A Messages answer has Anthropic's shape and usage from anthropic_usage."""
    url = fake.base_url("anthropic") + "/v1/messages"
    body = client.post(url, json=ANTHROPIC_BODY, headers=ANTHROPIC_HEADERS).json()
    assert body["type"] == "message"
    assert body["id"].startswith("msg_")
    assert body["model"] == "claude-sonnet-4-5"
    assert body["content"] == [{"type": "text", "text": "Hello from the fake anthropic."}]
    assert body["stop_reason"] == "end_turn"
    assert body["stop_sequence"] is None
    assert body["usage"] == {
        "input_tokens": 100,
        "output_tokens": 20,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def test_anthropic_requires_key_and_version(fake: FakeUpstream, client: httpx.Client) -> None:
    """Without anthropic-version the answer is 400; without x-api-key 401."""
    url = fake.base_url("anthropic") + "/v1/messages"
    no_version = client.post(url, json=ANTHROPIC_BODY, headers={"x-api-key": "k"})
    assert no_version.status_code == 400
    assert no_version.json()["error"]["type"] == "invalid_request_error"
    no_key = client.post(url, json=ANTHROPIC_BODY, headers={"anthropic-version": "2023-06-01"})
    assert no_key.status_code == 401


def test_anthropic_tool_use(fake: FakeUpstream, client: httpx.Client) -> None:
    """With tools the Message holds a text block and a tool_use block; stop_reason tool_use."""
    url = fake.base_url("anthropic") + "/v1/messages"
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    body = client.post(url, json=ANTHROPIC_BODY | {"tools": tools}, headers=ANTHROPIC_HEADERS)
    message = body.json()
    assert [block["type"] for block in message["content"]] == ["text", "tool_use"]
    assert message["content"][1]["input"] == {"city": "Paris"}
    assert message["content"][1]["name"] == "get_weather"
    assert message["stop_reason"] == "tool_use"


def test_anthropic_stream_event_sequence(fake: FakeUpstream, client: httpx.Client) -> None:
    """The stream follows message_start .. message_stop, with cumulative message_delta usage."""
    fake.anthropic_usage = fake.anthropic_usage | {"cache_read_input_tokens": 40}
    url = fake.base_url("anthropic") + "/v1/messages"
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    body = ANTHROPIC_BODY | {"stream": True, "tools": tools}
    try:
        response = client.post(url, json=body, headers=ANTHROPIC_HEADERS)
    finally:
        fake.anthropic_usage = fake.anthropic_usage | {"cache_read_input_tokens": 0}
    events = anthropic_events(response.text)
    names = [name for name, _ in events]
    assert all(name == data["type"] for name, data in events)
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    assert "ping" in names
    start_usage = events[0][1]["message"]["usage"]
    assert start_usage["output_tokens"] == 1
    assert start_usage["cache_read_input_tokens"] == 40
    text = "".join(
        data["delta"]["text"]
        for name, data in events
        if data.get("delta", {}).get("type") == "text_delta"
    )
    assert text == "Hello from the fake anthropic."
    tool_json = "".join(
        data["delta"]["partial_json"]
        for _, data in events
        if data.get("delta", {}).get("type") == "input_json_delta"
    )
    assert json.loads(tool_json) == {"city": "Paris"}
    tool_start = [d for n, d in events if n == "content_block_start" and d["index"] == 1]
    assert tool_start[0]["content_block"]["type"] == "tool_use"
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] == 20


def test_anthropic_error_after_a_200(fake: FakeUpstream, client: httpx.Client) -> None:
    """anthropic_error_after sends an overloaded_error event after N text deltas, status 200."""
    fake.script("anthropic", Scripted(stream=True, anthropic_error_after=2))
    url = fake.base_url("anthropic") + "/v1/messages"
    response = client.post(url, json=ANTHROPIC_BODY, headers=ANTHROPIC_HEADERS)
    assert response.status_code == 200
    events = anthropic_events(response.text)
    deltas = [name for name, _ in events if name == "content_block_delta"]
    assert len(deltas) == 2
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )


def test_anthropic_models(fake: FakeUpstream, client: httpx.Client) -> None:
    """GET /v1/models answers in Anthropic's paginated shape."""
    url = fake.base_url("anthropic") + "/v1/models"
    page = client.get(url, headers=ANTHROPIC_HEADERS).json()
    assert page["has_more"] is False
    assert page["data"][0]["type"] == "model"
    assert page["first_id"] == page["data"][0]["id"]


# --- other endpoints ---------------------------------------------------------------------


def test_embeddings_base64_matches_floats(fake: FakeUpstream, client: httpx.Client) -> None:
    """base64 embeddings decode (little-endian float32) to the same deterministic floats."""
    url = fake.base_url("openai") + "/embeddings"
    body = {"model": "text-embedding-3-small", "input": ["hello world", "three words here"]}
    floats = client.post(url, json=body, headers=bearer()).json()
    encoded = client.post(url, json=body | {"encoding_format": "base64"}, headers=bearer()).json()
    assert floats["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    for plain, packed in zip(floats["data"], encoded["data"], strict=True):
        assert len(plain["embedding"]) == 8
        raw = base64.b64decode(packed["embedding"])
        assert list(struct.unpack("<8f", raw)) == plain["embedding"]
    again = client.post(url, json=body, headers=bearer()).json()
    assert again["data"] == floats["data"]


def test_transcription_reports_wav_duration(fake: FakeUpstream, client: httpx.Client) -> None:
    """A 2-second WAV yields duration 2.0 (verbose_json) and whisper-1 duration usage (json)."""
    url = fake.base_url("openai") + "/audio/transcriptions"
    files = {"file": ("speech.wav", make_wav(2.0), "audio/wav")}
    verbose = client.post(
        url,
        files=files,
        data={"model": "whisper-1", "response_format": "verbose_json"},
        headers=bearer(),
    ).json()
    assert verbose["duration"] == 2.0
    plain = client.post(url, files=files, data={"model": "whisper-1"}, headers=bearer()).json()
    assert plain["text"]
    assert plain["usage"] == {"type": "duration", "seconds": 2.0}
    recorded = fake.requests_for("openai")[-1]
    assert recorded.content_type == "multipart/form-data"
    assert recorded.form["file"][0].filename == "speech.wav"
    assert recorded.form_value("model") == "whisper-1"


def test_transcription_text_formats_and_unknown_audio(
    fake: FakeUpstream, client: httpx.Client
) -> None:
    """text/srt answer plain text; a non-WAV file has no duration and no usage."""
    url = fake.base_url("openai") + "/audio/transcriptions"
    mp3 = {"file": ("a.mp3", b"ID3 not really audio", "audio/mpeg")}
    text = client.post(
        url, files=mp3, data={"model": "whisper-1", "response_format": "text"}, headers=bearer()
    )
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text.strip() == "This is a fake transcription."
    verbose = client.post(
        url,
        files=mp3,
        data={"model": "whisper-1", "response_format": "verbose_json"},
        headers=bearer(),
    ).json()
    assert "duration" not in verbose
    assert "usage" not in verbose
    srt = client.post(
        url, files=mp3, data={"model": "whisper-1", "response_format": "srt"}, headers=bearer()
    )
    assert srt.text.startswith("1\n00:00:00,000 --> ")


@pytest.mark.parametrize(
    ("audio_format", "content_type"), [("mp3", "audio/mpeg"), ("wav", "audio/wav")]
)
def test_speech_is_binary_audio(
    fake: FakeUpstream, client: httpx.Client, audio_format: str, content_type: str
) -> None:
    """Speech answers audio bytes whose length grows with the input, typed by format."""
    url = fake.base_url("openai") + "/audio/speech"
    body = {"model": "tts-1", "voice": "alloy", "response_format": audio_format}
    short = client.post(url, json=body | {"input": "hi"}, headers=bearer())
    long = client.post(url, json=body | {"input": "hi" * 10}, headers=bearer())
    assert short.headers["content-type"] == content_type
    assert len(long.content) > len(short.content) > 0


def test_images_moderations_and_models(fake: FakeUpstream, client: httpx.Client) -> None:
    """Images honour n and response_format (gpt-image adds usage); moderations never flag."""
    base = fake.base_url("openai")
    dalle = client.post(
        base + "/images/generations",
        json={"model": "dall-e-3", "prompt": "a cat", "n": 2},
        headers=bearer(),
    ).json()
    assert len(dalle["data"]) == 2
    assert "url" in dalle["data"][0]
    assert "usage" not in dalle
    gpt_image = client.post(
        base + "/images/generations",
        json={"model": "gpt-image-1", "prompt": "a cat"},
        headers=bearer(),
    ).json()
    assert base64.b64decode(gpt_image["data"][0]["b64_json"]).startswith(b"\x89PNG")
    assert gpt_image["usage"]["output_tokens"] > 0
    moderation = client.post(
        base + "/moderations", json={"input": ["a", "b"]}, headers=bearer()
    ).json()
    assert [result["flagged"] for result in moderation["results"]] == [False, False]
    models = client.get(base + "/models", headers=bearer()).json()
    assert "gpt-4o" in [model["id"] for model in models["data"]]


def test_unknown_paths_answer_404_in_provider_shape(
    fake: FakeUpstream, client: httpx.Client
) -> None:
    """Unknown or unsupported paths get a 404 shaped like the provider's errors."""
    nvidia = client.post(fake.base_url("nvidia") + "/nope", headers=bearer())
    assert nvidia.status_code == 404
    assert nvidia.json()["title"] == "Not Found"
    deepseek = client.post(fake.base_url("deepseek") + "/embeddings", json={}, headers=bearer())
    assert deepseek.status_code == 404
    assert "error" in deepseek.json()
    google = client.get(fake.base_url("google") + "/nope", headers=bearer())
    assert google.json()[0]["error"]["status"] == "NOT_FOUND"
    stray = client.get(fake.url + "/elsewhere")
    assert stray.status_code == 404
    assert fake.requests[-1].provider == "unknown"


# --- recording ---------------------------------------------------------------------------


def test_requests_record_keys_headers_and_bodies(fake: FakeUpstream, client: httpx.Client) -> None:
    """Each request is recorded in order with its key, lower-case headers, path and JSON."""
    client.post(chat_url(fake, "groq") + "?trace=1", json=CHAT, headers=bearer("gsk_tenant"))
    url = fake.base_url("anthropic") + "/v1/messages"
    client.post(url, json=ANTHROPIC_BODY, headers=ANTHROPIC_HEADERS)
    groq, anthropic = fake.requests
    assert (groq.provider, groq.method, groq.path, groq.query) == (
        "groq",
        "POST",
        "/chat/completions",
        "trace=1",
    )
    assert groq.api_key == "gsk_tenant"
    assert groq.headers["authorization"] == "Bearer gsk_tenant"
    assert groq.json == CHAT
    assert json.loads(groq.body) == CHAT
    assert groq.content_type == "application/json"
    assert anthropic.api_key == "sk-ant-test-key"
    assert anthropic.path == "/v1/messages"
    assert fake.requests_for("anthropic") == [anthropic]
    assert "gsk_tenant" not in repr(groq)


# --- sans-I/O helpers --------------------------------------------------------------------


def test_split_text_keeps_every_character() -> None:
    """split_text cuts into the asked number of pieces that join back to the text."""
    assert split_text("abcdefg", 3) == ["abc", "de", "fg"]
    assert "".join(split_text("Hello", 9)) == "Hello"
    assert split_text("x", 0) == ["x"]


def test_parse_multipart_keeps_bytes_exact() -> None:
    """Multipart parts keep binary data byte for byte, with names and filenames."""
    payload = bytes(range(256)) + b"\r\n--not-a-boundary\r\n"
    request = httpx.Request(
        "POST", "http://x", files={"file": ("a.bin", payload)}, data={"model": "m"}
    )
    parts = parse_multipart(request.headers["content-type"], request.read())
    by_name = {part.name: part for part in parts}
    assert by_name["file"].data == payload
    assert by_name["file"].filename == "a.bin"
    assert by_name["model"].text == "m"
    assert parse_multipart("application/json", b"{}") == []


# --- OpenAI Responses API -----------------------------------------------------------------

RESPONSES_TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


def test_responses_plain_text_and_tool_call(fake: FakeUpstream) -> None:
    """The openai SDK parses the fake's /responses answers: text, usage, a function call."""
    sdk = openai.OpenAI(api_key="sk-sdk-key", base_url=fake.base_url("openai"), max_retries=0)
    answer = sdk.responses.create(model="gpt-4o", input="hi", metadata={"k": "v"})
    assert answer.output_text == "Hello from the fake openai."
    assert answer.status == "completed" and answer.metadata == {"k": "v"}
    assert answer.usage is not None
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (100, 20)
    called = sdk.responses.create(model="gpt-4o", input="weather?", tools=[RESPONSES_TOOL])
    call = called.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    none = sdk.responses.create(
        model="gpt-4o", input="hi", tools=[RESPONSES_TOOL], tool_choice="none"
    )
    assert none.output[0].type == "message"
    recorded = fake.requests[-1]
    assert (recorded.path, recorded.json["tool_choice"]) == ("/responses", "none")
    sdk.close()


@pytest.mark.parametrize("tools", [[], [RESPONSES_TOOL]])
def test_responses_stream_event_sequence(fake: FakeUpstream, tools: list[Any]) -> None:
    """Streamed /responses follow OpenAI's event order; the SDK's stream helper rebuilds it."""
    sdk = openai.OpenAI(api_key="sk-sdk-key", base_url=fake.base_url("openai"), max_retries=0)
    with sdk.responses.stream(model="gpt-4o", input="hi", tools=tools) as stream:
        events = list(stream)
        final = stream.get_final_response()
    names = [event.type for event in events]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    middle = (
        ["response.content_part.added"]
        + ["response.output_text.delta"] * 5
        + ["response.output_text.done", "response.content_part.done"]
        if not tools
        else ["response.function_call_arguments.delta"] * 5
        + ["response.function_call_arguments.done"]
    )
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        *middle,
        "response.output_item.done",
        "response.completed",
    ]
    assert final.usage is not None and final.usage.total_tokens == 120
    if tools:
        assert final.output[0].type == "function_call"
    else:
        assert final.output_text == "Hello from the fake openai."
    sdk.close()


def test_responses_raw_stream_has_event_lines_and_no_done(
    fake: FakeUpstream, client: httpx.Client
) -> None:
    """Each SSE event names its type on an `event:` line; the stream ends without [DONE]."""
    body = {"model": "gpt-4o", "input": "hi", "stream": True}
    answer = client.post(
        fake.base_url("openai") + "/responses", json=body, headers={"authorization": "Bearer k"}
    )
    assert answer.headers["content-type"].startswith("text/event-stream")
    blocks = [block for block in answer.text.split("\n\n") if block]
    assert all(block.startswith("event: response.") for block in blocks)
    assert "[DONE]" not in answer.text


@pytest.mark.parametrize(
    ("body", "message"),
    [({"input": "hi"}, "'model'"), ({"model": "gpt-4o"}, "'input'")],
)
def test_responses_missing_parameters_are_400(
    fake: FakeUpstream, client: httpx.Client, body: dict[str, Any], message: str
) -> None:
    """Missing model or input is OpenAI's 400; other providers have no /responses (404)."""
    url = fake.base_url("openai") + "/responses"
    answer = client.post(url, json=body, headers={"authorization": "Bearer k"})
    assert answer.status_code == 400 and message in answer.json()["error"]["message"]
    groq = client.post(
        fake.base_url("groq") + "/responses", json=body, headers={"authorization": "Bearer k"}
    )
    assert groq.status_code == 404

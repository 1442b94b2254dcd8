"""The cache's sans-I/O parts: request keys, controls, settings, what is storable, streams."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from byok_middleware.cache import (
    CacheControl,
    CacheEntry,
    CacheMode,
    CacheSettings,
    StreamAssembler,
    is_storable,
    parse_control,
    replay_as_sse,
    request_keys,
    status_header,
)
from byok_middleware.errors import ConfigurationError, InvalidRequest

BASE: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "temperature": 0.2,
}


def key_of(body: dict[str, Any], tenant: str = "t1", **kw: Any) -> str:
    return request_keys(tenant, "openai", "gpt-4o", body, **kw).exact


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"temperature": 0.3}, "temperature"),
        ({"top_p": 0.5}, "top_p"),
        ({"max_tokens": 10}, "max_tokens"),
        ({"seed": 7}, "seed"),
        ({"stop": ["\n"]}, "stop"),
        ({"n": 2}, "n"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "none"}, "tool_choice"),
        ({"logprobs": True}, "logprobs"),
        ({"messages": [{"role": "user", "content": "What is the capital of Spain?"}]}, "text"),
        ({"messages": [{"role": "system", "content": "What is the capital of France?"}]}, "role"),
    ],
)
def test_a_parameter_that_changes_the_answer_changes_the_key(
    change: dict[str, Any], name: str
) -> None:
    """Every field that can change the answer is part of the key."""
    assert key_of({**BASE, **change}) != key_of(BASE), name


@pytest.mark.parametrize(
    "change",
    [
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"user": "someone-else"},
        {"metadata": {"trace": "1"}, "store": True},
        {"model": "openai/gpt-4o"},  # the resolved provider/model is keyed, not the alias
        {"temperature": 0.2000},
        {"n": 1},
        {"seed": None},
    ],
)
def test_delivery_and_labels_do_not_change_the_key(change: dict[str, Any]) -> None:
    """stream, stream_options, user and other labels leave the key as it is."""
    assert key_of({**BASE, **change}) == key_of(BASE)


def test_equivalent_spellings_share_a_key() -> None:
    """Key order, max_completion_tokens vs max_tokens, a string stop and 1 vs 1.0 are equal."""
    reordered = dict(reversed(list(BASE.items())))
    assert key_of(reordered) == key_of(BASE)
    assert key_of({**BASE, "max_completion_tokens": 5}) == key_of({**BASE, "max_tokens": 5})
    assert key_of({**BASE, "stop": "END"}) == key_of({**BASE, "stop": ["END"]})
    assert key_of({**BASE, "temperature": 1}) == key_of({**BASE, "temperature": 1.0})
    assert key_of({**BASE, "logprobs": True}) != key_of({**BASE, "logprobs": 1})


def test_tenant_provider_model_and_kind_are_part_of_the_key() -> None:
    """Two tenants (or models, or endpoints) never share a key for the same body."""
    base = request_keys("t1", "openai", "gpt-4o", BASE).exact
    assert request_keys("t2", "openai", "gpt-4o", BASE).exact != base
    assert request_keys("t1", "groq", "gpt-4o", BASE).exact != base
    assert request_keys("t1", "openai", "gpt-4o-mini", BASE).exact != base
    assert request_keys("t1", "openai", "gpt-4o", BASE, kind="embeddings").exact != base
    # No ambiguity from joining: ("t1", "openai/x") vs ("t1/openai", "x").
    assert request_keys("a", "b/c", "d", BASE).exact != request_keys("a/b", "c", "d", BASE).exact


def test_semantic_split_keeps_text_out_of_the_group() -> None:
    """Paraphrased text shares a group; any non-text parameter or the embedder splits it."""
    keys = request_keys("t1", "openai", "gpt-4o", BASE, semantic=True, embedder="e")
    assert keys.semantic and keys.text is not None and "capital of France" in keys.text
    other_text = {**BASE, "messages": [BASE["messages"][0], {"role": "user", "content": "Hi"}]}
    same = request_keys("t1", "openai", "gpt-4o", other_text, semantic=True, embedder="e")
    assert same.group == keys.group and same.exact != keys.exact
    for change in ({"temperature": 0.9}, {"max_tokens": 3}):
        moved = request_keys("t1", "openai", "gpt-4o", {**BASE, **change}, semantic=True)
        assert moved.group != keys.group
    other_embedder = request_keys("t1", "openai", "gpt-4o", BASE, semantic=True, embedder="f")
    assert other_embedder.group != keys.group
    assert request_keys("t2", "openai", "gpt-4o", BASE, semantic=True, embedder="e").group != (
        keys.group
    )


@pytest.mark.parametrize(
    "change",
    [
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"n": 2},
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]},
                {"role": "tool", "tool_call_id": "c", "content": "42"},
            ]
        },
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
    ],
)
def test_tools_and_non_text_requests_bypass_the_semantic_layer(change: dict[str, Any]) -> None:
    """Tools, tool messages, n > 1 and non-text content get an exact key only."""
    keys = request_keys("t1", "openai", "gpt-4o", {**BASE, **change}, semantic=True)
    assert not keys.semantic and keys.text is None


def test_control_header_values() -> None:
    """skip, refresh and no-store map to lookup/store; anything else is a 400 naming the header."""
    assert parse_control(None) is CacheControl.DEFAULT
    assert parse_control(" Skip ") is CacheControl.SKIP
    assert (parse_control("refresh").lookup, parse_control("refresh").store) == (False, True)
    assert (parse_control("no-store").lookup, parse_control("no-store").store) == (True, False)
    for bad in ("bogus", "default"):
        with pytest.raises(InvalidRequest) as caught:
            parse_control(bad)
        assert caught.value.status_code == 400 and caught.value.param == "x-byok-cache"


def test_response_header_value() -> None:
    """hit, miss, skip; no header at all with the cache off."""
    assert status_header(CacheMode.EXACT, CacheControl.DEFAULT, hit=True) == "hit"
    assert status_header(CacheMode.EXACT, CacheControl.NO_STORE, hit=False) == "miss"
    assert status_header(CacheMode.SEMANTIC, CacheControl.SKIP, hit=False) == "skip"
    assert status_header(CacheMode.EXACT, CacheControl.REFRESH, hit=False) == "skip"
    assert status_header(CacheMode.OFF, CacheControl.DEFAULT, hit=False) is None


def test_settings_from_env() -> None:
    """Defaults, every variable read, and a clear error naming a bad one."""
    default = CacheSettings.from_env({})
    assert default.mode is CacheMode.OFF and default.ttl_seconds == 86400
    assert default.min_similarity == 0.95
    assert default.embedding_model == "openai/text-embedding-3-small"
    assert default.store_delay_seconds == 0.05
    settings = CacheSettings.from_env(
        {
            "BYOK_CACHE": "Semantic",
            "BYOK_CACHE_TTL": "60",
            "BYOK_CACHE_MIN_SIMILARITY": "0.9",
            "BYOK_CACHE_EMBEDDING_MODEL": "google/text-embedding-004",
            "BYOK_CACHE_MAX_BYTES": "1048576",
            "BYOK_CACHE_STORE_DELAY": "0",
        }
    )
    assert settings.store_delay_seconds == 0
    assert settings.mode is CacheMode.SEMANTIC and settings.ttl_seconds == 60
    assert settings.min_similarity == 0.9 and settings.max_bytes == 1048576
    assert settings.embedding_model == "google/text-embedding-004"
    for env, name in (
        ({"BYOK_CACHE": "always"}, "BYOK_CACHE"),
        ({"BYOK_CACHE_TTL": "-1"}, "BYOK_CACHE_TTL"),
        ({"BYOK_CACHE_TTL": "soon"}, "BYOK_CACHE_TTL"),
        ({"BYOK_CACHE_MIN_SIMILARITY": "1.5"}, "BYOK_CACHE_MIN_SIMILARITY"),
        ({"BYOK_CACHE_EMBEDDING_MODEL": "ada"}, "BYOK_CACHE_EMBEDDING_MODEL"),
        ({"BYOK_CACHE_STORE_DELAY": "61"}, "BYOK_CACHE_STORE_DELAY"),
        ({"BYOK_CACHE_STORE_DELAY": "-1"}, "BYOK_CACHE_STORE_DELAY"),
    ):
        with pytest.raises(ConfigurationError, match=name):
            CacheSettings.from_env(env)


def completion(finish: str | None = "stop", **message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris.", "refusal": None, **message},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
    }


def test_only_good_answers_are_storable() -> None:
    """200, complete, finish stop/tool_calls and no refusal; never errors or cut answers."""
    assert is_storable("chat", 200, completion())
    assert is_storable("chat", 200, completion("tool_calls"))
    assert not is_storable("chat", 500, completion())
    assert not is_storable("chat", 200, None)  # a cut stream
    assert not is_storable("chat", 200, completion("length"))
    assert not is_storable("chat", 200, completion("content_filter"))
    assert not is_storable("chat", 200, completion(None))
    assert not is_storable("chat", 200, completion(refusal="I can't help with that."))
    assert not is_storable("chat", 200, {"error": {"message": "x"}})
    assert not is_storable("chat", 200, {**completion(), "choices": []})
    assert is_storable("embeddings", 200, {"data": [{"embedding": [0.1], "index": 0}]})
    assert not is_storable("embeddings", 200, {"data": []})


def chunks(events: list[bytes]) -> list[dict[str, Any]]:
    assert events[-1] == b"data: [DONE]\n\n"
    out = []
    for event in events[:-1]:
        assert event.startswith(b"data: ") and event.endswith(b"\n\n")
        out.append(orjson.loads(event[6:]))
    return out


def entry_of(response: dict[str, Any]) -> CacheEntry:
    return CacheEntry("chat", response, Decimal("0.0012"), "openai", "gpt-4o", 1700000000.0)


META = {"cache_hit": True, "request_id": "req-2", "cost_usd": 0.0}


@pytest.mark.parametrize("include_usage", [False, True])
def test_replay_parses_as_openai_chunks_and_reassembles(include_usage: bool) -> None:
    """Replayed events are ChatCompletionChunks; usage only when asked; the metadata on the
    finish chunk (and on the usage chunk, last, when asked)."""
    original = completion()
    parsed = chunks(replay_as_sse(entry_of(original), include_usage, "xantly_metadata", META))
    models = [ChatCompletionChunk.model_validate(chunk) for chunk in parsed]
    assert models[0].choices[0].delta.role == "assistant"
    assert "".join(m.choices[0].delta.content or "" for m in models if m.choices) == "Paris."
    assert [m.choices[0].finish_reason for m in models if m.choices][-1] == "stop"
    assert parsed[-1]["xantly_metadata"] == META
    finish = [chunk for chunk in parsed if chunk["choices"]][-1]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert finish["xantly_metadata"] == META
    with_usage = [chunk for chunk in parsed if chunk.get("usage")]
    if include_usage:
        assert with_usage == [parsed[-1]] and models[-1].usage is not None
        assert models[-1].usage.total_tokens == 14
    else:
        assert with_usage == [] and all("usage" not in chunk for chunk in parsed)
    assembler = StreamAssembler()
    for chunk in parsed:
        assembler.feed(chunk)
    rebuilt = assembler.result(completed=True)
    assert rebuilt is not None
    assert rebuilt["choices"] == original["choices"]
    ChatCompletion.model_validate(rebuilt)


def tool_stream() -> list[bytes]:
    head = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return orjson.dumps({**head, "choices": [choice]})

    call = {"index": 0, "id": "call_1", "type": "function"}
    return [
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [{**call, "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({}, "tool_calls"),
        orjson.dumps(
            {
                **head,
                "choices": [],
                "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
            }
        ),
    ]


def test_a_streamed_tool_call_is_assembled_and_replayed() -> None:
    """Tool-call fragments join into one call; the replay carries it back intact."""
    assembler = StreamAssembler()
    for payload in tool_stream():
        assembler.feed_data(payload)
    assert assembler.result(completed=False) is None  # no [DONE]: never stored
    result = assembler.result(completed=True)
    assert result is not None and is_storable("chat", 200, result)
    message = ChatCompletion.model_validate(result).choices[0].message
    assert message.tool_calls is not None and message.content is None
    assert message.tool_calls[0].function.arguments == '{"city":"Paris"}'  # type: ignore[union-attr]
    assert result["usage"]["total_tokens"] == 12
    replayed = chunks(replay_as_sse(entry_of(result), False, "meta", META))
    again = StreamAssembler()
    for chunk in replayed:
        ChatCompletionChunk.model_validate(chunk)
        again.feed(chunk)
    assert (again.result(completed=True) or {})["choices"] == result["choices"]


def test_an_error_event_or_garbage_makes_the_stream_unstorable() -> None:
    """An error event mid-stream, or unparsable data, leaves nothing to store."""
    for bad in (b'{"error": {"message": "overloaded"}}', b"not json"):
        assembler = StreamAssembler()
        assembler.feed_data(tool_stream()[0])
        assembler.feed_data(bad)
        assert assembler.result(completed=True) is None

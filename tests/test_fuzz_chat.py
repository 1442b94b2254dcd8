"""Property-based tests of the proxy's request parsing: random chat bodies get a 2xx or a 4xx,
never a 5xx, and reach the upstream only when the gateway accepted them."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.test_fuzz_management import FUZZ, Harness, field_values, harness, json_values

__all__ = ["harness"]  # the module-scoped fixture, shared with the management fuzz tests

MODELS = [
    "openai/gpt-4o",
    "groq/llama-3.3-70b-versatile",
    "deepseek/deepseek-chat",
    "gpt-4o",
    "nvidia/meta/llama-3.1-8b-instruct",
    "mistral/large",
    "openai/",
    "/gpt-4o",
    "",
    "x" * 300,
]
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "system", "assistant", "tool", "x"]),
            "content": st.one_of(st.text(max_size=20), json_values),
        }
    ),
    max_size=3,
)
chat_bodies = st.one_of(
    st.fixed_dictionaries(
        {"model": st.sampled_from(MODELS) | field_values, "messages": messages | field_values},
        optional={
            "stream": st.booleans() | field_values,
            "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()})
            | field_values,
            "temperature": field_values,
            "max_tokens": field_values,
            "tools": field_values,
            "n": field_values,
        },
    ),
    st.dictionaries(
        st.sampled_from(["model", "messages", "stream", "stream_options", "x"]),
        field_values,
        max_size=5,
    ),
    json_values,
)


@FUZZ
@given(body=chat_bodies)
def test_random_chat_bodies_get_2xx_or_4xx_and_reach_upstream_only_when_accepted(
    harness: Harness, body: Any
) -> None:
    """POST /chat/completions with random JSON: never a 5xx; an upstream call iff a 2xx."""
    calls = len(harness.upstream)
    response = harness.request(
        "POST",
        "/v1/chat/completions",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code < 500, response.text
    went_upstream = len(harness.upstream) > calls
    if 200 <= response.status_code < 300:
        assert went_upstream
    else:
        assert not went_upstream, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_bytes_are_a_clear_400(harness: Harness, raw: bytes) -> None:
    """Bytes that are not a JSON object are refused before anything else happens."""
    calls = len(harness.upstream)
    response = harness.request(
        "POST", "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code < 500, response.text
    assert len(harness.upstream) == calls or response.status_code == 200

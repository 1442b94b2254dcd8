"""SSE framing on bytes: split anywhere, pass through byte for byte."""

from __future__ import annotations

import itertools

import pytest

from byok_middleware.proxy.rewriters import (
    OpenAIChatPassthrough,
    _has_usage,
    _is_error,
    _is_plain_block,
)
from byok_middleware.proxy.sse import SSESplitter, data_of, encode_event, parse_event

STREAM = (
    b'data: {"a":1}\n\n'
    b": keep-alive\n\n"
    b'event: message_start\ndata: {"type":"message_start"}\n\n'
    b'data: {"b":2}\r\n\r\n'
    b"data: line1\ndata: line2\n\n"
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 1000])
def test_events_survive_any_chunking(size: int) -> None:
    """However the bytes are cut, the same raw events come out, in order and unchanged."""
    splitter = SSESplitter()
    events: list[bytes] = []
    for start in range(0, len(STREAM), size):
        events.extend(splitter.feed(STREAM[start : start + size]))
    assert b"".join(events) == STREAM
    assert splitter.flush() == b""
    assert len(events) == 6


def test_parse_event_fields() -> None:
    """Names, joined data lines, comments and CRLF."""
    named = parse_event(b'event: ping\ndata: {"type": "ping"}\n\n')
    assert named is not None and (named.event, named.data) == ("ping", b'{"type": "ping"}')
    multi = parse_event(b"data: line1\ndata: line2\n\n")
    assert multi is not None and multi.data == b"line1\nline2"
    crlf = parse_event(b"data: x\r\n\r\n")
    assert crlf is not None and crlf.data == b"x"
    assert parse_event(b": keep-alive\n\n") is None
    assert parse_event(b"\n\n") is None


def test_unterminated_tail_is_kept_until_flush() -> None:
    """A partial event waits for its end; flush hands it back."""
    splitter = SSESplitter()
    assert splitter.feed(b"data: partial") == []
    assert splitter.flush() == b"data: partial"


def test_encode_event_round_trips() -> None:
    """encode_event produces what parse_event reads."""
    event = parse_event(encode_event(b'{"x":1}', "message_delta"))
    assert event is not None and (event.event, event.data) == ("message_delta", b'{"x":1}')


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"choices":[],"usage":{"prompt_tokens":1}}', True),
        (b'{"choices":[],"usage": {"prompt_tokens":1}}', True),
        (b'{"choices":[{"delta":{}}],"usage":null}', False),
        (b'{"choices":[{"delta":{}}],"usage": null}', False),
        (b'{"choices":[{"delta":{"content":"x"}}]}', False),
    ],
)
def test_usage_byte_check(data: bytes, expected: bool) -> None:
    """Only chunks with a non-null usage are parsed."""
    assert _has_usage(data) is expected


def test_error_byte_check() -> None:
    """A top-level error object is recognised; content mentioning 'error' deep inside is not."""
    assert _is_error(b'{"error":{"message":"x"}}')
    assert _is_error(b'{"id":"chatcmpl-123456789","object":"error","error":{"message":"x"}}')
    assert not _is_error(
        b'{"id":"c","object":"chat.completion.chunk","choices":[{"delta":'
        b'{"content":"\\"error\\""}}]}'
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'data: {"a":1}\n\n', b'{"a":1}'),
        (b"data: [DONE]\n\n", b"[DONE]"),
        (b"data: line1\ndata: line2\n\n", None),  # multi-line: the slow path
        (b"event: ping\ndata: {}\n\n", None),
        (b"data: x\r\n\r\n", None),
        (b": keep-alive\n\n", None),
    ],
)
def test_fast_data_path_agrees_with_the_parser(raw: bytes, expected: bytes | None) -> None:
    """data_of handles the one-line shape and declines the rest, which parse_event reads."""
    assert data_of(raw) == expected
    if expected is not None:
        event = parse_event(raw)
        assert event is not None and event.data == expected


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        (b'data: {"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}\n\n', True),
        (b'data: {"choices":[{"delta":{"content":"Hi"}}],"usage":null}\n\n', True),
        (b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\n', False),
        (b'data: {"choices":[],"usage":{"prompt_tokens":1}}\n\n', False),
        (b'data: {"error":{"message":"boom"}}\n\n', False),
        (b'data: {"object":"something.else"}\n\n', False),  # not a chat chunk: redacted
        (b'data: {"choices":[{"delta":{"content":"a"}}]}\r\n\r\n', False),
        (b'data: {"choices":[]}\ndata: {"choices":[]}\n\n', False),  # two data lines
        (b": keep-alive\n\n", False),
        (b"data: [DONE]\n\n", False),
        # Spaced JSON is read event by event (the same frames, without the shortcut).
        (b'data: {"choices": [{"delta":{"content":"Hi"},"finish_reason": null}]}\n\n', False),
    ],
)
def test_only_plain_chat_chunks_take_the_pass_through_fast_path(raw: bytes, plain: bool) -> None:
    """The byte checks let through exactly the events the full path would relay unchanged."""
    assert _is_plain_block(raw) is plain

    def rewriter() -> OpenAIChatPassthrough:
        return OpenAIChatPassthrough(
            provider="openai", model="gpt-4o", field="x_byok", include_usage=False, redact=str.upper
        )

    one = rewriter()
    assert rewriter().feed_many([raw]) == one.feed(raw)  # the inlined checks agree
    assert rewriter().unchanged(raw) == (len(raw) if plain else 0)
    if plain:
        assert rewriter().feed(raw) == [raw]


_KINDS = [
    b'data: {"id":"c","choices":[{"delta":{"content":"Hi"},"finish_reason":null}],'
    b'"usage":null}\n\n',
    b'data: {"id":"c","choices":[{"delta":{"content":"choices"},"finish_reason":null}]}\n\n',
    b'data: {"id":"c","choices": [{"delta":{"content":"x"},"finish_reason": null}]}\n\n',
    b'data: {"id":"c","choices":[{"delta":{},"finish_reason":"stop"}]}\n\n',
    b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n',
    b'data: {"error":{"message":"bad key sk-live-1234"}}\n\n',
    b'data: {"detail":"bad key sk-live-1234"}\n\n',
    b": keep-alive\n\n",
    b"event: ping\ndata: {}\n\n",
    b'data: {"id":"c","choices":[{"delta":{"content":"a"},"finish_reason":null}]}\r\r',
    b"\n\n",
    b"data: [DONE]\n\n",
]


def _relayed(read: bytes, *, shortcut: bool) -> tuple[bytes, OpenAIChatPassthrough]:
    """What the relay shell sends for ``read``: with ``shortcut``, the bytes ``unchanged`` lets
    through as they came and the rest event by event; without it, every event through ``feed``."""
    rewriter = OpenAIChatPassthrough(
        provider="openai", model="gpt-4o", field="x_byok", include_usage=True, redact=str.upper
    )
    passed = rewriter.unchanged(read) if shortcut else 0
    frames = [read[:passed]]
    for raw in SSESplitter().feed(read[passed:]):
        frames += rewriter.feed(raw)
        if rewriter.done:
            break
    return b"".join(frames), rewriter


def test_the_bytes_a_read_passes_as_it_came_change_nothing() -> None:
    """Every read of up to four events of twelve kinds: what ``unchanged`` lets through plus
    the rest fed event by event is exactly what feeding every event gives (frames, usage, the
    end, the finish), and the plain chunks before the events to act on do pass."""
    plain = _KINDS[:2]
    for size in (1, 2, 3, 4):
        for kinds in itertools.product(_KINDS, repeat=size):
            read = b"".join(kinds)
            fast, quick = _relayed(read, shortcut=True)
            slow, full = _relayed(read, shortcut=False)
            assert fast == slow, read
            assert (quick.usage, quick.done, quick.completed, quick.error_type) == (
                full.usage,
                full.done,
                full.completed,
                full.error_type,
            )
            assert quick.finish({"a": 1}) == full.finish({"a": 1})
            leading = 0
            while leading < size and kinds[leading] in plain:
                leading += 1
            if leading == size or all(kind not in plain for kind in kinds[leading:]):
                # Plain chunks, then only events to act on (the usual read): the plain run
                # passes whole.
                passed = OpenAIChatPassthrough(
                    provider="openai", model="m", field="x", include_usage=True, redact=str
                ).unchanged(read)
                assert passed == len(b"".join(kinds[:leading])), read


def test_feed_many_gives_the_frames_feed_gives_one_event_at_a_time() -> None:
    """The batched path of the pass-through relays exactly what ``feed`` would, and stops at
    ``[DONE]``."""
    events = [
        b'data: {"id":"c","choices":[{"delta":{"content":"Hel"},"finish_reason":null}]}\n\n',
        b": keep-alive\n\n",
        b'data: {"id":"c","choices":[{"delta":{"content":"lo"},"finish_reason":null}]}\n\n',
        b'data: {"id":"c","choices":[{"delta":{},"finish_reason":"stop"}]}\n\n',
        b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n',
        b"data: [DONE]\n\n",
        b'data: {"id":"c","choices":[{"delta":{"content":"after"}}]}\n\n',
    ]

    def rewriter() -> OpenAIChatPassthrough:
        return OpenAIChatPassthrough(
            provider="openai", model="gpt-4o", field="x_byok", include_usage=True, redact=str
        )

    one, many = rewriter(), rewriter()
    singly: list[bytes] = []
    for raw in events:
        singly += one.feed(raw)
        if one.done:
            break
    assert many.feed_many(events) == singly
    assert many.done and many.usage == one.usage
    assert many.finish({"a": 1}) == one.finish({"a": 1})

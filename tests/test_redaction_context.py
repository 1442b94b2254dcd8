"""A tenant key of no recognisable shape is redacted from any log line of its own request."""

from __future__ import annotations

import asyncio
import contextvars
import logging

import pytest

from byok_middleware.redaction import (
    REDACTED,
    RedactingFilter,
    Redactor,
    bind_call_redactor,
)

SHAPELESS_KEY = "7b1c9e0d42aa4f6b93e1"  # an nvidia-style key with no prefix to recognise


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("byok_middleware.test", logging.INFO, __file__, 1, message, args, None)


def test_bound_call_redactor_applies_in_its_context_only() -> None:
    """Inside the request's context the key is redacted; outside it is not known to the filter."""
    log_filter = RedactingFilter()

    def inside() -> str:
        bind_call_redactor(Redactor([SHAPELESS_KEY]))
        record = _record("upstream said %s", f"bad key {SHAPELESS_KEY}")
        log_filter.filter(record)
        return record.getMessage()

    assert SHAPELESS_KEY not in contextvars.copy_context().run(inside)
    assert REDACTED in contextvars.copy_context().run(inside)
    outside = _record("unrelated %s", "text")
    log_filter.filter(outside)
    assert outside.getMessage() == "unrelated text"


@pytest.mark.asyncio
async def test_each_task_has_its_own_binding() -> None:
    """Concurrent requests (tasks) never see each other's redactor."""
    seen: dict[str, str] = {}
    log_filter = RedactingFilter()

    async def request(name: str, key: str, other: str) -> None:
        bind_call_redactor(Redactor([key]))
        await asyncio.sleep(0)
        record = _record("%s %s", key, other)
        log_filter.filter(record)
        seen[name] = record.getMessage()

    await asyncio.gather(
        request("a", "aaaa1111bbbb2222cccc", "dddd3333eeee4444ffff"),
        request("b", "dddd3333eeee4444ffff", "aaaa1111bbbb2222cccc"),
    )
    assert seen["a"].startswith(REDACTED) and "dddd3333eeee4444ffff" in seen["a"]
    assert seen["b"].startswith(REDACTED) and "aaaa1111bbbb2222cccc" in seen["b"]


def _encodings(key: str) -> dict[str, str]:
    import base64
    import json
    from urllib.parse import quote

    escaped = "".join(f"\\u{ord(c):04x}" if i % 2 else c for i, c in enumerate(key))
    return {
        "url-encoded": "key=" + quote(key, safe=""),
        "every char percent-encoded": "".join(f"%{ord(c):02X}" for c in key),
        "upper-cased": "echo " + key.upper(),
        "lower-cased": "echo " + key.lower(),
        "base64 in a Basic credential": base64.b64encode(f"user:{key}".encode()).decode(),
        "url-safe base64, offset 2": base64.urlsafe_b64encode(f"ab{key}cd".encode()).decode(),
        "json \\u escapes": json.dumps({"message": escaped}).replace("\\\\", "\\"),
    }


@pytest.mark.parametrize("form", list(_encodings(SHAPELESS_KEY)))
def test_derived_forms_of_a_live_secret_are_redacted(form: str) -> None:
    """URL-encoded, case-folded, base64 and \\u-escaped copies of the key are caught."""
    text = _encodings(SHAPELESS_KEY)[form]
    redacted = Redactor([SHAPELESS_KEY])(text)
    assert REDACTED in redacted, (form, redacted)


def test_redaction_comes_before_truncation() -> None:
    """A key at the cut leaves no fragment: redacted whole, then cut, never mid-marker."""
    redactor = Redactor([SHAPELESS_KEY])
    text = "x" * 30 + SHAPELESS_KEY
    for limit in range(30, 45):
        cut = redactor.truncated(text, limit)
        assert len(cut) <= limit and SHAPELESS_KEY[:6] not in cut
        assert cut.endswith(("x", REDACTED)), cut


def test_stream_events_are_scanned_whatever_their_shape() -> None:
    """event() redacts any event bytes and returns clean ones untouched (the same object)."""
    redactor = Redactor([SHAPELESS_KEY])
    for raw in (
        b'data: {"choices": [{"delta": {"content": "' + SHAPELESS_KEY.encode() + b'"}}]}\n\n',
        b"event: weird\ndata: " + SHAPELESS_KEY.upper().encode() + b"\n\n",
        b": comment " + SHAPELESS_KEY.encode() + b"\xff\n\n",
    ):
        out = redactor.event(raw)
        assert SHAPELESS_KEY.encode() not in out.lower() and REDACTED.encode() in out
    clean = b'data: {"ok": true, "n": "100%"}\n\n'
    assert redactor.event(clean) is clean


def test_a_key_tail_is_redacted_only_where_a_mask_precedes_it() -> None:
    """OpenAI's masked echo "sk-groq-***…cdef" loses its tail; the same four characters in an
    id or a word are data, not a secret (a response id's hex held them)."""
    redactor = Redactor(["sk-groq-acme-0123456789abcdef"])
    assert redactor("resp_a51cdef99") == "resp_a51cdef99"
    assert "cdef" not in redactor("provided: sk-groq-****************cdef.")
    assert "cdef" not in redactor("provided: sk-...cdef")

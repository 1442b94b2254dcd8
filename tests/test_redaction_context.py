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

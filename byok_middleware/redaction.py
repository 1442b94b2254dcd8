"""One redaction layer for every outbound text: client error bodies, log records, ledger fields.

Two nets, both applied: the exact secrets the gateway knows about (the tenant's key for this call,
the platform keys) with the recognisable parts providers echo back (OpenAI's prefix + last four,
DeepSeek's ``****`` + last four), and patterns of well-known key formats, so that a key the
gateway does not know (another tenant's echoed by a misbehaving upstream) is caught as well.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["REDACTED", "RedactingFilter", "Redactor", "redact"]

REDACTED = "[REDACTED]"

_KEY_PATTERNS = re.compile(
    r"""
    sk-ant-[A-Za-z0-9_\-]{8,}            # Anthropic
    | sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-*.]{8,}  # OpenAI, DeepSeek, OpenAI's echo
    | gsk_[A-Za-z0-9]{8,}                # Groq
    | nvapi-[A-Za-z0-9_\-]{8,}           # NVIDIA
    | AIza[A-Za-z0-9_\-]{20,}            # Google
    | byok_[A-Za-z0-9_\-]{16,}           # our own gateway keys
    | \*{4}[A-Za-z0-9]{4}\b              # DeepSeek's "****d569"
    | (?<=[?&]key=)[^&\s"']+             # keys in query strings
    | (?i:bearer)\s+[A-Za-z0-9_\-.~+/=]{8,}  # any bearer credential
    """,
    re.VERBOSE,
)

MIN_SECRET_LENGTH = 4


def _fragments(secret: str) -> Iterable[str]:
    """The secret and the parts of it that providers are known to echo."""
    yield secret
    if len(secret) >= 16:
        # OpenAI: "sk-VKMIs****…wjh3" — the first 8 and the last 4 characters.
        yield secret[:8]
        yield secret[-4:]


class Redactor:
    """Removes known secrets and key-shaped tokens from text."""

    __slots__ = ("_exact",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        parts = {
            part
            for secret in secrets
            if secret and len(secret) >= MIN_SECRET_LENGTH
            for part in _fragments(secret)
        }
        # Longest first, so a full key is replaced before its fragments.
        ordered = sorted(parts, key=len, reverse=True)
        self._exact = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __repr__(self) -> str:
        return "Redactor(<secrets hidden>)"

    def __call__(self, text: str) -> str:
        if self._exact is not None:
            text = self._exact.sub(REDACTED, text)
        return _KEY_PATTERNS.sub(REDACTED, text)

    def value(self, value: Any) -> Any:
        """Redact every string inside a JSON-like value (dicts, lists, strings)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Redact ``text`` against ``secrets`` and the well-known key patterns."""
    return Redactor(secrets)(text)


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites every record's message through a redactor.

    Installed by the middleware on its own loggers and on httpx/httpcore's, so a key that slips
    into a log call's arguments (or an exception's text) is removed before any handler sees it.
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        cleaned = self.redactor(message)
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now, redacted, and stop handlers from rendering it again.
            formatted = logging.Formatter().formatException(record.exc_info)
            cleaned += "\n" + self.redactor(formatted)
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = cleaned, None
        return True


_LOGGERS = (
    "byok_middleware",
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "aiohttp",
    "aiohttp.client",
    "aiohttp.internal",
    "asyncio",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
)


def install_log_redaction(secrets: Iterable[str] = ()) -> RedactingFilter:
    """Attach one ``RedactingFilter`` to our loggers and those of the HTTP stack (idempotent).

    A logger's filters see only records created on that very logger (not its children's), so the
    filter goes on each named logger of the HTTP stack and on every ``byok_middleware.*`` logger.
    """
    redactor = Redactor(secrets)
    ours = [n for n in logging.root.manager.loggerDict if n.startswith("byok_middleware.")]
    for name in (*_LOGGERS, *ours):
        target = logging.getLogger(name)
        existing = [f for f in target.filters if isinstance(f, RedactingFilter)]
        if existing:
            existing[0].redactor = redactor
            continue
        target.addFilter(RedactingFilter(redactor))
    return RedactingFilter(redactor)

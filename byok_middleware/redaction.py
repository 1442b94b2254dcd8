"""One redaction layer for every outbound text: client error bodies, log records, ledger fields.

Three nets, all applied, in this order:

1. the exact secrets the caller knows about (the tenant's key for this call, the platform keys)
   and the parts of them providers echo back (OpenAI's first eight and last four characters);
2. the *context* of an echo, whatever the key looks like: the value after OpenAI's "Incorrect API
   key provided:" (which repeats short or malformed keys in full), Gemini's DebugInfo "Invalid API
   key:", DeepSeek's "Your api key:", ``api_key=`` / ``"api_key": "..."`` and credential headers;
3. the shapes of well-known key formats (``sk-``, ``sk-proj-``, ``sk-ant-``, ``gsk_``, ``nvapi-``,
   ``AIza``, our ``byok_`` gateway keys, DeepSeek's ``****`` + last four, bearer credentials and
   ``?key=`` in URLs), so a key the gateway does not know (another tenant's, echoed by a
   misbehaving upstream) is caught as well.

Each known secret is also matched in the forms an upstream can echo it in (issue 18): in any
letter case, URL-encoded or JSON-escaped (``%73k-…``, ``\\u0073k-…``: text with such escapes is
also scanned decoded, so mixtures are caught), and base64-encoded (standard and URL-safe, at
each of the three alignments inside a longer base64 string). Cutting a text comes after
redacting it (:meth:`Redactor.truncated`): a cut key is a fragment no net recognises.

Log records are redacted by :class:`RedactingFilter` on the loggers that can carry a key (ours
and the HTTP stack's, see :func:`install_log_redaction` for why filters and not a record factory).
"""

from __future__ import annotations

import base64
import logging
import re
import traceback
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any

__all__ = [
    "COVERED_LOGGERS",
    "REDACTED",
    "RedactingFilter",
    "Redactor",
    "bind_call_redactor",
    "install_log_redaction",
    "redact",
]

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
    | (?<=[?&]key=)[^&\s"'#]+            # keys in query strings (Gemini native ?key=)
    | (?i:bearer)\s+[A-Za-z0-9_\-.~+/=]{8,}  # any bearer credential
    """,
    re.VERBOSE,
)

# An echo's context: group 1 is kept, the value after it is replaced, whatever its shape. The value
# ends at whitespace, a quote or a comma, and a sentence's final period is left alone ("kk.").
_ECHO_CONTEXT = re.compile(
    r"""
    (
      (?i:incorrect\ api\ key\ provided|invalid\ api\ key|your\ api\ key
         |x-api-key|x-goog-api-key|authorization)\s*[:=]\s*(?i:(?:bearer|basic)\s+)?
      | (?i:api[_-]?key|access[_-]?token)(?:=|"\s*:\s*")  # api_key=... or "api_key": "..."
    )
    (?!\[REDACTED\])
    ([^\s"',;<>]+?)
    (?=\.?(?:[\s"',;<>]|$))
    """,
    re.VERBOSE,
)

MIN_SECRET_LENGTH = 4


def _fragments(secret: str) -> Iterable[str]:
    """The secret and the parts of it that providers are known to echo.

    OpenAI masks a key as "sk-VKMIs****…wjh3": the first 8 characters, then the last 4 after the
    mask. The last 4 alone are no net (four characters occur in ids and words: a response id's
    hex held "cdef"), so they count only right after a mask character.
    """
    yield secret
    if len(secret) >= 16:
        yield secret[:8]
        yield _MASKED_TAIL + re.escape(secret[-4:])


_MASKED_TAIL = r"(?<=[*\u2026.])"  # after "*", "…" or "." (a "..." mask)


def _alternation(parts: Iterable[str], flags: int = 0) -> re.Pattern[str] | None:
    # Longest first, so that at one position the whole secret wins over a prefix of it. A part
    # that is a pattern already (a masked tail) goes in as it is; the rest are escaped.
    ordered = sorted(parts, key=len, reverse=True)
    escaped = (p if p.startswith(_MASKED_TAIL) else re.escape(p) for p in ordered)
    return re.compile("|".join(escaped), flags) if ordered else None


_MIN_ENCODED_SECRET = 8  # base64 of a shorter one is too short a pattern to be specific


def _base64_forms(secret: str) -> Iterable[str]:
    """The base64 text that encodes ``secret`` whatever precedes it in the encoded data: for
    each of the three byte alignments, the characters that depend on the secret's bytes alone
    (standard and URL-safe alphabets)."""
    data = secret.encode()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + data).decode().rstrip("=")
        head = (0, 2, 3)[offset]  # characters mixing the unknown preceding bytes
        tail = 0 if (offset + len(data)) % 3 == 0 else 1  # ... and the unknown following ones
        core = encoded[head : len(encoded) - tail]
        if len(core) >= _MIN_ENCODED_SECRET:
            yield core
            yield core.replace("+", "-").replace("/", "_")


# Escapes an upstream can wrap a key's characters in; a text holding any is also scanned decoded.
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}|\\u[0-9A-Fa-f]{4}|\\[/\\\"]|\\x[0-9A-Fa-f]{2}")


def _decoded(text: str) -> tuple[str, list[int]] | None:
    """``text`` with its URL and JSON escapes decoded, and for each decoded character the
    offset in ``text`` where it starts (plus the end): None when there is nothing to decode."""
    out: list[str] = []
    starts: list[int] = []
    position = 0
    for match in _ESCAPE.finditer(text):
        start, end = match.span()
        out.append(text[position:start])
        starts.extend(range(position, start))
        token = match.group()
        if token[0] == "%" or token[1] == "x":
            out.append(chr(int(token[-2:], 16)))
        elif token[1] == "u":
            out.append(chr(int(token[2:], 16)))
        else:
            out.append(token[1])
        starts.append(start)
        position = end
    if not starts and position == 0:
        return None
    out.append(text[position:])
    starts.extend(range(position, len(text) + 1))  # the final entry is the end of the text
    return "".join(out), starts


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        elif end > start:
            merged.append((start, end))
    return merged


class Redactor:
    """Removes known secrets, echoed keys and key-shaped tokens from text.

    ``repr`` never shows the secrets. Redacting redacted text changes nothing (the log filter
    relies on that to tell whether a rendered message still carries a secret).
    """

    __slots__ = ("_encoded", "_exact", "_fragments")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        whole = {secret for secret in secrets if secret and len(secret) >= MIN_SECRET_LENGTH}
        parts = {part for secret in whole for part in _fragments(secret)} - whole
        encoded = {
            form
            for secret in whole
            if len(secret) >= _MIN_ENCODED_SECRET
            for form in _base64_forms(secret)
        }
        # Any letter case: upper-cased echoes ("SK-ABC…") are the same key to a reader. Not for
        # the echoed fragments: a 4-character tail in any case is an ordinary word ("form").
        self._exact = _alternation(whole, re.IGNORECASE)
        self._fragments = _alternation(parts)
        self._encoded = _alternation(encoded)  # base64 is case-sensitive

    def __repr__(self) -> str:
        return "Redactor(<secrets hidden>)"

    def __call__(self, text: str) -> str:
        # Every net looks at the original text and the union of what they find is replaced:
        # replacing one net's finds first could break another's (a fragment "sk-canar" taken out
        # of a key the pattern would have caught whole leaves the rest of that key behind).
        spans = [m.span() for m in _KEY_PATTERNS.finditer(text)]
        spans += [m.span(2) for m in _ECHO_CONTEXT.finditer(text)]
        for pattern in (self._exact, self._fragments, self._encoded):
            if pattern is not None:
                spans += [m.span() for m in pattern.finditer(text)]
        if ("%" in text or "\\" in text) and (view := _decoded(text)) is not None:
            decoded, starts = view
            for pattern in (_KEY_PATTERNS, self._exact, self._fragments):
                if pattern is not None:
                    spans += [(starts[a], starts[b]) for a, b in _spans(pattern, decoded)]
        if not spans:
            return text
        out, position = [], 0
        for start, end in _merged(spans):
            out += [text[position:start], REDACTED]
            position = end
        out.append(text[position:])
        return "".join(out)

    def truncated(self, text: str, limit: int) -> str:
        """``text`` redacted, then cut to ``limit`` characters (never the other way round), and
        never in the middle of a ``[REDACTED]`` marker."""
        redacted = self(text)
        if len(redacted) <= limit:
            return redacted
        cut = redacted[:limit]
        marker = cut.rfind("[")
        if marker >= 0 and REDACTED.startswith(cut[marker:]) and cut[marker:] != REDACTED:
            cut = cut[:marker]
        return cut

    def event(self, raw: bytes) -> bytes:
        """Any bytes of a stream (an SSE event of whatever shape, a chunk): ``raw`` itself when
        nothing is found, else the redacted bytes (undecodable bytes kept as they were)."""
        text = raw.decode("utf-8", "surrogateescape")
        redacted = self(text)
        return raw if redacted == text else redacted.encode("utf-8", "surrogateescape")

    def value(self, value: Any) -> Any:
        """Redact every string inside a JSON-like value (dict keys and values, lists, strings)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value


def _spans(pattern: re.Pattern[str], text: str) -> Iterable[tuple[int, int]]:
    return (m.span() for m in pattern.finditer(text))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Redact ``text`` against ``secrets``, echo contexts and the well-known key patterns."""
    return Redactor(secrets)(text)


_PLAIN = (int, float, bool, type(None))


_CALL_REDACTOR: ContextVar[Redactor | None] = ContextVar("byok_call_redactor", default=None)


def bind_call_redactor(redactor: Redactor) -> None:
    """Make log records emitted in this request's context redact ``redactor``'s secrets too.

    Each ASGI request runs in its own task, hence its own context: the binding ends with it.
    """
    _CALL_REDACTOR.set(redactor)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts a record before any handler sees it.

    The message arguments are redacted one by one, keeping their positions, so formatters that
    read ``record.args`` (uvicorn's access log) still work; if the rendered message would still
    carry a secret (one split across arguments, or in a non-string argument's ``repr``), the
    record falls back to the redacted rendered text without arguments. An exception is rendered
    now, redacted, into ``exc_text``, and ``exc_info`` is dropped, so no handler (Sentry-like ones
    included) can render the original exception, its message or its frames' locals.
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def __repr__(self) -> str:
        return "RedactingFilter()"

    def _arg(self, value: Any) -> Any:
        if isinstance(value, _PLAIN):
            return value  # keeps %d and %.2f working
        if isinstance(value, str):
            return self._redact(value)
        text = repr(value)
        return value if self._redact(text) == text else self._redact(text)

    def _redact(self, text: str) -> str:
        # The call's own redactor knows the tenant key in use, whatever its shape.
        call_redactor = _CALL_REDACTOR.get()
        if call_redactor is not None:
            text = call_redactor(text)
        return self.redactor(text)

    def filter(self, record: logging.LogRecord) -> bool:
        original = _render(record)
        if isinstance(record.msg, str):
            record.msg = self._redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(self._arg(a) for a in args)
        elif isinstance(args, Mapping):
            record.args = {k: self._arg(v) for k, v in args.items()}
        rendered = _render(record)
        if not isinstance(record.msg, str) or self._redact(rendered) != rendered:
            record.msg, record.args = self._redact(original), None
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(record.exc_info[1]))
            record.exc_text = self._redact(text.rstrip("\n"))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True


def _render(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 -- a broken format string must not stop redaction
        return str(record.msg)


COVERED_LOGGERS = (
    "byok_middleware",
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "hpack",
    "hpack.hpack",
    "hpack.table",
    "h2",
    "aiohttp",
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.websocket",
    "aiosqlite",
    "asyncpg",
    "redis",
    "asyncio",
    "concurrent.futures",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
)
"""Loggers that can carry a key: ours, the HTTP stack's (clients and servers), the database
drivers', and asyncio's ("Task exception was never retrieved" prints an exception)."""

_COVERED_ROOTS = tuple(name for name in COVERED_LOGGERS if "." not in name and name != "concurrent")


def install_log_redaction(secrets: Iterable[str] = ()) -> RedactingFilter:
    """Attach one ``RedactingFilter`` to every logger that can carry a key (idempotent).

    A logger's filters see only records created on that very logger, not its children's. So the
    filter goes on each logger of :data:`COVERED_LOGGERS` and on every existing logger below those
    roots (``byok_middleware.keys``, ...). ``logging.getLogger`` returns one object per name, so a
    library imported later that asks for ``httpcore.http11`` gets the filtered logger.

    Why not ``logging.setLogRecordFactory``: the factory is process-wide, so it would rewrite the
    host app's own records too, and the last library to set it wins (a host or APM agent that sets
    its own without chaining would silently switch our redaction off). Filters on named loggers
    touch nothing of the host's and cannot be displaced by another library's factory.
    ``tests/test_security_logging.py`` checks that the list covers every logger those packages
    create. Calling this again replaces the secrets of the filters already installed.
    """
    redactor = Redactor(secrets)
    existing = [
        name
        for name in list(logging.root.manager.loggerDict)
        if name.startswith(tuple(root + "." for root in _COVERED_ROOTS))
    ]
    for name in dict.fromkeys((*COVERED_LOGGERS, *existing)):
        target = logging.getLogger(name)
        installed = [f for f in target.filters if isinstance(f, RedactingFilter)]
        if installed:
            installed[0].redactor = redactor
            continue
        target.addFilter(RedactingFilter(redactor))
    return RedactingFilter(redactor)

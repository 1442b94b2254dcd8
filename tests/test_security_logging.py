"""Log redaction: every logger that can carry a key is covered, and records stay formattable."""

from __future__ import annotations

import base64
import importlib
import logging
import os
from typing import Any

import pytest
from uvicorn.logging import AccessFormatter

from byok_middleware import BYOKConfig, BYOKMiddleware
from byok_middleware.redaction import (
    COVERED_LOGGERS,
    REDACTED,
    RedactingFilter,
    Redactor,
    install_log_redaction,
)

PLAIN_KEY = "plain-tenant-key-without-any-known-shape-QZXW"


def test_every_logger_of_the_http_stack_and_ours_is_filtered() -> None:
    """After install, every logger the installed packages create under our roots is filtered."""
    for module in (
        "httpx",
        "httpcore",
        "aiohttp",
        "aiohttp.web",
        "uvicorn.main",
        "aiosqlite",
        "byok_middleware.middleware",
        "byok_middleware.rotation",
    ):
        importlib.import_module(module)
    install_log_redaction()
    roots = ("byok_middleware", "httpx", "httpcore", "aiohttp", "uvicorn", "aiosqlite")
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in roots]
    assert set(COVERED_LOGGERS) <= set(logging.root.manager.loggerDict)
    for name in names:
        logger = logging.getLogger(name)
        assert any(isinstance(f, RedactingFilter) for f in logger.filters), name


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("Incorrect API key provided: kk. You can find your API key at", "kk"),
        ("Incorrect API key provided: sk-VKMIs****************wjh3. You can", "wjh3"),
        ("Authentication Fails, Your api key: ****d569 is invalid", "d569"),
        ('{"detail": "Invalid API key: INVALID_KEY_BLAH"}', "INVALID_KEY_BLAH"),
        ("GET /v1beta/models?key=AIzaSyA-secret-value&alt=sse", "secret-value"),
        ("Authorization: Bearer some.opaque.token.value", "opaque"),
        ('{"api_key": "anything-at-all"}', "anything-at-all"),
        (f"boom {PLAIN_KEY}", "QZXW"),
    ],
)
def test_provider_echoes_are_redacted(text: str, leak: str) -> None:
    """Each provider's echo shape from providers.md §1.4/§7, and a key of no known shape."""
    redacted = Redactor([PLAIN_KEY])(text)
    assert leak not in redacted and REDACTED in redacted
    assert Redactor([PLAIN_KEY])(redacted) == redacted


def test_access_log_records_keep_their_arguments() -> None:
    """uvicorn's AccessFormatter reads record.args: redaction keeps the tuple, so it formats."""
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/x?key=AIzaSyA-0123456789abcdefghij", "1.1", 200),
        None,
    )
    assert RedactingFilter(Redactor()).filter(record)
    assert isinstance(record.args, tuple)
    line = AccessFormatter(use_colors=False).format(record)
    assert "0123456789" not in line and "200" in line


def test_exceptions_are_rendered_redacted_and_dropped() -> None:
    """A traceback is redacted into exc_text; exc_info is gone, so no handler sees the original."""
    try:
        raise RuntimeError(f"upstream said {PLAIN_KEY}")
    except RuntimeError:
        record = logging.getLogger("byok_middleware.test").makeRecord(
            "byok_middleware.test",
            logging.ERROR,
            __file__,
            1,
            "failed: %r",
            (PLAIN_KEY,),
            exc_info=__import__("sys").exc_info(),
        )
    RedactingFilter(Redactor([PLAIN_KEY])).filter(record)
    assert record.exc_info is None
    assert record.exc_text and "RuntimeError" in record.exc_text
    formatted = logging.Formatter().format(record)
    assert PLAIN_KEY not in formatted and "QZXW" not in formatted


def test_master_and_platform_keys_are_redacted_from_our_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The middleware registers the operator's own secrets too: every master key of a keyring
    (``id:key`` or bare) and the platform keys, whatever their shape."""
    first, second = (base64.b64encode(os.urandom(32)).decode() for _ in range(2))
    platform = "plat-" + "Q" * 30
    config = BYOKConfig(master_key=f"new:{first}, {second}", platform_keys={"openai": platform})
    assert config.log_secrets() == [platform, first, second]

    async def host(scope: Any, receive: Any, send: Any) -> None:
        return None

    BYOKMiddleware(host, config=config)
    try:
        with caplog.at_level(logging.WARNING, logger="byok_middleware.router"):
            logging.getLogger("byok_middleware.router").warning(
                "oops %s / %s / %s", first, second, platform
            )
        text = caplog.text
        assert first not in text and second not in text and platform not in text
        assert text.count(REDACTED) == 3
    finally:
        install_log_redaction()  # other tests must not inherit these secrets

"""Where the real PostgreSQL and Redis servers of the test run are, and fresh databases on them.

``scripts/test-services.sh start`` (run by ``make test``) starts both and writes their URLs to
``.pgdata/services.env``; ``BYOK_TEST_POSTGRES_URL`` / ``BYOK_TEST_REDIS_URL`` in the environment
win over the file. Without a URL a test needing that server is skipped with the reason; under CI
(``CI=true``) it fails instead, so a broken set-up can never pass as "all skipped".
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

SERVICES_FILE = Path(__file__).resolve().parent.parent / ".pgdata" / "services.env"


def _from_file() -> dict[str, str]:
    try:
        text = SERVICES_FILE.read_text()
    except FileNotFoundError:
        return {}
    pairs = (line.partition("=") for line in text.splitlines() if "=" in line)
    return {name.strip(): value.strip() for name, _, value in pairs}


def service_url(name: str) -> str:
    """The URL in ``BYOK_TEST_<NAME>_URL`` (env, else the services file); skip or fail without."""
    variable = f"BYOK_TEST_{name.upper()}_URL"
    url = os.environ.get(variable) or _from_file().get(variable)
    if url:
        return url
    reason = (
        f"{variable} is not set: start the test servers with `make services` (or run `make test`)"
    )
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI needs a real {name} server: {reason}")
    pytest.skip(reason)


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@asynccontextmanager
async def fresh_database(url: str) -> AsyncIterator[str]:
    """A new, empty database on the server of ``url``, dropped afterwards; yields its URL."""
    import asyncpg

    name = "byok_test_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(url, name)
    finally:
        admin = await asyncpg.connect(url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

"""The CLI, and the host app around the middleware: websockets, lifespan, its own auth."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, WebSocket
from starlette.testclient import TestClient

from byok_middleware import BYOKConfig, BYOKMiddleware, generate_master_key
from byok_middleware.asgi import ASGIApp
from byok_middleware.crypto import Keyring
from byok_middleware.testing import FakeUpstream
from tests.servers import serve


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the project's own CLI
        [sys.executable, "-m", "byok_middleware", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_master_key_command_prints_a_usable_key() -> None:
    """`master-key` prints a fresh 32-byte key that the keyring accepts."""
    first, second = _cli("master-key").stdout.strip(), _cli("master-key").stdout.strip()
    assert first != second
    assert Keyring.parse(first).primary_id


def test_tenant_commands(tmp_path: Path) -> None:
    """create prints the key once as the last line; list shows it; revoke revokes it."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    created = _cli("tenant", "--database-url", url, "create", "acme")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("byok_")
    assert _cli("tenant", "--database-url", url, "create", "acme").returncode == 1
    listed = _cli("tenant", "--database-url", url, "list").stdout
    assert "acme" in listed and "active" in listed and key not in listed
    assert _cli("tenant", "--database-url", url, "revoke", "acme").returncode == 0
    assert "revoked" in _cli("tenant", "--database-url", url, "list").stdout
    assert _cli("tenant", "--database-url", url, "revoke", "acme").returncode == 1


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_version_and_help_text_for_every_option() -> None:
    """--version prints the version; every argument and option of every command has help text,
    and the top-level help has no raw reST markup."""
    from byok_middleware import __version__
    from byok_middleware.cli import _parser

    assert _cli("--version").stdout.strip() == f"byok_middleware {__version__}"
    top = _cli("--help").stdout
    assert "``" not in top and ":func:" not in top

    def walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not choice.help:
                        missing.append(f"{path} {choice.dest}")
                for name, sub in action.choices.items():
                    missing += walk(sub, f"{path} {name}")
            elif not action.help:
                missing.append(f"{path} {action.dest}")
        return missing

    assert walk(_parser(), "byok-middleware") == []


def test_options_after_the_subcommand_and_tenant_table(tmp_path: Path) -> None:
    """`tenant list --database-url X` works; the list is a table with headers, or JSON."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert _cli("tenant", "create", "acme", "--database-url", url).returncode == 0
    table = _cli("tenant", "list", "--database-url", url).stdout.splitlines()
    assert table[0].split() == ["NAME", "ID", "STATUS", "CREATED"]
    assert table[1].split()[0::2] == ["acme", "active"]
    rows = json.loads(_cli("tenant", "list", "--json", "--database-url", url).stdout)
    assert [(r["name"], r["status"]) for r in rows] == [("acme", "active")]
    assert set(rows[0]) == {"name", "id", "status", "created_at"}


def test_empty_tenant_name_is_refused(tmp_path: Path) -> None:
    """`tenant create ''` is a usage error and creates nothing."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    refused = _cli("tenant", "create", "  ", "--database-url", url)
    assert refused.returncode == 2
    assert "must not be empty" in _one_error_line(refused)
    assert not (tmp_path / "cli.db").exists()


def test_unusable_sqlite_path_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    """A database in a missing folder is one error line, no traceback; --debug adds it."""
    url = f"sqlite:///{tmp_path / 'missing' / 'cli.db'}"
    result = _cli("tenant", "list", "--database-url", url)
    assert result.returncode == 2
    assert "the folder" in _one_error_line(result)
    debug = _cli("tenant", "list", "--database-url", url, "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_serve_prints_a_configuration_error_once(tmp_path: Path) -> None:
    """`serve` without a master key says so in one line and exits 2, before any server starts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYOK_")}
    result = subprocess.run(
        [sys.executable, "-m", "byok_middleware", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "BYOK_MASTER_KEY is not set" in _one_error_line(result)


def test_fake_upstream_runs_as_a_process_and_prints_its_settings() -> None:
    """`fake-upstream` prints the BYOK_BASE_URL_* lines and serves the providers until SIGTERM;
    --print-env prints the same lines for a port without serving."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    printed = _cli("fake-upstream", "--port", str(port), "--print-env").stdout.splitlines()
    assert printed[0] == f"export BYOK_BASE_URL_OPENAI=http://127.0.0.1:{port}/openai/v1"
    assert len(printed) == 6
    with subprocess.Popen(  # noqa: S603 - the project's own CLI
        [sys.executable, "-m", "byok_middleware", "fake-upstream", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            assert server.stdout is not None
            lines = [server.stdout.readline().strip() for _ in range(7)]
            assert lines[1:] == printed
            answer = httpx.get(
                f"http://127.0.0.1:{port}/openai/v1/models",
                headers={"authorization": "Bearer sk-any"},
                timeout=10,
            )
            assert answer.status_code == 200 and answer.json()["object"] == "list"
        finally:
            server.terminate()
            assert server.wait(timeout=20) == 0


def test_missing_master_key_is_a_clear_startup_error(tmp_path: Path) -> None:
    """The middleware refuses to start without BYOK_MASTER_KEY, naming it and the fix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYOK_")}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from starlette.testclient import TestClient\n"
            "from examples.fastapi_app.app import app\n"
            "TestClient(app).__enter__()",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode != 0
    assert "BYOK_MASTER_KEY" in result.stderr and "master-key" in result.stderr


def _host_app(*, wrap: bool = False, **options: Any) -> ASGIApp:
    """A FastAPI host with a websocket and a route below the prefix; the gateway added with
    ``app.add_middleware``, or wrapping the app (``wrap``: the gateway answers first)."""
    started: list[bool] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started.append(True)
        yield

    app = FastAPI(lifespan=lifespan)

    @app.websocket("/v1/ws")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("echo: " + await websocket.receive_text())
        await websocket.close()

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok" if started else "the host's lifespan did not run"}

    if wrap:
        return BYOKMiddleware(app, **options)
    app.add_middleware(BYOKMiddleware, **options)
    return app


@pytest.mark.parametrize("wrap", [False, True], ids=["add_middleware", "wrapping"])
def test_websockets_and_host_routes_under_the_prefix_pass_through(
    tmp_path: Path, wrap: bool
) -> None:
    """A host websocket, a host route below /v1 and the host's lifespan reach the host
    untouched, however the gateway is mounted."""
    config = BYOKConfig(
        master_key=generate_master_key(), database_url=f"sqlite:///{tmp_path / 'b.db'}"
    )
    with TestClient(_host_app(config=config, wrap=wrap)) as client:
        with client.websocket_connect("/v1/ws") as websocket:
            websocket.send_text("hi")
            assert websocket.receive_text() == "echo: hi"
        assert client.get("/v1/health").json() == {"status": "ok"}
        assert client.get("/v1/byok/providers").status_code == 401


def test_host_auth_through_identify(tmp_path: Path, fake_session: FakeUpstream) -> None:
    """identify= maps the host's own auth (a header here) to the tenant; keys follow the tenant."""

    def identify(scope: dict[str, Any]) -> str | None:
        for name, value in scope["headers"]:
            if name == b"x-acme-user":
                return "tenant-" + value.decode()
        return None

    config = BYOKConfig(
        master_key=generate_master_key(),
        database_url=f"sqlite:///{tmp_path / 'b.db'}",
        base_urls=fake_session.base_urls(),
    )
    with serve(_host_app(config=config, identify=identify)) as server:
        with httpx.Client(base_url=server.url, headers={"x-acme-user": "ann"}) as ann:
            created = ann.post(
                "/v1/byok/providers",
                json={"provider": "openai", "api_key": "sk-ann-00000000000000000"},
            )
            assert created.status_code == 201
            chat = ann.post(
                "/v1/chat/completions",
                json={"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert chat.json()["xantly_metadata"]["cost_attribution"] == "byok"
        with httpx.Client(base_url=server.url, headers={"x-acme-user": "bob"}) as bob:
            assert bob.get("/v1/byok/providers").json()["data"] == []
        assert httpx.get(server.url + "/v1/byok/providers").status_code == 401

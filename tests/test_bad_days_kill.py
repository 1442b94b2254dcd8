"""Bad days, item 4: ``kill -9`` of a gateway process under load loses no ledger row.

The FastAPI example runs in its own uvicorn process on a real SQLite file; clients keep it busy,
it is killed with SIGKILL, started again (the journal is replayed at start-up), and every
response a client received in full must have its row.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from byok_middleware import generate_master_key
from byok_middleware.testing import FakeUpstream
from tests.conftest import PLATFORM_OPENAI_KEY, make_tenant
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
CHAT = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
LOAD_SECONDS = 3.0
CLIENTS = 8


def _start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 -- our own interpreter and module
            [sys.executable, "-m", "uvicorn", "examples.fastapi_app.app:app",
             "--host", "127.0.0.1", "--port", str(port), "--lifespan", "on",
             "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the gateway exited at start:\n{log.read_text()}")
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    pytest.fail("the gateway did not start")


async def _load(url: str, api_key: str, completed: set[str], stop: asyncio.Event) -> None:
    headers = {"authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
        while not stop.is_set():
            try:
                response = await client.post("/v1/chat/completions", json=CHAT)
            except httpx.HTTPError:
                return  # the process is gone
            if response.status_code == 200:
                completed.add(response.headers["x-byok-request-id"])


def _rows(db_path: Path) -> set[str]:
    with sqlite3.connect(db_path) as connection:
        return {row[0] for row in connection.execute("SELECT request_id FROM usage")}


def test_every_completed_response_has_its_row_after_kill_9_and_restart(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    """Responses completed before SIGKILL == their rows after a restart replays the journal."""
    db_path = tmp_path / "byok.db"
    api_key = make_tenant(db_path, "acme")
    env = {name: value for name, value in os.environ.items() if not name.startswith("BYOK_")}
    env.update(
        BYOK_MASTER_KEY=generate_master_key(),
        BYOK_DATABASE_URL=f"sqlite:///{db_path}",
        BYOK_PLATFORM_KEY_OPENAI=PLATFORM_OPENAI_KEY,
        **{f"BYOK_BASE_URL_{p.upper()}": u for p, u in fake.base_urls().items()},
    )
    log = tmp_path / "gateway.log"
    process, url = _start(env, log)
    completed: set[str] = set()

    async def drive() -> None:
        stop = asyncio.Event()
        clients = [
            asyncio.create_task(_load(url, api_key, completed, stop)) for _ in range(CLIENTS)
        ]
        await asyncio.sleep(LOAD_SECONDS)
        process.send_signal(signal.SIGKILL)  # mid-load: requests are in flight
        stop.set()
        await asyncio.gather(*clients)

    try:
        asyncio.run(drive())
        assert process.wait(timeout=10) == -signal.SIGKILL
        assert len(completed) >= 10, "the load was too light to prove anything"
        before_restart = _rows(db_path)
        process, url = _start(env, log)  # replays what the killed process journalled
        deadline = time.monotonic() + 20
        while not completed <= _rows(db_path) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    rows = _rows(db_path)
    missing = completed - rows
    print(
        f"completed={len(completed)} rows_before_restart={len(before_restart & completed)} "
        f"rows_after={len(rows & completed)}"
    )
    assert not missing, f"{len(missing)} of {len(completed)} completed responses have no row"
    assert not list((tmp_path / "byok.db.ledger-journal").glob("ledger-*.jsonl"))

"""``make demo``: the BYOK flow end to end on this machine, then keeps serving until Ctrl-C.

It starts the project's fake upstream (providers cannot be reached from here), runs the FastAPI
example under uvicorn with a SQLite store, creates a tenant with the CLI, registers the tenant's
OpenAI key, and calls the gateway with the official ``openai`` SDK, plain and streamed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai

from byok_middleware import generate_master_key
from byok_middleware.testing import FakeUpstream

WORKDIR = Path(".demo")
TENANT_KEY = "sk-demo-tenant-0123456789abcdefghijklmnop"
PLATFORM_KEY = "sk-demo-platform-0123456789abcdefghijklm"


def _port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bold(text: str) -> str:
    # Escape codes only for a terminal that wants them (not a pipe, a file or NO_COLOR).
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR"):
        return f"\033[1m{text}\033[0m"
    return text


def _title(text: str) -> None:
    print("\n" + _bold(f"== {text}"), flush=True)


def _show(label: str, value: Any) -> None:
    print(f"{label}: {json.dumps(value, indent=2)}", flush=True)


def _wait_until_up(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the example app exited; see its output above")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit("the example app did not start within 30 s")


def main() -> int:
    WORKDIR.mkdir(exist_ok=True)
    database = WORKDIR / "byok.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)

    fake = FakeUpstream(chunk_delay=0.15).start()
    port = _port(8000)
    env = {
        **os.environ,
        "BYOK_MASTER_KEY": generate_master_key(),
        "BYOK_DATABASE_URL": f"sqlite:///{database}",
        "BYOK_PLATFORM_KEY_OPENAI": PLATFORM_KEY,
        **{f"BYOK_BASE_URL_{p.upper()}": url for p, url in fake.base_urls().items()},
    }
    _title("1. A tenant and its gateway API key (python -m byok_middleware tenant create demo)")
    created = subprocess.run(
        [sys.executable, "-m", "byok_middleware", "tenant", "create", "demo"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    gateway_key = created.stdout.strip().splitlines()[-1]
    print(created.stdout.strip())  # "... its gateway API key, shown once:" and the key

    server = subprocess.Popen(  # noqa: S603 - uvicorn serving the example app
        [
            sys.executable,
            "-m",
            "uvicorn",
            "examples.fastapi_app.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base + "/", server)
        headers = {"authorization": f"Bearer {gateway_key}"}
        http = httpx.Client(base_url=base, headers=headers, timeout=30)
        client = openai.OpenAI(base_url=base + "/v1", api_key=gateway_key, max_retries=0)

        _title("2. The host app's own route still answers: GET /")
        _show("GET /", http.get("/").json())

        _title("3. Register the tenant's own OpenAI key: POST /v1/byok/providers")
        view = http.post(
            "/v1/byok/providers", json={"provider": "openai", "api_key": TENANT_KEY, "priority": 1}
        ).json()
        _show("key view (never the key itself)", view)

        _title("4. Plain chat with the openai SDK: model openai/gpt-4o")
        completion = client.chat.completions.create(
            model="openai/gpt-4o", messages=[{"role": "user", "content": "Hello!"}]
        )
        print("answer:", completion.choices[0].message.content)
        _show("xantly_metadata", (completion.model_extra or {})["xantly_metadata"])
        print(
            "upstream received the tenant's key:",
            fake.requests_for("openai")[-1].api_key == TENANT_KEY,
        )

        _title("5. Streamed chat: chunks arrive as the provider sends them")
        last: Any = None
        for chunk in client.chat.completions.create(
            model="openai/gpt-4o",
            messages=[{"role": "user", "content": "Stream please"}],
            stream=True,
        ):
            for choice in chunk.choices:
                print(choice.delta.content or "", end="", flush=True)
            last = chunk
        print()
        _show("metadata on the last event", (last.model_extra or {})["xantly_metadata"])

        _title("6. Delete the key: the platform key takes over")
        http.delete(f"/v1/byok/providers/{view['id']}")
        completion = client.chat.completions.create(
            model="openai/gpt-4o", messages=[{"role": "user", "content": "Hello again"}]
        )
        _show("xantly_metadata", (completion.model_extra or {})["xantly_metadata"])

        _title("7. The usage ledger: GET /v1/byok/usage?group_by=attribution")
        _show("usage", http.get("/v1/byok/usage", params={"group_by": "attribution"}).json())

        _title("Serving until Ctrl-C")
        print(f"  host app:      {base}/")
        print(f"  gateway:       {base}/v1/chat/completions")
        print(f"  keys:          {base}/v1/byok/providers")
        print(f"  dashboard:     {base}/v1/byok/dashboard (paste the gateway key there)")
        print(f"  gateway key:   {gateway_key}")
        print(f"  fake upstream: {fake.url}")
        if os.environ.get("BYOK_DEMO_EXIT"):
            return 0
        server.wait()
    except KeyboardInterrupt:
        print("\nstopping")
    finally:
        server.terminate()
        server.wait(timeout=10)
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

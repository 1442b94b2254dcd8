"""The README's Quick start, executed block by block as written: real uvicorn, real openai SDK."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAKE_PORT, GATEWAY_PORT = "9100", "8000"


def quickstart_blocks() -> list[tuple[str, str]]:
    """The fenced blocks of the README's "Quick start" section: (language, text), in order."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.DOTALL)


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _script(blocks: list[tuple[str, str]], fake_port: str, gateway_port: str) -> str:
    """The bash blocks as one script, on free ports; the Python block becomes hello.py.

    Only two things differ from the README: the ports (8000 and 9100 may be taken on a shared
    machine) and the `pip install` line, which is checked rather than run (this venv has it).
    """
    lines = ["set -euo pipefail"]
    for language, text in blocks:
        text = text.replace(f"--port {FAKE_PORT}", f"--port {fake_port}")
        text = text.replace(f"localhost:{GATEWAY_PORT}", f"localhost:{gateway_port}")
        text = text.replace(".app:app &", f".app:app --port {gateway_port} &")
        if language == "python":
            lines.append(f"cat > hello.py <<'PYTHON'\n{text}PYTHON")
            continue
        for line in text.splitlines():
            if line.startswith("pip install"):
                assert "openai" in line and "'.[fastapi]'" in line and "[litestar]" in line
                continue
            lines.append(line)
    return "\n".join(lines) + "\n"


def test_quickstart_blocks_are_what_the_test_expects() -> None:
    """The Quick start has its bash steps, the Python snippet and the `python hello.py` step."""
    blocks = quickstart_blocks()
    assert [language for language, _ in blocks] == ["bash", "bash", "python", "bash"]
    assert blocks[-1][1].strip() == "python hello.py"
    assert "export GATEWAY_KEY=" in blocks[0][1]
    assert "fake-upstream" in blocks[0][1]


@pytest.mark.timeout(120)
def test_quickstart_runs_verbatim_against_the_fake_providers(tmp_path: Path) -> None:
    """Every Quick start command runs in one shell, in under a minute: the tenant's key is
    registered with curl and the openai SDK call is answered, paid by that key."""
    script = _script(quickstart_blocks(), _free_port(), _free_port())
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYOK_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT))
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    started = time.monotonic()
    with out.open("w") as stdout, err.open("w") as stderr:
        # Its own session: the background servers the script starts are stopped with it.
        shell = subprocess.Popen(  # noqa: S603 - the README's own commands
            ["bash", "-c", script],  # noqa: S607 - bash from PATH
            cwd=tmp_path,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            code = shell.wait(timeout=90)
        finally:
            os.killpg(shell.pid, signal.SIGTERM)
            shell.wait(timeout=10)
    elapsed = time.monotonic() - started
    printed, logged = out.read_text(), err.read_text()
    assert code == 0, f"{printed}\n{logged}"
    assert elapsed < 60, f"the Quick start took {elapsed:.1f} s"
    assert '"provider":"openai"' in printed.replace(" ", "")  # curl's 201 key view
    assert "'cost_attribution': 'byok'" in printed  # hello.py's metadata
    assert "sk-tenant-key" not in printed + logged
    assert (tmp_path / "byok.db").exists()

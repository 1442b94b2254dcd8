"""`make demo` runs end to end (its serving phase skipped)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_shows_the_byok_flow() -> None:
    """The demo registers a key, sees byok on plain and streamed calls, then xantly after delete,
    in under a minute, shows the gateway key it announces, and prints no escape codes to a pipe."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        env={**os.environ, "BYOK_DEMO_EXIT": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert elapsed < 60, f"make demo took {elapsed:.1f} s"
    out = result.stdout
    lines = out.splitlines()
    announced = next(i for i, line in enumerate(lines) if line.endswith("shown once:"))
    assert lines[announced + 1].startswith("byok_")
    assert "\033[" not in out
    assert out.count('"cost_attribution": "byok"') == 2
    assert out.count('"cost_attribution": "xantly"') == 1
    assert "upstream received the tenant's key: True" in out
    assert "sk-demo-tenant" not in out

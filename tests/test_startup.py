"""A misconfigured gateway stops its server at start-up: real uvicorn, real host frameworks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from byok_middleware import generate_master_key

ROOT = Path(__file__).resolve().parent.parent
HOSTS = ["fastapi_app", "starlette_app", "litestar_app"]


def _uvicorn(
    target: str, env: dict[str, str], *options: str, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """uvicorn with its default settings (lifespan ``auto``) on an ephemeral port."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BYOK_")}
    return subprocess.run(  # noqa: S603 - uvicorn serving the project's examples
        [sys.executable, "-m", "uvicorn", target, "--port", "0", *options],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("host", HOSTS)
def test_missing_master_key_stops_the_server(host: str, tmp_path: Path) -> None:
    """Without BYOK_MASTER_KEY, `uvicorn app:app` exits non-zero naming the variable and the fix."""
    result = _uvicorn(
        f"examples.{host}.app:app", {"BYOK_DATABASE_URL": f"sqlite:///{tmp_path / 'b.db'}"}
    )
    assert result.returncode != 0
    assert "BYOK_MASTER_KEY is not set" in result.stderr
    assert "python -m byok_middleware master-key" in result.stderr
    assert "appears unsupported" not in result.stderr
    assert "Application startup complete" not in result.stderr


@pytest.mark.parametrize("lifespan", ["auto", "on"])
def test_malformed_master_key_stops_the_server_in_every_lifespan_mode(
    lifespan: str, tmp_path: Path
) -> None:
    """A malformed key is one error line and a non-zero exit, lifespan auto or on."""
    env = {"BYOK_MASTER_KEY": "not-a-key", "BYOK_DATABASE_URL": f"sqlite:///{tmp_path / 'b.db'}"}
    result = _uvicorn("examples.fastapi_app.app:app", env, "--lifespan", lifespan)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "byok_middleware cannot start" in line]
    assert len(errors) == 1, result.stderr
    assert "BYOK_MASTER_KEY must be 32 random bytes" in errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("BYOK_MAX_BODY_BYTES", "lots", "BYOK_MAX_BODY_BYTES must be a number"),
        ("BYOK_PREFIX", "api", "BYOK_PREFIX must start with '/'"),
        ("BYOK_DATABASE_URL", "sqlite:////no/such/folder/b.db", "the folder /no/such/folder"),
        ("BYOK_DATABASE_URL", "postgresql://u:hunter2@127.0.0.1:1/x", "PostgreSQL at"),
    ],
)
@pytest.mark.parametrize("host", ["fastapi_app", "litestar_app"])
def test_other_configuration_errors_and_unreachable_stores_stop_the_server(
    host: str, name: str, value: str, expected: str, tmp_path: Path
) -> None:
    """A malformed setting or a store that cannot be opened stops start-up with its message."""
    env = {
        "BYOK_MASTER_KEY": generate_master_key(),
        "BYOK_DATABASE_URL": f"sqlite:///{tmp_path / 'b.db'}",
        name: value,
    }
    result = _uvicorn(f"examples.{host}.app:app", env)
    assert result.returncode != 0
    assert expected in result.stderr
    assert "hunter2" not in result.stderr
    assert "Application startup complete" not in result.stderr


def test_wrapped_app_at_import_fails_at_startup_with_one_line(tmp_path: Path) -> None:
    """`app = BYOKMiddleware(app)` at module level needs no key at import; start-up names it."""
    (tmp_path / "wrapped.py").write_text(
        "from starlette.applications import Starlette\n"
        "from byok_middleware import BYOKMiddleware\n"
        "app = BYOKMiddleware(Starlette())\n"
    )
    result = _uvicorn("wrapped:app", {"PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    assert result.returncode != 0
    assert "BYOK_MASTER_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_typo_in_a_setting_name_is_warned_with_the_closest_name(tmp_path: Path) -> None:
    """An unknown BYOK_* name is a warning at start-up that suggests the known one."""
    env = {
        "BYOK_MASTER_KEY": generate_master_key(),
        "BYOK_DATABASE_URL": f"sqlite:///{tmp_path / 'b.db'}",
        "BYOK_PLATFORM_KEY_OPENIA": "sk-typo-canary-0000",
        "BYOK_PREFIX": "api",
    }
    result = _uvicorn("examples.fastapi_app.app:app", env)
    assert "BYOK_PLATFORM_KEY_OPENIA" in result.stderr
    assert "did you mean BYOK_PLATFORM_KEY_OPENAI" in result.stderr
    assert "sk-typo-canary" not in result.stderr

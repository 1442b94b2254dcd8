"""The CLI mirror of the operator API, on a real SQLite file."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from byok_middleware import generate_master_key
from byok_middleware.cli import main


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'byok.db'}"
    monkeypatch.setenv("BYOK_DATABASE_URL", url)
    monkeypatch.setenv("BYOK_MASTER_KEY", generate_master_key())
    monkeypatch.delenv("BYOK_REDIS_URL", raising=False)
    return url


def test_policy_rotate_key_and_export(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    """tenant policy validates like the API, rotate-key prints a new key, usage export is CSV."""
    assert main(["tenant", "create", "acme"]) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["tenant", "policy", "acme", "--budget", "50", "--platform-fallback", "never"]) == 0
    assert '"platform_fallback": "never"' in capsys.readouterr().out
    assert main(["tenant", "policy", "acme", "--budget", "-1"]) == 2
    assert "budget_usd" in capsys.readouterr().err
    assert main(["tenant", "rotate-key", "acme"]) == 0
    second = capsys.readouterr().out.strip().splitlines()[-1]
    assert second.startswith("byok_") and second != first
    assert main(["usage", "export", "--format", "csv", "--group-by", "tenant,day"]) == 0
    header = next(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert header == ["tenant", "day", "requests", "input_tokens", "output_tokens", "cost_usd"]
    assert main(["usage", "export", "--group-by", "week"]) == 2

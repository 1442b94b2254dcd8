"""`pip install byok_middleware` without extras: the package and its testing kit import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(480)
def test_plain_install_imports_the_testing_kit(tmp_path: Path) -> None:
    """A fresh venv with `pip install <repo>` (no extras) imports byok_middleware.testing, the
    CLI answers, and FakeUpstream.start() names the missing uvicorn; the build warns about no
    deprecated license metadata."""
    source = tmp_path / "src"  # a copy: the build writes build/ and *.egg-info into its source
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "byok_middleware",
        source / "byok_middleware",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)  # noqa: S603
    python = str(venv / "bin" / "python")
    install = subprocess.run(  # noqa: S603 - pip from the fresh venv, PyPI reachable
        [python, "-m", "pip", "install", "-v", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    assert "SetuptoolsDeprecationWarning" not in install.stdout + install.stderr
    check = subprocess.run(  # noqa: S603 - the fresh venv's python
        [
            python,
            "-c",
            "import importlib.util, byok_middleware.testing as t\n"
            "assert importlib.util.find_spec('uvicorn') is None, 'uvicorn came without extras'\n"
            "try:\n"
            "    t.FakeUpstream().start()\n"
            "except RuntimeError as exc:\n"
            "    print(exc)\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    assert "pip install 'byok_middleware[fastapi]'" in check.stdout
    version = subprocess.run(  # noqa: S603 - the installed console script
        [str(venv / "bin" / "byok-middleware"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert version.stdout.startswith("byok_middleware "), version.stderr

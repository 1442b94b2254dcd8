"""The targets: how to start each server under test, and the one-time set-up they need."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work"
LITELLM_VENV = WORK / "litellm-venv"
LITELLM_INSTALL_SECONDS = 300


def event_loop() -> str:
    """uvloop for every target when both venvs have it, else asyncio for every target."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


@dataclass
class Target:
    key: str
    label: str
    argv: list[str] | None  # None: the mock itself is the target
    env: dict[str, str] = field(default_factory=dict)
    auth: str | None = None
    startup_timeout: float = 30
    vary: bool = False  # wrk makes every request body unique (a response cache always misses)

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/v1/chat/completions"


def uvicorn_argv(python: str, app: str, loop: str, *, factory: bool) -> list[str]:
    """uvicorn through ``benchmarks.gcwatch``, which logs the server's full collections."""
    argv = [python, "-m", "benchmarks.gcwatch", app, "--host", "127.0.0.1", "--port", "{port}"]
    argv += ["--no-access-log", "--loop", loop, "--http", "httptools", "--log-level", "warning"]
    return [*argv, "--factory"] if factory else argv


def bare_targets(loop: str, upstream: str) -> list[Target]:
    python = sys.executable
    env = {"BENCH_UPSTREAM": upstream}
    return [
        Target("direct", "(a) direct to the mock", None),
        Target(
            "httpx",
            "(b) Starlette + httpx default transport",
            uvicorn_argv(python, "benchmarks.passthrough:httpx_app", loop, factory=True),
            env,
        ),
        Target(
            "aiohttp",
            "(c) Starlette + raw aiohttp",
            uvicorn_argv(python, "benchmarks.passthrough:aiohttp_app", loop, factory=True),
            env,
        ),
        Target(
            "httpx-aiohttp",
            "(d) Starlette + httpx over AiohttpTransport",
            uvicorn_argv(python, "benchmarks.passthrough:httpx_aiohttp_app", loop, factory=True),
            env,
        ),
    ]


def _run(argv: list[str], env: dict[str, str]) -> str:
    import os

    done = subprocess.run(
        argv, env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, check=True
    )
    return done.stdout


def gateway_targets(loop: str, upstream: str, tmp: Path) -> list[Target]:
    """The FastAPI example with the gateway, a CLI-made tenant and a SQLite store in ``tmp``."""
    python = sys.executable
    master = _run([python, "-m", "byok_middleware", "master-key"], {}).strip().splitlines()[-1]
    env = {
        "BYOK_MASTER_KEY": master,
        "BYOK_DATABASE_URL": f"sqlite:///{tmp / 'byok.db'}",
        "BYOK_BASE_URL_OPENAI": upstream + "/v1",
    }
    out = _run([python, "-m", "byok_middleware", "tenant", "create", "bench"], env)
    gateway_key = out.strip().splitlines()[-1]
    # A second tenant with a budget, for the target with budgets, cache and metrics on.
    out = _run([python, "-m", "byok_middleware", "tenant", "create", "bench-features"], env)
    features_key = out.strip().splitlines()[-1]
    _run(
        [python, "-m", "byok_middleware", "tenant", "policy", "bench-features",
         "--budget", "1000000", "--period", "month"],
        env,
    )  # fmt: skip
    features_env = {**env, "BYOK_CACHE": "exact", "BYOK_METRICS": "true"}
    argv = uvicorn_argv(python, "benchmarks.gateway_app:create", loop, factory=True)
    serve = uvicorn_argv(python, "byok_middleware.serving:create_app", loop, factory=True)
    return [
        Target("gateway", "(e) gateway, default upstream client (aiohttp)", argv, env, gateway_key),
        Target(
            "gateway-starlette",
            "(e*) gateway as `byok-middleware serve` runs it (its own app, heap frozen after "
            "start-up)",
            serve,
            env,
            gateway_key,
        ),
        Target(
            "gateway-starlette-nofreeze",
            "(e*-) the same without the freeze (BYOKMiddleware around a bare Starlette app)",
            uvicorn_argv(python, "benchmarks.gateway_app:create_serve", loop, factory=True),
            env,
            gateway_key,
        ),
        Target(
            "gateway-features",
            "(e*+) (e*) with a tenant budget, the exact response cache (every request a miss) "
            "and Prometheus metrics on",
            serve,
            features_env,
            features_key,
            vary=True,
        ),
        Target(
            "gateway-cache-hit",
            "(e*h) (e*) with the exact response cache, the same body every time (every request "
            "a hit but the first)",
            serve,
            {**env, "BYOK_CACHE": "exact"},
            gateway_key,
        ),
        Target(
            "gateway-cache-miss",
            "(e*m) (e*) with the exact response cache, every body unique (every request a "
            "lookup, a miss and a store)",
            serve,
            {**env, "BYOK_CACHE": "exact"},
            gateway_key,
            vary=True,
        ),
        Target(
            "gateway-httpx-aiohttp",
            "(e') gateway, httpx over AiohttpTransport injected",
            argv,
            {**env, "BENCH_GATEWAY_TRANSPORT": "httpx-aiohttp"},
            gateway_key,
        ),
        Target(
            "gateway-httpx",
            "(e'') gateway, httpx.AsyncHTTPTransport injected",
            argv,
            {**env, "BENCH_GATEWAY_TRANSPORT": "httpx"},
            gateway_key,
        ),
    ]


def register_provider_key(port: int, gateway_key: str) -> None:
    """``POST /v1/byok/providers`` once (the store persists it for every later start)."""
    body = json.dumps({"provider": "openai", "api_key": "sk-bench-" + secrets.token_hex(16)})
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/byok/providers",
        data=body.encode(),
        headers={"Authorization": f"Bearer {gateway_key}", "Content-Type": "application/json"},
        method="POST",
    )
    # S310: the URL is built above from 127.0.0.1 and our own port.
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        if response.status != 201:
            raise RuntimeError(f"registering the provider key answered {response.status}")


def confirm_cache_hit(port: int, gateway_key: str, body: bytes) -> None:
    """Send ``body`` twice; the second answer must say ``x-byok-cache: hit`` (else the hit
    target would measure something else, silently)."""
    seen = ""
    for _ in range(2):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=body,
            headers={"Authorization": f"Bearer {gateway_key}", "Content-Type": "application/json"},
            method="POST",
        )
        # S310: the URL is built above from 127.0.0.1 and our own port.
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            seen = response.headers.get("x-byok-cache", "")
    if seen != "hit":
        raise RuntimeError(f"the cache-hit target answered x-byok-cache {seen!r}, not 'hit'")


def ensure_litellm(log: Path) -> tuple[Path | None, str]:
    """A separate venv with ``litellm[proxy]``; (python, version) or (None, why not)."""
    python = LITELLM_VENV / "bin" / "python"
    probe = [str(python), "-c", "import litellm.proxy.proxy_server, importlib.metadata as m;"
             "print(m.version('litellm'))"]  # fmt: skip
    if python.exists():
        done = subprocess.run(probe, capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            return python, done.stdout.strip().splitlines()[-1]
    started = time.monotonic()
    try:
        with log.open("w") as handle:
            if not python.exists():
                subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
            subprocess.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "litellm[proxy]",
                    "uvloop",
                    "httptools",
                ],
                stdout=handle,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=LITELLM_INSTALL_SECONDS,
            )
        done = subprocess.run(probe, capture_output=True, text=True, timeout=120, check=True)
    except subprocess.TimeoutExpired:
        return None, f"pip install did not finish in {LITELLM_INSTALL_SECONDS} s"
    except subprocess.CalledProcessError as exc:
        return None, f"install or import failed ({exc.returncode}); see {log}"
    print(f"  installed LiteLLM in {time.monotonic() - started:.0f} s")
    return python, done.stdout.strip().splitlines()[-1]


def litellm_target(python: Path, loop: str, upstream: str, tmp: Path) -> Target:
    master = "sk-" + secrets.token_hex(24)
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: openai/gpt-4o-mini\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: sk-bench-upstream\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    env = {
        "CONFIG_FILE_PATH": str(config),
        "LITELLM_MASTER_KEY": master,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch from GitHub at start-up
        "LITELLM_LOG": "ERROR",
        "DISABLE_SCHEMA_UPDATE": "True",
    }
    argv = uvicorn_argv(str(python), "litellm.proxy.proxy_server:app", loop, factory=False)
    return Target("litellm", "(f) LiteLLM proxy", argv, env, master, startup_timeout=120)

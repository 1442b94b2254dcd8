"""The canary sweep: planted keys drive every route, then every sink is searched for them.

Sinks: log records of every logger at DEBUG (message, args, rendered text, exception text; the
uvicorn access log included and rendered with uvicorn's own AccessFormatter), every response's
status line, headers and body, the SQLite file with its WAL and SHM, the ledger rows, the CLI's
stdout/stderr, ``str``/``repr`` of the errors the gateway builds from key-echoing upstream
answers, and ``repr`` of the config, store, gateway, middleware, key service, keyring, key
records, resolved keys and candidates.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from uvicorn.logging import AccessFormatter

from byok_middleware import BYOKMiddleware, SQLiteStore, generate_master_key
from byok_middleware.cli import main
from byok_middleware.fake.errors import invalid_key
from byok_middleware.gateway.calls import Candidate
from byok_middleware.gateway.upstream import normalize_error
from byok_middleware.redaction import Redactor
from byok_middleware.testing import FakeUpstream, Scripted
from tests.conftest import Gateway

# Each ends in four letters no id, hash or timestamp can contain, so a last-four echo shows.
CANARIES = {
    "openai": "sk-canaryOpenAI-7f3a9c1e5b2d4068a1c3QZXW",
    "deepseek": "sk-canaryDeepSeek-0e2c4a6b8d1f3a5c7eQZXV",
    "google": "AIzaCanaryGoogle-9b1d3f5a7c9e1b3d5fQZXU",
    "nvidia": "canary-plain-nvidia-key-4c6e8a0b2dQZXT",  # no known key shape at all
    "anthropic": "sk-ant-canaryAnthropic-1a3c5e7b9dQZXS",
}
ROTATED = "sk-canaryRotated-5d7f9b1c3e5a7c9e1bQZXR"
PLATFORM = "sk-canaryPlatform-8e0a2c4e6b8d0f2a4cQZXP"
OLD_MASTER, NEW_MASTER = generate_master_key(), generate_master_key()
SECRETS = [*CANARIES.values(), ROTATED, PLATFORM, OLD_MASTER, NEW_MASTER]
MESSAGES = [{"role": "user", "content": "Hello"}]
MODELS = {
    "openai": "openai/gpt-4o",
    "deepseek": "deepseek/deepseek-chat",
    "google": "google/gemini-2.5-flash",
    "nvidia": "nvidia/meta/llama-3.1-8b-instruct",
    "anthropic": "anthropic/claude-sonnet-4-5",
}


def fragments(secret: str) -> list[str]:
    """The secret and the parts an echo or a sloppy log could carry."""
    return [secret, secret[3:], secret[:12], secret[-12:], secret[-4:]]


def assert_clean(sink: str, text: str | bytes) -> None:
    for secret in SECRETS:
        for fragment in fragments(secret):
            needle: str | bytes = fragment.encode() if isinstance(text, bytes) else fragment
            assert needle not in text, f"{sink} carries part of a secret: {fragment[:3]}..."


class Recorder:
    """Every response's status, headers and body."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, response: httpx.Response) -> httpx.Response:
        response.read()
        self.seen.append(f"{response.status_code} {response.headers!r} {response.text}")
        return response


def drive_everything(gateway: Gateway, fake: FakeUpstream, keep: Recorder) -> None:
    ids: dict[str, str] = {}
    with gateway.client("acme") as http:
        for provider, secret in CANARIES.items():
            body = {"provider": provider, "api_key": secret, "label": provider}
            ids[provider] = keep(http.post("/v1/byok/providers", json=body)).json()["id"]
        keep(http.get("/v1/byok/providers"))
        keep(http.get(f"/v1/byok/providers/{ids['openai']}"))
        keep(http.patch(f"/v1/byok/providers/{ids['openai']}", json={"priority": 2}))
        for model in MODELS.values():
            chat = {"model": model, "messages": MESSAGES}
            keep(http.post("/v1/chat/completions", json=chat))
            keep(http.post("/v1/chat/completions", json={**chat, "stream": True}))
        chat = {"model": "openai/gpt-4o", "messages": MESSAGES}
        # A non-auth upstream error that echoes the key, and one in the middle of a stream.
        fake.script(
            "openai", Scripted.error("openai", 400, f"bad input for key {CANARIES['openai']}")
        )
        keep(http.post("/v1/chat/completions", json=chat))
        echo = f'{{"error": {{"message": "Incorrect API key provided: {CANARIES["openai"]}"}}}}'
        fake.script(
            "openai",
            Scripted(body=f"data: {echo}\n\n", headers={"content-type": "text/event-stream"}),
        )
        keep(http.post("/v1/chat/completions", json={**chat, "stream": True}))
        # Failover, a timeout, and a stream cut half-way.
        fake.script("openai", Scripted.server_error("openai"))
        keep(http.post("/v1/chat/completions", json=chat))
        fake.script("openai", Scripted(delay=2.5), Scripted(delay=2.5))
        keep(http.post("/v1/chat/completions", json=chat))
        fake.script("openai", Scripted(stream=True, cut_after=2))
        keep(http.post("/v1/chat/completions", json={**chat, "stream": True}))
        # The other endpoints, whatever is registered when this runs.
        keep(
            http.post(
                "/v1/embeddings", json={"model": "openai/text-embedding-3-small", "input": "hi"}
            )
        )
        keep(
            http.post(
                "/v1/moderations", json={"model": "openai/omni-moderation-latest", "input": "hi"}
            )
        )
        keep(
            http.post(
                "/v1/images/generations", json={"model": "openai/dall-e-3", "prompt": "a cat"}
            )
        )
        keep(
            http.post(
                "/v1/audio/speech", json={"model": "openai/tts-1", "input": "hi", "voice": "alloy"}
            )
        )
        keep(
            http.post(
                "/v1/audio/transcriptions",
                data={"model": "openai/whisper-1"},
                files={"file": ("a.wav", b"RIFF0000WAVEfmt ", "audio/wav")},
            )
        )
        keep(http.get("/v1/models"))
        keep(http.get("/v1/byok/dashboard"))
        keep(http.get("/v1/byok/openapi.json"))
        # Keys in a query string (the access log prints the path) and as a wrong gateway key.
        keep(http.get("/v1/byok/usage", params={"key": CANARIES["google"], "group_by": "model"}))
        keep(http.get("/v1/byok/providers", headers={"authorization": f"Bearer {PLATFORM}"}))
        # Every provider's invalid-key answer, echoing the key its own way.
        for provider in ("openai", "deepseek", "google", "nvidia", "anthropic"):
            fake.script(provider, Scripted.invalid_key(provider), Scripted.invalid_key(provider))
            keep(
                http.post(
                    "/v1/chat/completions", json={"model": MODELS[provider], "messages": MESSAGES}
                )
            )
        # Rotation of a provider key (the record was just marked invalid).
        keep(http.put(f"/v1/byok/providers/{ids['openai']}", json={"api_key": ROTATED}))
        keep(http.post("/v1/chat/completions", json=chat))
        keep(http.get("/v1/byok/usage", params={"group_by": "provider"}))
        keep(http.delete(f"/v1/byok/providers/{ids['nvidia']}"))


def db_files(db_path: Path) -> list[Path]:
    found = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
    # The ledger journal, a folder next to the file, is a sink too: its files are searched.
    return [f for p in found for f in (sorted(p.iterdir()) if p.is_dir() else [p])]


def ledger_rows(db_path: Path) -> str:
    async def read() -> str:
        store = SQLiteStore(db_path)
        try:
            rows: list[Any] = []
            for tenant in await store.list_tenants():
                rows.extend(await store.list_usage(tenant.id, limit=10_000))
            records = await store.iter_key_batch(None, 10_000)
            return repr(rows) + repr(records) + repr(store)
        finally:
            await store.close()

    return asyncio.run(read())


def in_process_reprs(gateway: Gateway) -> str:
    """repr of every secret-bearing object, from a middleware over the same database."""
    middleware = BYOKMiddleware(Starlette(), config=gateway.config)

    async def collect() -> str:
        core = middleware.gateway
        await core.open()
        try:
            texts = [
                repr(middleware),
                repr(core),
                repr(core.config),
                repr(core.store),
                repr(core.keys),
                repr(core.keyring),
                repr(core.platform_keys),
                repr(core.upstreams._key_uses),
                str(core.config),
            ]
            for tenant in await core.store.list_tenants():
                for provider in CANARIES:
                    for resolved in await core.keys.keys_for(tenant.id, provider):
                        texts += [repr(resolved), repr(resolved.record), str(resolved.secret)]
                        candidate = Candidate(provider, resolved.secret, "byok", resolved.record)
                        texts.append(repr(candidate))
                        texts.append(repr(core.upstreams.key_use(candidate)))
            return "\n".join(texts)
        finally:
            await core.close()

    return asyncio.run(collect())


def echoed_errors() -> str:
    """The errors built from each provider's real key echo, for every status they could carry."""
    texts = []
    for provider, secret in CANARIES.items():
        answer = invalid_key(provider, secret)
        body = answer.body if isinstance(answer.body, bytes) else repr(answer.body).encode()

        raw = json.dumps(answer.body).encode()
        for status in (answer.status, 400, 404, 500):
            for data in (raw, body):
                error = normalize_error(
                    provider, status, data, redactor=Redactor([secret]), attribution="byok"
                )
                texts += [repr(error), str(error), repr(error.to_dict())]
    return "\n".join(texts)


def test_canaries_never_reach_any_sink(
    start_gateway: Callable[..., Gateway],
    fake: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keys of every provider, the platform key and both master keys appear in no sink."""
    caplog.set_level(logging.DEBUG)
    keep = Recorder()
    options: dict[str, Any] = {
        "platform_keys": {"openai": PLATFORM},
        "upstream_timeout": 1.0,
        "server_options": {"access_log": True},
    }
    first = start_gateway(master_key=f"old:{OLD_MASTER}", **options)
    drive_everything(first, fake, keep)
    first.server.stop()
    # The operator adds a new master key and rotates while a gateway serves.
    gateway = start_gateway(master_key=f"new:{NEW_MASTER},old:{OLD_MASTER}", **options)
    gateway.tenants = first.tenants
    monkeypatch.setenv("BYOK_MASTER_KEY", f"new:{NEW_MASTER},old:{OLD_MASTER}")
    assert main(["rotate-master-key", "--database-url", f"sqlite:///{gateway.db_path}"]) == 0
    drive_everything(gateway, fake, keep)
    # The WAL and SHM files exist while the server runs (a clean close checkpoints them away).
    live = {p.name: p.read_bytes() for p in db_files(gateway.db_path)}
    gateway.server.stop()

    used = {r.api_key for r in fake.requests}
    assert set(CANARIES.values()) | {ROTATED, PLATFORM} <= used, "every canary went upstream"
    assert "GET /v1/byok/providers" in caplog.text, "the access log was captured"

    cli = capsys.readouterr()
    assert_clean("CLI output", cli.out + cli.err)
    access = AccessFormatter()
    for record in caplog.records:
        rendered = access.format(record) if record.name == "uvicorn.access" else record.getMessage()
        text = f"{record.name} {record.msg!r} {record.args!r} {rendered} {record.exc_text}"
        assert_clean(f"log record of {record.name}", text)
    assert_clean("captured logs", caplog.text)
    for text in keep.seen:
        assert_clean("a response", text)
    assert {"byok.db", "byok.db-wal", "byok.db-shm"} <= set(live), sorted(live)
    for name, content in live.items():
        assert_clean(f"database file {name} (live)", content)
    for path in db_files(gateway.db_path):
        assert_clean(f"database file {path.name} (closed)", path.read_bytes())
    assert_clean("ledger rows and key records", ledger_rows(gateway.db_path))
    assert_clean("object reprs", in_process_reprs(gateway))
    assert_clean("errors built from upstream echoes", echoed_errors())


@pytest.mark.parametrize(
    "error",
    [
        {"type": "invalid key sk-proj-CANARYtypeCANARYtypeCANARY01", "message": "no"},
        {"status": "bad sk-proj-CANARYtypeCANARYtypeCANARY01", "message": "no"},
        {"type": "x", "code": "sk-proj-CANARYtypeCANARYtypeCANARY01", "message": "no"},
    ],
)
def test_a_key_echoed_in_an_error_type_or_code_is_redacted(error: dict[str, str]) -> None:
    """Every field of an upstream error that reaches the client (and the ledger) is redacted."""
    secret = "sk-proj-CANARYtypeCANARYtypeCANARY01"
    body = json.dumps({"error": error}).encode()
    built = normalize_error("openai", 400, body, redactor=Redactor([secret]), attribution="byok")
    assert secret not in repr(built.to_dict())
    assert secret not in str(built.error_type)

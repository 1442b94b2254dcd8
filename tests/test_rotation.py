"""Master-key rotation: online, compare-and-swap per row, refusing a keyring that cannot read."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from byok_middleware import Keyring, MemoryStore, SQLiteStore, generate_master_key
from byok_middleware.cli import main
from byok_middleware.crypto import associated_data
from byok_middleware.gateway.keys import KeyPatch, KeyService, NewKey
from byok_middleware.rotation import RotationRefused, check_keyring, rotate_master_key
from byok_middleware.storage.base import KeyStore
from byok_middleware.testing import FakeUpstream
from tests.conftest import Gateway

OLD, NEW = generate_master_key(), generate_master_key()
OLD_RING = Keyring.parse(f"old:{OLD}")
BOTH = Keyring.parse(f"new:{NEW},old:{OLD}")
NEW_ONLY = Keyring.parse(f"new:{NEW}")
MESSAGES = [{"role": "user", "content": "Hello"}]


def provider_key(n: int) -> str:
    return f"sk-rotation-{n:04d}-0123456789abcdef"


async def seed(store: KeyStore, keyring: Keyring, count: int) -> dict[str, str]:
    """``count`` keys over three tenants; returns record id -> plaintext."""
    service = KeyService(store, keyring)
    plaintexts = {}
    for n in range(count):
        record = await service.create(
            f"tenant-{n % 3}", NewKey(provider="openai", api_key=provider_key(n), priority=n + 1)
        )
        plaintexts[record.id] = provider_key(n)
    return plaintexts


async def read_all(store: KeyStore, keyring: Keyring) -> dict[str, str]:
    rows = await store.iter_key_batch(None, 10_000)
    return {
        r.id: keyring.decrypt(r.ciphertext, associated_data(r.tenant_id, r.id, r.provider))
        for r in rows
    }


async def test_rotation_reencrypts_every_row_in_batches() -> None:
    """After a rotation every row opens with the new key alone; a second run finds nothing to do."""
    store = MemoryStore()
    plaintexts = await seed(store, OLD_RING, 11)
    report = await rotate_master_key(store, BOTH, batch_size=4)
    assert (report.rows, report.reencrypted, report.already_current) == (11, 11, 0)
    assert (report.remaining, report.changed_concurrently, report.unreadable) == (0, 0, 0)
    assert await read_all(store, NEW_ONLY) == plaintexts
    again = await rotate_master_key(store, BOTH, batch_size=4)
    assert (again.reencrypted, again.already_current) == (0, 11)


async def test_rotation_refuses_a_keyring_that_cannot_read_every_row() -> None:
    """Refused before any write, naming the row count and missing ids, never key material."""
    store = MemoryStore()
    await seed(store, OLD_RING, 3)
    await seed(store, Keyring.parse(f"other:{generate_master_key()}"), 2)
    before = {r.id: r.ciphertext for r in await store.iter_key_batch(None, 100)}
    with pytest.raises(RotationRefused) as caught:
        await rotate_master_key(store, Keyring.parse(f"new:{NEW}"), batch_size=2)
    message = str(caught.value)
    assert "5 of 5" in message
    assert "'old'" in message and "'other'" in message
    assert NEW not in message and OLD not in message and "sk-rotation" not in message
    assert {r.id: r.ciphertext for r in await store.iter_key_batch(None, 100)} == before
    check = await check_keyring(store, BOTH)
    assert (check.unreadable, check.missing_key_ids) == (2, ("other",))


class RacingStore(MemoryStore):
    """A store in which the app rotates a key through PUT just before each swap lands."""

    def __init__(self) -> None:
        super().__init__()
        self.race: Callable[[str], Any] | None = None

    async def replace_ciphertext(self, key_id: str, old: bytes, new: bytes) -> bool:
        if self.race is not None:
            race, self.race = self.race, None
            await race(key_id)
        return await super().replace_ciphertext(key_id, old, new)


async def test_a_concurrent_put_wins_over_the_rotation() -> None:
    """The compare-and-swap fails, the row is re-read, and the tenant's new key stands."""
    store = RacingStore()
    plaintexts = await seed(store, OLD_RING, 3)
    app = KeyService(store, BOTH)  # the app already runs with the new keyring
    rotated: dict[str, str] = {}

    async def put(key_id: str) -> None:
        record = next(r for r in await store.iter_key_batch(None, 100) if r.id == key_id)
        await app.update(record.tenant_id, key_id, KeyPatch(api_key="sk-put-during-rotation-1"))
        rotated[key_id] = "sk-put-during-rotation-1"

    store.race = put
    report = await rotate_master_key(store, BOTH, batch_size=2)
    assert (report.reencrypted, report.changed_concurrently, report.remaining) == (2, 1, 0)
    assert await read_all(store, NEW_ONLY) == {**plaintexts, **rotated}


class CrashingStore(MemoryStore):
    def __init__(self, crash_after: int) -> None:
        super().__init__()
        self.left = crash_after

    async def replace_ciphertext(self, key_id: str, old: bytes, new: bytes) -> bool:
        if self.left == 0:
            raise RuntimeError("power cut")
        self.left -= 1
        return await super().replace_ciphertext(key_id, old, new)


async def test_a_crash_half_way_leaves_every_row_readable() -> None:
    """Half the rows are under each key; the full keyring reads all; a re-run finishes."""
    store = CrashingStore(crash_after=3)
    plaintexts = await seed(store, OLD_RING, 7)
    with pytest.raises(RuntimeError):
        await rotate_master_key(store, BOTH, batch_size=2)
    assert await read_all(store, BOTH) == plaintexts
    assert (await check_keyring(store, BOTH)).by_key_id == {"new": 3, "old": 4}
    store.left = 100
    report = await rotate_master_key(store, BOTH, batch_size=2)
    assert (report.reencrypted, report.already_current, report.remaining) == (4, 3, 0)
    assert await read_all(store, NEW_ONLY) == plaintexts


def test_cli_rotates_then_refuses_without_the_old_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rotate-master-key` prints a summary (exit 0), and refuses clearly (exit 3) when needed."""
    db = tmp_path / "rotate.db"

    async def prepare() -> None:
        store = SQLiteStore(db)
        await seed(store, OLD_RING, 5)
        await store.close()

    asyncio.run(prepare())
    url = f"sqlite:///{db}"
    monkeypatch.setenv("BYOK_MASTER_KEY", f"new:{NEW}")
    assert main(["rotate-master-key", "--database-url", url, "--batch-size", "2"]) == 3
    err = capsys.readouterr().err
    assert "5 of 5" in err and "'old'" in err and "nothing was changed" in err
    assert NEW not in err and OLD not in err and "sk-rotation" not in err

    monkeypatch.setenv("BYOK_MASTER_KEY", f"new:{NEW},old:{OLD}")
    assert main(["rotate-master-key", "--database-url", url, "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "5 re-encrypted, 0 already current" in out
    assert "'old' can now be removed" in out
    monkeypatch.setenv("BYOK_MASTER_KEY", f"new:{NEW}")
    assert main(["rotate-master-key", "--database-url", url, "--batch-size", "2"]) == 0
    assert "0 re-encrypted, 5 already current" in capsys.readouterr().out
    assert main(["rotate-master-key", "--database-url", url, "--batch-size", "0"]) == 2


def test_rotation_under_concurrent_load(
    start_gateway: Callable[..., Gateway], fake: FakeUpstream
) -> None:
    """4 clients chat through a running gateway while another connection rotates the file:
    no request fails, a PUT rotation during the run stands, every key opens with the new key."""
    first = start_gateway(master_key=f"old:{OLD}")
    tenants = [f"t{n}" for n in range(4)]
    keys: dict[str, str] = {}
    for n in range(24):
        tenant = tenants[n % 4]
        view = first.add_key(tenant, "openai", provider_key(n), priority=n + 1)
        keys[view["id"]] = provider_key(n)
    first.server.stop()
    # Every replica gets the new keyring first; a short cache TTL keeps the app reading (and
    # decrypting) rows from the database while they are being swapped.
    gateway = start_gateway(master_key=f"new:{NEW},old:{OLD}", key_cache_ttl=0.05)
    gateway.tenants = first.tenants
    failures: list[str] = []
    completed: list[int] = []

    def client(tenant: str) -> None:
        with gateway.client(tenant) as http:
            for _ in range(25):
                body = {"model": "openai/gpt-4o", "messages": MESSAGES}
                try:
                    response = http.post("/v1/chat/completions", json=body)
                except httpx.HTTPError as exc:
                    failures.append(f"{tenant}: {type(exc).__name__}")
                    continue
                if response.status_code != 200:
                    failures.append(f"{tenant}: {response.status_code} {response.text[:200]}")
                completed.append(1)

    threads = [threading.Thread(target=client, args=(t,)) for t in tenants]
    deadline = time.monotonic() + 60
    for thread in threads:
        thread.start()

    async def rotate() -> Any:
        store = SQLiteStore(gateway.db_path)  # its own connection to the same file
        try:
            await asyncio.sleep(0.1)  # let the clients get going
            before = len(completed)
            result = await rotate_master_key(store, BOTH, batch_size=5)
            overlap.append(len(completed) - before)
            return result
        finally:
            await store.close()

    overlap: list[int] = []
    put_id = next(iter(keys))
    with gateway.client(tenants[0]) as http:
        response = http.put(f"/v1/byok/providers/{put_id}", json={"api_key": "sk-put-new-key-0001"})
    assert response.status_code == 200
    keys[put_id] = "sk-put-new-key-0001"
    report = asyncio.run(rotate())
    for thread in threads:
        thread.join(timeout=max(deadline - time.monotonic(), 0.1))
    assert overlap[0] > 0, "the rotation did not overlap any request"
    assert len(completed) == 100
    assert not any(thread.is_alive() for thread in threads), "the clients did not finish in time"
    assert failures == []
    assert report.rows == 24 and report.remaining == 0
    assert report.reencrypted + report.already_current + report.changed_concurrently == 24
    gateway.server.stop()

    async def verify() -> dict[str, str]:
        store = SQLiteStore(gateway.db_path)
        try:
            return await read_all(store, NEW_ONLY)
        finally:
            await store.close()

    assert asyncio.run(verify()) == keys
    used = {r.api_key for r in fake.requests_for("openai")}
    assert used <= set(keys.values()) | {provider_key(0)}

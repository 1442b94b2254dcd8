"""RedisBus on a real Redis: invalidations reach every replica, also across a Redis restart."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio

from byok_middleware import BYOKConfig, generate_master_key
from byok_middleware.errors import ConfigurationError
from byok_middleware.gateway import Gateway
from byok_middleware.shared import EVERY_TENANT, safe_url
from byok_middleware.shared.redis_bus import RedisBus
from byok_middleware.shared.redis_counters import RedisCounters
from byok_middleware.state import InvalidationBus, LocalBus, MemoryCounters
from tests.servers import free_port
from tests.services import service_url

UNREACHABLE = "redis://:hunter2@127.0.0.1:1/0"  # nothing listens on port 1
WAIT = 5.0  # seconds any single expected delivery may take at most


@pytest.fixture
def redis_url() -> str:
    return service_url("redis")


class Heard:
    """A listener recording what it was told, with a bounded wait for the next message."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._changed = asyncio.Event()

    def __call__(self, tenant_id: str) -> None:
        self.messages.append(tenant_id)
        self._changed.set()

    async def wait_for(self, message: str, within: float = WAIT) -> float:
        """Seconds until ``message`` arrived (fails after ``within`` seconds)."""
        started = time.monotonic()
        async with asyncio.timeout(within):
            while message not in self.messages:
                self._changed.clear()
                await self._changed.wait()
        return time.monotonic() - started


@pytest.fixture
async def buses(redis_url: str) -> AsyncIterator[Callable[..., RedisBus]]:
    made: list[RedisBus] = []

    def make(url: str = redis_url, **options: object) -> RedisBus:
        made.append(RedisBus(url, channel=f"byok-test:{id(made)}", **options))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for bus in made:
        await bus.close()


async def test_is_an_invalidation_bus(buses: Callable[..., RedisBus]) -> None:
    """RedisBus satisfies the InvalidationBus protocol the gateway takes."""
    assert isinstance(buses(), InvalidationBus)


async def test_a_publish_reaches_every_replica_quickly(buses: Callable[..., RedisBus]) -> None:
    """A tenant id published by one replica is heard by all of them (itself too) within 1 s."""
    first, second = buses(), buses()
    heard_first, heard_second = Heard(), Heard()
    await first.start(heard_first)
    await second.start(heard_second)
    await first.publish("t-acme")
    assert await heard_second.wait_for("t-acme") < 1.0
    assert await heard_first.wait_for("t-acme") < 1.0
    assert heard_second.messages == ["t-acme"]


async def test_a_failing_listener_does_not_stop_the_bus(buses: Callable[..., RedisBus]) -> None:
    """An exception in the listener is logged; later messages are still delivered."""
    heard = Heard()

    async def flaky(tenant_id: str) -> None:
        if tenant_id == "boom":
            raise RuntimeError("listener bug")
        heard(tenant_id)

    bus = buses()
    await bus.start(flaky)
    await bus.publish("boom")
    await bus.publish("t-acme")
    await heard.wait_for("t-acme")


async def test_a_dropped_connection_reconnects_and_invalidates_all(
    buses: Callable[..., RedisBus], redis_url: str
) -> None:
    """After its connection is killed the bus resubscribes and says "every tenant" once."""
    bus, heard = buses(), Heard()
    await bus.start(heard)
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await admin.client_kill_filter(_type="pubsub") >= 1
    finally:
        await admin.aclose()
    await heard.wait_for(EVERY_TENANT)
    assert bus.reconnects == 1
    await bus.publish("t-after")
    await heard.wait_for("t-after")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts (and restarts) a Redis of this test's own on a fixed free port."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_url("redis")  # skips, or fails under CI, with the set-up hint
        pytest.skip("redis-server is not installed")
    port = free_port()
    running: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(  # noqa: S603 -- a fixed binary and arguments
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        running.append(process)
        return process

    start.port = port  # type: ignore[attr-defined]
    yield start
    for process in running:
        process.terminate()
        process.wait(timeout=10)


async def _until_pings(url: str) -> None:
    client = redis.asyncio.Redis.from_url(url)
    try:
        async with asyncio.timeout(WAIT):
            while True:
                try:
                    await client.ping()
                    return
                except (redis.exceptions.ConnectionError, OSError):
                    await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def test_survives_a_redis_restart(
    buses: Callable[..., RedisBus], private_redis: Callable[[], subprocess.Popen[bytes]]
) -> None:
    """Redis stops and comes back: publishes in between are not errors; the bus reconnects
    (bounded backoff), invalidates every tenant, and delivers again."""
    url = f"redis://127.0.0.1:{private_redis.port}/0"  # type: ignore[attr-defined]
    server = private_redis()
    await _until_pings(url)
    bus, heard = buses(url, max_backoff=0.2), Heard()
    await bus.start(heard)
    server.terminate()
    await asyncio.to_thread(server.wait, 10)
    await bus.publish("t-lost")  # logged, not raised: the change itself is already stored
    await asyncio.sleep(0.3)  # several failed reconnection attempts
    private_redis()
    await _until_pings(url)
    await heard.wait_for(EVERY_TENANT)
    await bus.publish("t-after")
    await heard.wait_for("t-after")
    assert "t-lost" not in heard.messages


async def test_unreachable_redis_is_a_clear_start_up_error(buses: Callable[..., RedisBus]) -> None:
    """start() names Redis and the URL without its password."""
    bus = buses(UNREACHABLE)
    with pytest.raises(ConfigurationError, match="Redis at") as caught:
        await bus.start(Heard())
    assert "hunter2" not in str(caught.value)
    assert "127.0.0.1:1/0" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
        ("postgresql://u:hunter2@db/byok", "postgresql://u:***@db/byok"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("postgresql://u:hunter2@[::1]:5432/x", "postgresql://u:***@[::1]:5432/x"),
        ("redis://:hunter2@h:notaport/0", "redis://***"),
        ("postgresql://u:hun#ter2@db:5432/byok", "postgresql://***@db:5432/byok"),
        ("postgresql://u:hun/ter?2@db/byok", "postgresql://***@db/byok"),
    ],
)
def test_safe_url_hides_passwords(url: str, shown: str) -> None:
    """Error messages show URLs with the password masked."""
    assert safe_url(url) == shown


# The gateway's wiring


def config(**changes: object) -> BYOKConfig:
    return BYOKConfig(master_key=generate_master_key(), database_url="memory://", **changes)  # type: ignore[arg-type]


async def test_gateway_builds_redis_state_from_the_url(redis_url: str) -> None:
    """With redis_url and nothing injected, the gateway uses RedisBus and RedisCounters."""
    gateway = Gateway(config(redis_url=redis_url))
    assert isinstance(gateway.bus, RedisBus)
    assert isinstance(gateway.counters, RedisCounters)
    await gateway.open()
    await gateway.close()


def test_gateway_without_redis_url_stays_in_process() -> None:
    """Without redis_url the single-replica, in-process state is used; injected state wins."""
    gateway = Gateway(config())
    assert isinstance(gateway.bus, LocalBus)
    assert isinstance(gateway.counters, MemoryCounters)
    bus, counters = LocalBus(), MemoryCounters()
    injected = Gateway(config(redis_url="redis://h/0"), bus=bus, counters=counters)
    assert (injected.bus, injected.counters) == (bus, counters)


def test_gateway_without_redis_py_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis URL without redis-py installed is a ConfigurationError naming the extra."""
    # None in sys.modules makes the import fail exactly as a missing module would.
    monkeypatch.setitem(sys.modules, "byok_middleware.shared.redis_bus", None)
    with pytest.raises(ConfigurationError, match=r"byok_middleware\[redis\]"):
        Gateway(config(redis_url="redis://:hunter2@h/0"))


async def test_gateway_with_unreachable_redis_fails_to_open() -> None:
    """open() fails naming Redis (no password) and leaves the store closed."""
    gateway = Gateway(config(redis_url=UNREACHABLE))
    with pytest.raises(ConfigurationError, match="Redis at") as caught:
        await gateway.open()
    assert "hunter2" not in str(caught.value)
    await gateway.close()

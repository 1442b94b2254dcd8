"""RedisCounters on a real Redis: sliding windows that every replica shares, atomically."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from byok_middleware.shared.redis_counters import RedisCounters
from byok_middleware.state import Counters, MemoryCounters
from tests.services import service_url

UNREACHABLE = "redis://:hunter2@127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def redis_url() -> str:
    return service_url("redis")


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[Callable[[], RedisCounters]]:
    """Makes counters as separate replicas would have them, on a key prefix of this test's own."""
    prefix = f"byok-test:{uuid.uuid4().hex}:"
    made: list[RedisCounters] = []

    def make() -> RedisCounters:
        made.append(RedisCounters(redis_url, key_prefix=prefix))
        return made[-1]

    yield make
    for counters in made:
        await counters.close()


async def test_is_a_counters(replicas: Callable[[], RedisCounters]) -> None:
    """RedisCounters satisfies the Counters protocol the gateway takes."""
    assert isinstance(replicas(), Counters)


async def test_window_sums_are_shared(replicas: Callable[[], RedisCounters]) -> None:
    """What one replica adds, the other counts; names are independent."""
    first, second = replicas(), replicas()
    assert await first.add("rpm:k1", 1, 60) == 1
    assert await second.add("rpm:k1", 1, 60) == 2
    assert await first.add("tpm:k1", 500, 60) == 500
    assert await second.total("rpm:k1", 60) == 2
    assert await second.total("tpm:k1", 60) == 500
    assert await first.total("rpm:other", 60) == 0


async def test_events_leave_the_window(replicas: Callable[[], RedisCounters]) -> None:
    """An event older than the window no longer counts (Redis's clock decides)."""
    counters = replicas()
    await counters.add("rpm:k1", 3, 0.3)
    deadline = time.monotonic() + 3
    while await counters.total("rpm:k1", 0.3) and time.monotonic() < deadline:  # noqa: ASYNC110 -- polls Redis's clock, no event to await
        await asyncio.sleep(0.05)
    assert await counters.total("rpm:k1", 0.3) == 0
    assert await counters.add("rpm:k1", 2, 0.3) == 2


async def test_concurrent_adds_are_atomic(replicas: Callable[[], RedisCounters]) -> None:
    """200 concurrent adds over two replicas each see a distinct running sum, none lost."""
    first, second = replicas(), replicas()
    results = await asyncio.gather(
        *((first if n % 2 else second).add("rpm:k1", 1, 60) for n in range(200))
    )
    assert sorted(results) == list(range(1, 201))
    assert await first.total("rpm:k1", 60) == 200


async def test_agrees_with_memory_counters(replicas: Callable[[], RedisCounters]) -> None:
    """The same sequence of adds gives the same sums as the in-process implementation."""
    redis_counters, memory = replicas(), MemoryCounters()
    for amount in (5, 0, 7, -2, 11):
        assert await redis_counters.add("tpm:k1", amount, 60) == await memory.add(
            "tpm:k1", amount, 60
        )


async def test_refuses_a_non_positive_window(replicas: Callable[[], RedisCounters]) -> None:
    """A window of zero seconds is a caller bug, not an empty sum."""
    with pytest.raises(ValueError, match="window"):
        await replicas().add("rpm:k1", 1, 0)


async def test_an_outage_falls_back_to_local_counting(caplog: pytest.LogCaptureFixture) -> None:
    """Without Redis the counters keep counting in-process and warn once, never the password."""
    counters = RedisCounters(UNREACHABLE)
    try:
        with caplog.at_level(logging.WARNING, logger="byok_middleware.shared"):
            assert await counters.add("rpm:k1", 1, 60) == 1
            assert await counters.add("rpm:k1", 1, 60) == 2
            assert await counters.total("rpm:k1", 60) == 2
        warnings = [r for r in caplog.records if "counting in this process" in r.getMessage()]
        assert len(warnings) == 1
        assert "hunter2" not in caplog.text
    finally:
        await counters.close()

"""The ledger journal's cost per row on the request path (issue 18).

Run: ``python -m benchmarks.journal``.

Measures, per row, ``clean_row`` (the row check), ``Journal.append`` (one JSON line copied into
the mapped segment, its first row reserving the segment) and the whole ``Ledger.record`` with a
journal, on the temporary folder's file system. Prints microseconds per row (best of five rounds
of 20 000 rows).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from byok_middleware.gateway.journal import Journal
from byok_middleware.gateway.ledger import Ledger
from byok_middleware.gateway.ledger_rows import clean_row
from byok_middleware.storage import MemoryStore
from byok_middleware.storage.base import UsageRecord

ROWS = 20_000
ROUNDS = 5


def _row(index: int) -> UsageRecord:
    return UsageRecord(
        request_id=f"req_{index:016x}", tenant_id="tenant-1", key_id="key_0123456789abcdef",
        provider="openai", model="gpt-4o-mini", endpoint="/chat/completions",
        attribution="byok", prompt_tokens=812, completion_tokens=97, cached_tokens=0,
        cost_usd=Decimal("0.00018"), status_code=200, latency_ms=412.7,
        created_at=datetime.now(UTC), ttft_ms=201.3, cost_source="price_table",
    )  # fmt: skip


def _best(step: Callable[[UsageRecord], object], rows: list[UsageRecord]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for row in rows:
            step(row)
        best = min(best, (time.perf_counter() - started) / len(rows))
    return best * 1e6


async def main() -> None:
    rows = [_row(i) for i in range(ROWS)]
    with tempfile.TemporaryDirectory() as folder:
        journal = Journal(folder + "/j")
        journal.open()
        print(f"clean_row       {_best(clean_row, rows):6.2f} us/row")
        print(f"Journal.append  {_best(journal.append, rows):6.2f} us/row")
        journal.close()
        store = MemoryStore()
        await store.open()
        ledger = Ledger(store, interval=3600, batch=10**9, journal=Journal(folder + "/l"))
        ledger.start()
        print(f"Ledger.record   {_best(ledger.record, rows):6.2f} us/row (clean + journal + queue)")
        bare = Ledger(store, interval=3600, batch=10**9)
        bare.start()
        print(f"  without one   {_best(bare.record, rows):6.2f} us/row (clean + queue)")
        await ledger.close()
        await bare.close()


if __name__ == "__main__":
    asyncio.run(main())

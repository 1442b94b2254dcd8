"""``python -m benchmarks.cache_bench``: the response cache's lookup time at scale.

Fills one tenant's cache with ``--entries`` answers (default 100,000) whose vectors have
``--dim`` dimensions (default 1536, text-embedding-3-small's), then times ``ResponseCache.lookup``
for semantic hits (a perturbed stored vector), semantic misses (an unrelated vector) and exact
hits. The embedder returns precomputed vectors, so the figures exclude the embedding call, as the
target does: a semantic lookup at 100,000 entries under 5 ms at p99.

The vectors are random unit vectors: the hardest case for a graph index (no clusters), so the
hit counts are a floor for the index's recall. Writes the ``cache-semantic`` section of
``benchmarks/RESULTS.md`` (``cache-semantic-sqlite`` with ``--backend sqlite``; ``--no-write``:
print only), with the load average beside the figures:
wall time includes waiting for a core on a shared machine, CPU time is the lookup's own.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.results import replace_section
from byok_middleware.cache import (
    CacheBackend,
    CacheEntry,
    CacheMode,
    CacheSettings,
    MemoryBackend,
    ResponseCache,
    SQLiteBackend,
    StoredEntry,
    request_keys,
)
from byok_middleware.cache.entry import seal_entry, seal_vector
from byok_middleware.crypto import Keyring, generate_master_key

TENANT = "bench-tenant"
TARGET_P99_MS = 5.0


class Precomputed:
    """An embedder over a table filled before timing: a lookup costs a dict read."""

    name = "bench/precomputed"

    def __init__(self) -> None:
        self.table: dict[str, Sequence[float]] = {}

    async def embed(self, tenant_id: str, text: str) -> Sequence[float]:
        return self.table[text.removeprefix("user: ")]


def body(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], "temperature": 0}


def answer(i: int) -> dict[str, Any]:
    message = {"role": "assistant", "content": f"Answer number {i}. " * 8, "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    return {"id": f"c{i}", "object": "chat.completion", "created": 1, "choices": [choice]}


def unit_rows(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    rows = rng.standard_normal((count, dim)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


async def timed(
    samples: int, call: Callable[[int], Awaitable[bool]]
) -> tuple[list[float], list[float], int]:
    """Wall and CPU milliseconds per call, and how many calls returned True. On a shared
    machine the wall time includes waiting for a core; the CPU time is the lookup's own."""
    wall, cpu, hits = [], [], 0
    for i in range(samples):
        start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        hits += await call(i)
        cpu.append((time.thread_time_ns() - start_cpu) / 1e6)
        wall.append((time.perf_counter_ns() - start) / 1e6)
    return wall, cpu, hits


async def fill(
    cache: ResponseCache, backend: CacheBackend, keyring: Keyring, vectors: np.ndarray, name: str
) -> None:
    """Store answers as another replica would (sealed rows in the backend), then let this
    process's index catch up in pages, as a replica does after it starts."""
    for i, vector in enumerate(vectors):
        keys = request_keys(
            TENANT, "openai", "gpt-4o", body(f"question {i}"), semantic=True, embedder=name
        )
        entry = CacheEntry("chat", answer(i), None, "openai", "gpt-4o", 0.0)
        await backend.put(
            StoredEntry(
                tenant_id=TENANT,
                key=keys.exact,
                sealed=seal_entry(keyring, TENANT, keys.exact, entry),
                created_at=0.0,
                expires_at=1e12,
                group=keys.group,
                vector=seal_vector(keyring, TENANT, keys.exact, vector.tobytes()),
            ),
            now=0.0,
        )
    await cache.sync_tenant(TENANT)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 10) - 1]


def _load() -> str:
    return ", ".join(f"{figure:.2f}" for figure in os.getloadavg())


async def run(
    entries: int,
    dim: int,
    samples: int,
    backend: CacheBackend,
    lines: list[str],
    profile: bool = False,
) -> bool:
    rng = np.random.default_rng(7)
    embedder = Precomputed()
    settings = CacheSettings(mode=CacheMode.SEMANTIC, max_bytes=8 * 1024**3)
    cache = ResponseCache(
        backend, Keyring.parse(generate_master_key()), settings, embedder=embedder
    )
    vectors = unit_rows(rng, entries, dim)
    started = time.perf_counter()
    for i in range(entries):
        embedder.table[f"question {i}"] = vectors[i].tolist()
        await cache.store(
            TENANT, "openai", "gpt-4o", body(f"question {i}"), answer(i), cost_usd=None, defer=True
        )  # as the request path stores: written behind, in batches
    await cache.flush()
    fill = time.perf_counter() - started
    await cache.sync_tenant(TENANT)
    sizes = await cache.sizes()
    filled = (
        f"filled {sizes.indexed[TENANT]:,} vectors of {dim} dims in {fill:.1f} s "
        f"({sizes.backend.bytes / 1e6:.0f} MB sealed, backend {backend!r})"
    )
    print(filled)
    load_before = _load()

    picks = rng.integers(0, entries, samples)
    noise = unit_rows(rng, samples, dim) * 0.05
    for j in range(samples):
        near = vectors[picks[j]] + noise[j]
        embedder.table[f"paraphrase {j}"] = (near / np.linalg.norm(near)).tolist()
    for j, row in enumerate(unit_rows(rng, samples, dim)):
        embedder.table[f"unrelated {j}"] = row.tolist()

    async def lookup(text: str) -> bool:
        return await cache.lookup(TENANT, "openai", "gpt-4o", body(text)) is not None

    results = {
        "semantic hit": await timed(samples, lambda j: lookup(f"paraphrase {j}")),
        "semantic miss": await timed(samples, lambda j: lookup(f"unrelated {j}")),
        "exact hit": await timed(samples, lambda j: lookup(f"question {picks[j]}")),
    }
    load = f"{load_before} before the lookups, {_load()} after"
    ok = True
    lines += [
        "## The response cache's lookups at scale: `python -m benchmarks.cache_bench`",
        "",
        f"- {filled}; {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average (1, 5, 15 min) {load}.",
        f"- {samples} lookups of each kind, one after another, the embedding call excluded (a "
        "precomputed table); wall and CPU (`thread_time`) milliseconds per lookup. Random unit "
        "vectors: a semantic hit is a stored vector plus noise of norm 0.05 (cosine ~0.999), a "
        "miss an unrelated vector; the hit count is a floor for the index's recall.",
        "",
        "| lookup | wall p50 ms | wall p99 ms | CPU p50 ms | CPU p99 ms | hits |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, (wall, cpu, hits) in results.items():
        print(
            f"{name:14} wall p50 {statistics.median(wall):6.3f} p99 {percentile(wall, 99):6.3f}"
            f" | cpu p50 {statistics.median(cpu):6.3f} p99 {percentile(cpu, 99):6.3f} ms"
            f" | hits {hits}/{samples}"
        )
        lines.append(
            f"| {name} | {statistics.median(wall):.3f} | {percentile(wall, 99):.3f} "
            f"| {statistics.median(cpu):.3f} | {percentile(cpu, 99):.3f} | {hits}/{samples} |"
        )
        ok = ok and percentile(wall, 99) < TARGET_P99_MS
    if profile:  # the semantic hits again, under cProfile
        profiler = cProfile.Profile()
        profiler.enable()
        for j in range(samples):
            await lookup(f"paraphrase {j}")
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    await cache.close()
    verdict = "meets" if ok else "MISSES"
    print(f"{verdict} the target: p99 < {TARGET_P99_MS} ms at {entries:,} entries (load {load})")
    lines += [
        "",
        f"Target (issue 22): a lookup under {TARGET_P99_MS:g} ms at p99 (wall) at {entries:,} "
        f"entries: **{'met' if ok else 'NOT met'}**.",
    ]
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--backend", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--no-write", action="store_true", help="print only; keep RESULTS.md")
    parser.add_argument("--profile", action="store_true", help="then the semantic hits profiled")
    args = parser.parse_args(argv)
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        backend: CacheBackend = (
            MemoryBackend(max_bytes=8 * 1024**3)
            if args.backend == "memory"
            else SQLiteBackend(str(Path(folder) / "bench.db"), max_bytes=8 * 1024**3)
        )
        ok = asyncio.run(
            run(args.entries, args.dim, args.samples, backend, lines, profile=args.profile)
        )
    if not args.no_write:
        shown = " ".join(sys.argv[1:] if argv is None else argv)
        lines.insert(2, f"- Command: `python -m benchmarks.cache_bench {shown}`.")
        # One section per backend: the SQLite one (the default store) does not hide the other.
        section = "cache-semantic" if args.backend == "memory" else f"cache-semantic-{args.backend}"
        replace_section(section, lines)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

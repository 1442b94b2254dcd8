"""Scenarios: wrk runs with server CPU per request, and streamed timings from the asyncio client."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import gcwatch
from benchmarks.procs import cpu_seconds, wait_until_idle
from benchmarks.stream_client import content_stamps, run_sequential

LUA = Path(__file__).with_name("post.lua")
MODEL = "openai/gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]


def chat_body(*, stream: bool, delay_ms: float = 0) -> bytes:
    body: dict[str, object] = {"model": MODEL, "messages": MESSAGES, "max_tokens": 32}
    if stream:
        body["stream"] = True
    if delay_ms:
        body["mock_chunk_delay_ms"] = delay_ms  # read by the mock; proxies pass it through
    return json.dumps(body, separators=(",", ":")).encode()


TOP_GRID = [90 + i / 100 for i in range(1000)]  # post.lua's "top": p90 ... p99.99, then max


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx + socket errors
    cpu_seconds: float | None  # server CPU over the `counted` requests; None when not measured
    counted: int  # the requests completed, and those in flight when wrk stopped
    p999_ms: float = float("nan")
    top_ms: list[float] = field(default_factory=list)  # latency on TOP_GRID, then the maximum
    full_gcs_ms: list[float] | None = None  # the server's full collections; None: not watched

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float | None:
        if self.cpu_seconds is None or not self.requests:
            return None
        return self.cpu_seconds * 1000 / self.counted


def merged_percentile(slices: Sequence[WrkResult], percentile: float) -> float:
    """``percentile`` (>= 90) of the slices' requests together, from each slice's latencies on
    TOP_GRID: each grid step stands for 0.01% of its slice's requests. Exact to the grid."""
    points: list[tuple[float, float]] = []
    for part in slices:
        if len(part.top_ms) != len(TOP_GRID) + 1:
            return max(part.p99_ms if percentile < 99.9 else part.p999_ms for part in slices)
        points += [(value, part.requests / 10_000) for value in part.top_ms[:-1]]
    total = sum(part.requests for part in slices)
    above = total * (100 - percentile) / 100  # requests slower than the answer
    passed = 0.0
    for value, weight in sorted(points, reverse=True):
        passed += weight
        if passed > above + 1e-9:
            return value
    return min(value for value, _ in points) if points else float("nan")


def combine(slices: Sequence[WrkResult]) -> WrkResult:
    """Slices of one measurement as one: requests, time, errors, CPU and full collections
    summed; p50 is the median slice's; p99 and p99.9 are of all the slices' requests together
    (``merged_percentile``)."""
    cpu = [part.cpu_seconds for part in slices]
    gcs = [part.full_gcs_ms for part in slices]
    return WrkResult(
        requests=sum(part.requests for part in slices),
        seconds=sum(part.seconds for part in slices),
        p50_ms=statistics.median(part.p50_ms for part in slices),
        p99_ms=merged_percentile(slices, 99),
        errors=sum(part.errors for part in slices),
        cpu_seconds=None if None in cpu else sum(c for c in cpu if c is not None),
        counted=sum(part.counted for part in slices),
        p999_ms=merged_percentile(slices, 99.9),
        top_ms=[max(part.top_ms[-1] for part in slices)] if slices[0].top_ms else [],
        full_gcs_ms=None if None in gcs else [ms for part in gcs for ms in part or []],
    )


def run_wrk(
    url: str,
    body: bytes,
    auth: str | None,
    *,
    connections: int,
    seconds: float,
    server_pid: int | None,
    core: str,
    gc_log: Path | None = None,
    vary: bool = False,
) -> WrkResult:
    """One wrk run pinned to ``core``; server CPU is read from /proc around it, and with
    ``gc_log`` (``benchmarks.gcwatch``) the server's full collections during it."""
    argv = [
        "taskset", "-c", core, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "--timeout", "10s", "-s", str(LUA), url,
    ]  # fmt: skip
    env = {"BENCH_BODY": body.decode(), "BENCH_AUTH": auth or "", "PATH": "/usr/bin:/bin"}
    if vary:
        env["BENCH_VARY"] = "1"
    before = cpu_seconds(server_pid) if server_pid else 0.0
    started_ns = time.monotonic_ns()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    out = done.stdout
    after = 0.0
    if server_pid:
        # wrk stops with `connections` requests in flight; the server finishes them anyway, so
        # CPU is read once it is idle and those requests are counted (negligible for fast targets,
        # decisive for one that completes only a few dozen).
        wait_until_idle(server_pid)
        after = cpu_seconds(server_pid)
    gcs = gcwatch.read(gc_log, started_ns, time.monotonic_ns()) if gc_log else None
    line = next(x for x in out.splitlines() if x.startswith("BENCH_JSON "))
    data = json.loads(line.split(" ", 1)[1])
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    requests = int(data["requests"])
    return WrkResult(
        requests=requests,
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=errors,
        cpu_seconds=after - before if server_pid else None,
        counted=requests + connections,
        p999_ms=data["p999_us"] / 1000,
        top_ms=[value / 1000 for value in data["top"]],
        full_gcs_ms=gcs,
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


@dataclass
class StreamLatency:
    count: int
    errors: int
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    full_p50_ms: float
    full_p99_ms: float


@dataclass
class ChunkGaps:
    gaps: int
    stamped: bool  # upstream send times reached the client (else nominal spacing is used)
    added_p50_ms: float
    added_p99_ms: float
    transit_p50_ms: float | None
    transit_p99_ms: float | None


def stream_latency(url: str, auth: str | None, count: int) -> StreamLatency:
    timings = asyncio.run(run_sequential(url, chat_body(stream=True), auth, count))
    ok = [t for t in timings if t.status == 200 and t.events]
    return StreamLatency(
        count=len(timings),
        errors=len(timings) - len(ok),
        ttfb_p50_ms=percentile([t.ttfb * 1000 for t in ok], 50),
        ttfb_p99_ms=percentile([t.ttfb * 1000 for t in ok], 99),
        full_p50_ms=percentile([t.total * 1000 for t in ok], 50),
        full_p99_ms=percentile([t.total * 1000 for t in ok], 99),
    )


def chunk_gaps(
    url: str, auth: str | None, delay_ms: float, *, connections: int, per_connection: int
) -> ChunkGaps:
    body = chat_body(stream=True, delay_ms=delay_ms)
    timings = asyncio.run(run_sequential(url, body, auth, per_connection, connections))
    added: list[float] = []
    transit: list[float] = []
    stamped = True
    for timing in timings:
        if timing.status != 200:
            continue
        chunks = content_stamps(timing)
        for (arrived, sent), (prev_arrived, prev_sent) in zip(chunks[1:], chunks, strict=False):
            if sent is not None and prev_sent is not None:
                spacing = (sent - prev_sent) / 1e6
            else:
                stamped, spacing = False, delay_ms
            added.append((arrived - prev_arrived) / 1e6 - spacing)
        transit.extend((a - s) / 1e6 for a, s in chunks if s is not None)
    return ChunkGaps(
        gaps=len(added),
        stamped=stamped and bool(transit),
        added_p50_ms=percentile(added, 50),
        added_p99_ms=percentile(added, 99),
        transit_p50_ms=percentile(transit, 50) if transit else None,
        transit_p99_ms=percentile(transit, 99) if transit else None,
    )


@dataclass
class Sample:
    """One target in one round."""

    wrk: dict[str, WrkResult] = field(default_factory=dict)
    slices: dict[str, list[WrkResult]] = field(default_factory=dict)  # a sliced scenario's parts
    latency: StreamLatency | None = None
    gaps: ChunkGaps | None = None
    rss_mb: float = 0.0
    foreign_load: float = 0.0  # share of all cores used by processes outside the benchmark
    failure: str = ""

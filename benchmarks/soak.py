"""``python -m benchmarks.soak``: the gateway under a long mixed load, memory sampled as it runs.

One gateway process as ``byok-middleware serve`` runs it (``byok_middleware.serving``, SQLite
store and ledger journal in a temporary directory) on core 0; the mock upstream and this
client (asyncio + httptools, ``--connections`` keep-alive connections) on core 1. Every request
completes: each connection sends its share one after another, so the ledger can be checked
row for row. The mix, by request number: tenants in turn (``--tenants``, each with two OpenAI
keys), plain and streamed chat alternately; half the tenants' first key contains ``flaky`` and
the mock answers 503 to every tenth call made with it, so those requests fail over to the
tenant's second key. With ``--features``, the tenants have a budget, the exact response cache
and Prometheus metrics are on, and prompts cycle through 1,000 variants (so the cache both
misses and hits).

Reported: RSS every ``--sample-every`` requests, its growth over the requests after the first
``--warmup-share`` of the run; open file descriptors and upstream connections (ESTABLISHED
sockets to the mock) after the warm-up and at the end; the ledger rows (counted in SQLite after
the gateway stopped, which flushes it) against the answers the client got, by status; full
collections in the gateway. Bounded: ``--requests`` (default 500,000) and ``--max-minutes``.
Writes the ``soak`` section of RESULTS.md (or ``--features``: ``soak-features``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httptools

from benchmarks import gcwatch
from benchmarks.procs import Server, cpu_seconds, rss_mb, wait_until_idle
from benchmarks.results import replace_section
from benchmarks.targets import ROOT, uvicorn_argv

SERVER_CORE, CLIENT_CORE = "0", "1"
MOCK_PORT, GATEWAY_PORT = 18150, 18250
PATH = "/v1/chat/completions"


def open_fds(pid: int) -> list[str]:
    try:
        return [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return []


def upstream_connections(pid: int, port: int) -> int:
    """ESTABLISHED TCP sockets of ``pid`` whose remote port is ``port``."""
    inodes = {link[8:-1] for link in open_fds(pid) if link.startswith("socket:[")}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            remote_port = int(parts[2].rsplit(":", 1)[1], 16)
            if remote_port == port and parts[3] == "01" and parts[9] in inodes:
                count += 1
    return count


class _Answer:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.complete = False

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


@dataclass
class Tally:
    done: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    streams_unfinished: int = 0  # a 200 stream without its final [DONE]


async def _connection(
    requests: list[bytes], streamed: list[bool], indices: range, tally: Tally
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", GATEWAY_PORT)
    try:
        for index in indices:
            kind = index % len(requests)
            writer.write(requests[kind])
            answer = _Answer()
            while not answer.complete:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("the gateway closed the connection mid-answer")
                answer.parser.feed_data(data)
            status = answer.parser.get_status_code()
            tally.by_status[status] = tally.by_status.get(status, 0) + 1
            if (
                status == 200
                and streamed[kind]
                and not b"".join(answer.body).endswith(b"data: [DONE]\n\n")
            ):
                tally.streams_unfinished += 1
            tally.done += 1
    finally:
        writer.close()


def _request(body: bytes, key: str) -> bytes:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{GATEWAY_PORT}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _bodies(variant: int, stream: bool) -> bytes:
    message = f"Say hello in one short sentence ({variant})."
    body: dict[str, object] = {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": message}],
        "max_tokens": 32,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "byok_middleware", *args],
        env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def _add_key(gateway_key: str, api_key: str, priority: int) -> None:
    body = json.dumps({"provider": "openai", "api_key": api_key, "priority": priority})
    request = urllib.request.Request(
        f"http://127.0.0.1:{GATEWAY_PORT}/v1/byok/providers",
        data=body.encode(),
        headers={"Authorization": f"Bearer {gateway_key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - 127.0.0.1
        if response.status != 201:
            raise RuntimeError(f"adding a provider key answered {response.status}")


@dataclass
class Sample:
    done: int
    seconds: float
    rss_mb: float
    fds: int
    upstream: int


@dataclass
class Run:
    tally: Tally
    warmup: int
    samples: list[Sample]
    before: dict[str, int]
    after: dict[str, int]
    seconds: float
    stopped_by_time: bool
    measured_from_ns: int  # monotonic_ns when the measured requests began


async def _drive(args: argparse.Namespace, keys: list[str], pid: int) -> Run:
    variants = 1000 if args.features else 1
    requests: list[bytes] = []
    streamed: list[bool] = []
    # Request kind i: tenant i % T, streamed when (i // T) is odd, prompt variant (i // 2T) % V.
    for variant in range(variants):
        for stream in (False, True):
            for key in keys:
                requests.append(_request(_bodies(variant, stream), key))
                streamed.append(stream)
    tally = Tally()
    samples: list[Sample] = []
    started = time.monotonic()

    def sample() -> None:
        fds = open_fds(pid)
        samples.append(
            Sample(tally.done, time.monotonic() - started, rss_mb(pid), len(fds),
                   upstream_connections(pid, MOCK_PORT))
        )  # fmt: skip

    async def sampler(stop: asyncio.Event) -> None:
        next_at = 0
        while not stop.is_set():
            if tally.done >= next_at:
                sample()
                next_at = tally.done + args.sample_every
            await asyncio.sleep(0.2)

    async def run(count: int, offset: int) -> None:
        per = count // args.connections
        await asyncio.gather(
            *(
                _connection(requests, streamed, range(offset + c, offset + per * args.connections,
                                                        args.connections), tally)
                for c in range(args.connections)
            )
        )  # fmt: skip

    await run(args.warmup, 0)
    await asyncio.to_thread(wait_until_idle, pid)
    before = {"fds": len(open_fds(pid)), "upstream": upstream_connections(pid, MOCK_PORT)}
    warmup_done, tally.done = tally.done, 0
    measured_from_ns = time.monotonic_ns()
    stop = asyncio.Event()
    watcher = asyncio.ensure_future(sampler(stop))
    deadline = started + args.max_minutes * 60
    chunk = args.sample_every * 5
    sent = 0
    while sent < args.requests and time.monotonic() < deadline:
        count = min(chunk, args.requests - sent)
        await run(count, warmup_done + sent)
        sent += count - count % args.connections
    stop.set()
    await watcher
    await asyncio.to_thread(wait_until_idle, pid)
    sample()
    after = {"fds": len(open_fds(pid)), "upstream": upstream_connections(pid, MOCK_PORT)}
    return Run(
        tally, warmup_done, samples, before, after, time.monotonic() - started,
        sent < args.requests, measured_from_ns,
    )  # fmt: skip


def _ledger(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM usage").fetchone()
        by_status = dict(conn.execute("SELECT status_code, COUNT(*) FROM usage GROUP BY 1"))
        failovers = conn.execute("SELECT COUNT(*) FROM usage WHERE attempts > 1").fetchone()[0]
        hits = conn.execute("SELECT COUNT(*) FROM usage WHERE cache_hit").fetchone()[0]
    return {"rows": rows[0], "distinct": rows[1], "failovers": failovers, "cache_hits": hits,
            **{f"status_{k}": v for k, v in by_status.items()}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500_000)
    parser.add_argument("--warmup", type=int, default=5_000, help="before the 'before' counts")
    parser.add_argument("--warmup-share", type=float, default=0.2, help="RSS growth after it")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--sample-every", type=int, default=10_000)
    parser.add_argument("--max-minutes", type=float, default=30)
    parser.add_argument("--features", action="store_true", help="budgets, cache, metrics on")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    tmp = Path(tempfile.mkdtemp(prefix="byok-soak-"))
    db = tmp / "byok.db"
    env = {
        "BYOK_MASTER_KEY": _cli({}, "master-key").splitlines()[-1],
        "BYOK_DATABASE_URL": f"sqlite:///{db}",
        "BYOK_BASE_URL_OPENAI": f"http://127.0.0.1:{MOCK_PORT}/v1",
        "BYOK_REQUEST_LOG": "false",
        "BENCH_GC_LOG": str(tmp / "gc.log"),
    }
    if args.features:
        env |= {"BYOK_CACHE": "exact", "BYOK_METRICS": "true"}
    gateway_keys = []
    for n in range(args.tenants):
        gateway_keys.append(_cli(env, "tenant", "create", f"soak{n}").splitlines()[-1])
        if args.features:
            _cli(env, "tenant", "policy", f"soak{n}", "--budget", "1000000")
    loop = "uvloop"
    mock = Server.start(
        [sys.executable, "-m", "benchmarks.mock_upstream", "--port", str(MOCK_PORT)],
        core=CLIENT_CORE, port=MOCK_PORT, env={}, log=tmp / "mock.log", cwd=ROOT,
    )  # fmt: skip
    argv_ = uvicorn_argv(sys.executable, "byok_middleware.serving:create_app", loop, factory=True)
    argv_ = [part.replace("{port}", str(GATEWAY_PORT)) for part in argv_]
    gateway = Server.start(
        argv_, core=SERVER_CORE, port=GATEWAY_PORT, env=env, log=tmp / "gateway.log", cwd=ROOT
    )
    try:
        for n, key in enumerate(gateway_keys):
            flaky = "flaky-" if n % 2 == 0 else ""
            _add_key(key, f"sk-{flaky}soak{n}a-{os.urandom(8).hex()}", 1)
            _add_key(key, f"sk-soak{n}b-{os.urandom(8).hex()}", 2)
        cpu0 = cpu_seconds(gateway.pid)
        result = asyncio.run(_drive(args, gateway_keys, gateway.pid))
        cpu = cpu_seconds(gateway.pid) - cpu0
    finally:
        gateway.stop()  # SIGTERM: the lifespan shutdown flushes the ledger
        mock.stop()
    ledger = _ledger(db)
    gcs = gcwatch.read(tmp / "gc.log", result.measured_from_ns, time.monotonic_ns())
    lines = report(args, result, ledger, gcs, cpu)
    section = "soak-features" if args.features else "soak"
    replace_section(section, lines, args.output)
    print("\n".join(lines))
    print(f"wrote section {section} of {args.output}; files in {tmp}")
    return 0


def report(
    args: argparse.Namespace,
    result: Run,
    ledger: dict[str, int],
    gcs: list[float],
    cpu: float,
) -> list[str]:
    tally, samples, before, after = result.tally, result.samples, result.before, result.after
    warmup = result.warmup
    total = tally.done + warmup
    cut = args.warmup_share * tally.done
    late = [s for s in samples if s.done >= cut]
    growth = late[-1].rss_mb - late[0].rss_mb if late else float("nan")
    ok = tally.by_status.get(200, 0)
    rows = ledger["rows"]
    title = "with budgets, cache and metrics on" if args.features else "defaults"
    seconds = result.seconds
    lines = [
        f"## Endurance: `python -m benchmarks.soak{' --features' if args.features else ''}` "
        f"({title})",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {tally.done:,d} requests measured "
        f"after {warmup:,d} warm-up ones, in {seconds / 60:.1f} min "
        f"({tally.done / seconds:,.0f} req/s); `--requests {args.requests}`"
        + (" **stopped by --max-minutes before the count**" if result.stopped_by_time else "")
        + f"; load average at the end {os.getloadavg()[0]:.1f} (2 cores, shared).",
        f"- Mix: {args.tenants} tenants in turn, plain and streamed alternately, "
        f"{args.connections} keep-alive connections; half the tenants' first key gets a 503 on "
        "every tenth call (failover to their second key). Gateway CPU: "
        f"{cpu * 1000 / max(total, 1):.2f} ms per request.",
        "",
        "| requests done | minutes | RSS MB | open fds | upstream connections |",
        "|---:|---:|---:|---:|---:|",
    ]
    step = max(1, len(samples) // 12)
    for s in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        lines.append(
            f"| {s.done:,d} | {s.seconds / 60:.1f} | {s.rss_mb:.1f} | {s.fds} | {s.upstream} |"
        )
    leaked_fds = after["fds"] - before["fds"]
    leaked_up = after["upstream"] - before["upstream"]
    statuses = ", ".join(f"{k}: {v:,d}" for k, v in sorted(tally.by_status.items()))
    ledger_status = ", ".join(
        f"{k[7:]}: {v:,d}" for k, v in sorted(ledger.items()) if k.startswith("status_")
    )
    checks = [
        (growth < 5, f"RSS grew {growth:+.1f} MB from request {int(cut):,d} to the end (< 5 MB)"),
        (
            leaked_fds <= max(0, leaked_up),
            f"open fds {before['fds']} after warm-up, {after['fds']} at the end (no more than "
            "the pooled upstream sockets' difference)",
        ),
        (
            after["upstream"] <= args.connections,
            f"upstream connections {before['upstream']} after warm-up, {after['upstream']} at "
            f"the end (a keep-alive pool of at most {args.connections}, the concurrency)",
        ),
        (
            rows == total and ledger["distinct"] == rows and ledger.get("status_200", 0) == ok,
            f"ledger rows {rows:,d} ({ledger['distinct']:,d} distinct request ids) for "
            f"{total:,d} answered requests; answers by status {statuses}; rows by status "
            f"{ledger_status}",
        ),
        (tally.streams_unfinished == 0, f"{tally.streams_unfinished} streams without [DONE]"),
    ]
    lines += [
        "",
        f"Failovers in the ledger (attempts > 1): {ledger['failovers']:,d}; cache hits: "
        f"{ledger['cache_hits']:,d}. Full collections in the gateway after the warm-up: {len(gcs)}"
        + (f", median {sorted(gcs)[len(gcs) // 2]:.1f} ms, longest {max(gcs):.1f} ms." if gcs
           else "."),
        "",
        *(("- ✓ " if good else "- ✗ ") + text for good, text in checks),
    ]  # fmt: skip
    return lines


if __name__ == "__main__":
    sys.exit(main())

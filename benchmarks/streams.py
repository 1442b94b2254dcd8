"""``python -m benchmarks.streams``: thousands of slow streams held open by one gateway process.

The mock upstream spaces its 20 chunks by ``--chunk-seconds`` (1 s: a stream lasts about 19 s);
``--streams`` clients (2,000) open theirs within a few seconds, on one gateway process as
``byok-middleware serve`` runs it (core 0; mock and clients on core 1). ``--leave`` of them
disconnect after their third content chunk; the gateway should then drop their upstream
connections at once (counted as ESTABLISHED sockets of the gateway to the mock, before and
after they leave).

Reported: the gateway's RSS before and at the peak of open streams, so memory per open stream;
time to first byte (first SSE event) at that load; how many streams finished with ``[DONE]``;
upstream connections during and after; the gateway's full collections. Writes the ``streams``
section of RESULTS.md. Bounded: every client gives up after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httptools

from benchmarks import gcwatch
from benchmarks.measure import chat_body, percentile
from benchmarks.procs import Server, rss_mb, wait_until_idle
from benchmarks.results import replace_section
from benchmarks.soak import _add_key, _cli, open_fds, upstream_connections
from benchmarks.targets import ROOT, uvicorn_argv

SERVER_CORE, CLIENT_CORE = "0", "1"
MOCK_PORT, GATEWAY_PORT = 18150, 18250  # as benchmarks.soak, whose helpers this reuses


@dataclass
class Stream:
    ttfb: float | None = None
    done: bool = False
    left: bool = False
    error: str = ""


class _Reader:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.events = 0
        self.tail = b""
        self.complete = False

    def on_body(self, body: bytes) -> None:
        self.events += body.count(b"\n\n")
        self.tail = (self.tail + body)[-64:]

    def on_message_complete(self) -> None:
        self.complete = True


async def _one(request: bytes, stream: Stream, leave: bool, limit_s: float) -> None:
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", GATEWAY_PORT)
    except OSError as exc:
        stream.error = f"connect: {exc}"
        return
    try:
        async with asyncio.timeout(limit_s):
            writer.write(request)
            answer = _Reader()
            while not answer.complete:
                data = await reader.read(65536)
                if not data:
                    stream.error = "closed mid-stream"
                    return
                answer.parser.feed_data(data)
                if answer.events and stream.ttfb is None:
                    stream.ttfb = time.monotonic() - started
                if leave and answer.events >= 3:
                    stream.left = True
                    return  # the finally closes the socket: the client is gone
            stream.done = answer.tail.endswith(b"data: [DONE]\n\n")
    except TimeoutError:
        stream.error = "timeout"
    except OSError as exc:
        stream.error = str(exc)
    finally:
        writer.close()


@dataclass
class Peak:
    rss_mb: float = 0.0
    open_streams: int = 0
    upstream: int = 0
    timeline: list[tuple[float, float, int, int]] = field(default_factory=list)


async def _run(args: argparse.Namespace, key: str, pid: int) -> dict[str, object]:
    request_body = chat_body(stream=True, delay_ms=args.chunk_seconds * 1000)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{GATEWAY_PORT}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(request_body)}\r\n\r\n"
    ).encode()
    request = head + request_body
    warm = [Stream() for _ in range(20)]
    await asyncio.gather(*(_one(request, s, False, args.timeout) for s in warm))
    await asyncio.to_thread(wait_until_idle, pid)
    baseline = {"rss_mb": rss_mb(pid), "fds": len(open_fds(pid)),
                "upstream": upstream_connections(pid, MOCK_PORT)}  # fmt: skip
    streams = [Stream() for _ in range(args.streams)]
    leavers = set(range(0, args.streams, max(1, args.streams // max(args.leave, 1))))
    leavers = set(sorted(leavers)[: args.leave])
    peak = Peak()
    started = time.monotonic()
    stop = asyncio.Event()

    async def sampler() -> None:
        while not stop.is_set():
            open_now = sum(1 for s in streams if s.ttfb is not None and not s.done
                           and not s.left and not s.error)  # fmt: skip
            rss = rss_mb(pid)
            upstream = upstream_connections(pid, MOCK_PORT)
            peak.timeline.append((time.monotonic() - started, rss, open_now, upstream))
            if open_now >= peak.open_streams:
                peak.open_streams, peak.rss_mb = open_now, max(rss, peak.rss_mb)
            peak.upstream = max(peak.upstream, upstream)
            await asyncio.sleep(0.5)

    watcher = asyncio.ensure_future(sampler())
    tasks = []
    for index, stream in enumerate(streams):
        tasks.append(asyncio.ensure_future(_one(request, stream, index in leavers, args.timeout)))
        if index % 100 == 99:
            await asyncio.sleep(0.05)  # 2,000 connections in about a second
    await asyncio.gather(*tasks)
    stop.set()
    await watcher
    await asyncio.to_thread(wait_until_idle, pid)
    after = {"rss_mb": rss_mb(pid), "fds": len(open_fds(pid)),
             "upstream": upstream_connections(pid, MOCK_PORT)}  # fmt: skip
    return {"baseline": baseline, "after": after, "streams": streams, "peak": peak,
            "seconds": time.monotonic() - started, "leavers": len(leavers)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--leave", type=int, default=200, help="clients that leave mid-stream")
    parser.add_argument("--chunk-seconds", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=120, help="per stream, seconds")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    tmp = Path(tempfile.mkdtemp(prefix="byok-streams-"))
    env = {
        "BYOK_MASTER_KEY": _cli({}, "master-key").splitlines()[-1],
        "BYOK_DATABASE_URL": f"sqlite:///{tmp / 'byok.db'}",
        "BYOK_BASE_URL_OPENAI": f"http://127.0.0.1:{MOCK_PORT}/v1",
        "BYOK_REQUEST_LOG": "false",
        "BENCH_GC_LOG": str(tmp / "gc.log"),
    }
    key = _cli(env, "tenant", "create", "streams").splitlines()[-1]
    mock = Server.start(
        [sys.executable, "-m", "benchmarks.mock_upstream", "--port", str(MOCK_PORT)],
        core=CLIENT_CORE, port=MOCK_PORT, env={}, log=tmp / "mock.log", cwd=ROOT,
    )  # fmt: skip
    argv_ = uvicorn_argv(sys.executable, "byok_middleware.serving:create_app", "uvloop",
                         factory=True)  # fmt: skip
    argv_ = [p.replace("{port}", str(GATEWAY_PORT)) for p in argv_] + ["--backlog", "4096"]
    gateway = Server.start(
        argv_, core=SERVER_CORE, port=GATEWAY_PORT, env=env, log=tmp / "gateway.log", cwd=ROOT
    )
    try:
        _add_key(key, f"sk-streams-{os.urandom(8).hex()}", 1)
        since = time.monotonic_ns()
        result = asyncio.run(_run(args, key, gateway.pid))
    finally:
        gateway.stop()
        mock.stop()
    gcs = gcwatch.read(tmp / "gc.log", since, time.monotonic_ns())
    lines = report(args, result, gcs)
    replace_section("streams", lines, args.output)
    print("\n".join(lines))
    print(f"wrote section streams of {args.output}; files in {tmp}")
    return 0


def report(args: argparse.Namespace, result: dict[str, object], gcs: list[float]) -> list[str]:
    baseline, after, peak = result["baseline"], result["after"], result["peak"]
    streams = result["streams"]
    if not (isinstance(baseline, dict) and isinstance(after, dict)):
        raise TypeError("internal: result shape")
    if not (isinstance(peak, Peak) and isinstance(streams, list)):
        raise TypeError("internal: result shape")
    stayed = [s for s in streams if not s.left]
    finished = sum(1 for s in stayed if s.done)
    errors: dict[str, int] = {}
    for s in stayed:
        if s.error:
            errors[s.error] = errors.get(s.error, 0) + 1
    ttfb = [s.ttfb * 1000 for s in streams if s.ttfb is not None]
    per_stream_kb = (
        (peak.rss_mb - baseline["rss_mb"]) * 1024 / peak.open_streams if peak.open_streams else 0
    )
    # Upstream sockets when every client was connected vs once the leavers had left.
    timeline = peak.timeline
    top = max((u for _, _, _, u in timeline), default=0)
    top_at = next((t for t, _, _, u in timeline if u == top), 0.0)
    after_leave = [u for t, _, _, u in timeline if top_at + 2 <= t <= top_at + 6]
    lines = [
        "## Many open streams: `python -m benchmarks.streams`",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {args.streams:,d} streams opened within "
        f"about {args.streams / 2000:.0f} s, upstream spacing {args.chunk_seconds:g} s x 20 "
        f"chunks; {result['leavers']} clients leave after their third chunk; the run took "
        f"{float(str(result['seconds'])):.0f} s; load average {os.getloadavg()[0]:.1f} "
        "(2 cores, shared).",
        "- One gateway process (`byok_middleware.serving`, uvloop, httptools, `--backlog 4096`).",
        "",
        "| seconds | gateway RSS MB | streams open at the client | upstream connections |",
        "|---:|---:|---:|---:|",
    ]
    step = max(1, len(timeline) // 12)
    for t, rss, open_now, upstream in timeline[::step]:
        lines.append(f"| {t:.1f} | {rss:.1f} | {open_now:,d} | {upstream:,d} |")
    lines += [
        "",
        f"- RSS {baseline['rss_mb']:.1f} MB before, {peak.rss_mb:.1f} MB at the peak of "
        f"{peak.open_streams:,d} open streams: **{per_stream_kb:.1f} KB per open stream** "
        f"(target < 40 KB); {after['rss_mb']:.1f} MB after all ended.",
        f"- Time to first byte at that load: p50 {percentile(ttfb, 50):.0f} ms, p99 "
        f"{percentile(ttfb, 99):.0f} ms, max {max(ttfb, default=0):.0f} ms "
        f"(mean {statistics.fmean(ttfb) if ttfb else 0:.0f} ms).",
        f"- Finished with `[DONE]`: **{finished:,d} of {len(stayed):,d}** streams whose client "
        f"stayed; errors: {errors or 'none'}.",
        f"- Upstream connections: {baseline['upstream']} before, {top:,d} at most, "
        f"{min(after_leave, default=top):,d} 2-6 s after that (the leavers gone, the others "
        f"streaming), {after['upstream']} once idle; open fds {baseline['fds']} before, "
        f"{after['fds']} after.",
        f"- Full collections in the gateway during the run: {len(gcs)}"
        + (f", longest {max(gcs):.1f} ms." if gcs else "."),
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())

"""``python -m benchmarks.run``: every target, every scenario, interleaved rounds -> RESULTS.md.

The server under test runs alone on core 0 (``taskset -c 0``); the mock upstream, wrk and the
streaming client share core 1. Options: ``--rounds``, ``--seconds``, ``--only key,key``,
``--skip-litellm``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import measure, report
from benchmarks.measure import Sample
from benchmarks.procs import ForeignLoad, Server, rss_mb, wait_until_idle
from benchmarks.targets import (
    WORK,
    Target,
    bare_targets,
    ensure_litellm,
    event_loop,
    gateway_targets,
    litellm_target,
    register_provider_key,
)

SERVER_CORE, CLIENT_CORE = "0", "1"
MOCK_PORT, TARGET_PORT = 18100, 18200
GAP_DELAY_MS = 20


def measure_target(target: Target, server_pid: int, port: int, args: argparse.Namespace) -> Sample:
    url = target.url(port)
    plain, stream = measure.chat_body(stream=False), measure.chat_body(stream=True)
    sample = Sample()
    load = ForeignLoad()

    def wrk(name: str, body: bytes, connections: int, seconds: float) -> None:
        measure.run_wrk(
            url, body, target.auth, connections=connections, seconds=args.warmup,
            server_pid=None, core=CLIENT_CORE,
        )  # fmt: skip
        wait_until_idle(server_pid)
        result = measure.run_wrk(
            url, body, target.auth, connections=connections, seconds=seconds,
            server_pid=server_pid, core=CLIENT_CORE,
        )  # fmt: skip
        sample.wrk[name] = result
        cpu = f"{result.cpu_ms_per_request:.2f}" if result.cpu_ms_per_request else "-"
        print(
            f"    {name:12} {result.rps:8.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
            f"p99 {result.p99_ms:7.2f} ms  cpu {cpu} ms/req  errors {result.errors}",
            flush=True,
        )

    wrk("plain_c1", plain, 1, args.seconds_c1)
    wrk("plain_c32", plain, 32, args.seconds)
    wrk("stream_c32", stream, 32, args.seconds)
    sample.latency = measure.stream_latency(url, target.auth, args.stream_count)
    sample.gaps = measure.chunk_gaps(
        url, target.auth, GAP_DELAY_MS, connections=1, per_connection=args.gap_requests
    )
    sample.rss_mb = rss_mb(server_pid)
    sample.foreign_load = load.share()
    lat, gaps = sample.latency, sample.gaps
    print(
        f"    stream c=1   ttfb p50 {lat.ttfb_p50_ms:.2f} ms  full p50 {lat.full_p50_ms:.2f} ms"
        f"  | gaps +{gaps.added_p50_ms:.2f}/+{gaps.added_p99_ms:.2f} ms (p50/p99)"
        f"  | RSS {sample.rss_mb:.0f} MB | other load {sample.foreign_load:.0%}",
        flush=True,
    )
    return sample


def start_target(target: Target, port: int, log_dir: Path, round_no: int) -> Server:
    assert target.argv is not None
    argv = [part.replace("{port}", str(port)) for part in target.argv]
    return Server.start(
        argv,
        core=SERVER_CORE,
        port=port,
        env=target.env,
        log=log_dir / f"{target.key}-r{round_no}.log",
        cwd=Path(__file__).resolve().parent.parent,
        timeout=target.startup_timeout,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="odd, so the median is a round")
    parser.add_argument("--seconds", type=float, default=6, help="each c=32 wrk run")
    parser.add_argument("--seconds-c1", type=float, default=4, help="each c=1 wrk run")
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--stream-count", type=int, default=100)
    parser.add_argument(
        "--gap-requests", type=int, default=24, help="one after another (19 gaps each)"
    )
    parser.add_argument("--only", default="", help="comma-separated target keys")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    os.sched_setaffinity(0, {int(CLIENT_CORE)})  # the client side stays off the server's core
    WORK.mkdir(parents=True, exist_ok=True)
    log_dir = WORK / "logs"
    log_dir.mkdir(exist_ok=True)
    loop = event_loop()
    upstream = f"http://127.0.0.1:{MOCK_PORT}"
    notes: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="byok-bench-"))
    mock = Server.start(
        [sys.executable, "-m", "benchmarks.mock_upstream", "--port", str(MOCK_PORT)],
        core=CLIENT_CORE, port=MOCK_PORT, env={}, log=log_dir / "mock.log",
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    try:
        targets = bare_targets(loop, upstream) + gateway_targets(loop, upstream, tmp)
        if args.skip_litellm:
            notes.append("LiteLLM skipped (--skip-litellm).")
        else:
            print("checking LiteLLM's venv ...", flush=True)
            python, detail = ensure_litellm(log_dir / "litellm-install.log")
            if python is None:
                notes.append(f"LiteLLM skipped: {detail}.")
                print(f"  LiteLLM skipped: {detail}")
            else:
                targets.append(litellm_target(python, loop, upstream, tmp))
                notes.append(f"LiteLLM {detail} from `{python.parent.parent.name}`.")
        if args.only:
            keep = set(args.only.split(","))
            targets = [t for t in targets if t.key in keep]
        registered = False
        samples: dict[str, list[Sample]] = {t.key: [] for t in targets}
        for round_no in range(1, args.rounds + 1):
            for index, target in enumerate(targets):
                print(f"round {round_no}: {target.label}", flush=True)
                port = MOCK_PORT if target.argv is None else TARGET_PORT + index
                server: Server | None = None
                try:
                    if target.argv is not None:
                        server = start_target(target, port, log_dir, round_no)
                    if target.key.startswith("gateway") and not registered:
                        assert target.auth is not None
                        register_provider_key(port, target.auth)
                        registered = True
                    pid = server.pid if server is not None else mock.pid
                    samples[target.key].append(measure_target(target, pid, port, args))
                except Exception as exc:  # noqa: BLE001 - one broken target must not stop the run
                    why = f"{type(exc).__name__}: {exc}"
                    print(f"    FAILED {why}\n{server.tail() if server else ''}", flush=True)
                    samples[target.key].append(Sample(failure=why))
                finally:
                    if server is not None:
                        server.stop()
        elapsed = time.monotonic() - started
        report.write(args.output, targets, samples, args, loop, notes, elapsed, GAP_DELAY_MS)
        print(f"wrote {args.output} in {elapsed:.0f} s")
    finally:
        mock.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

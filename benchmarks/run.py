"""``python -m benchmarks.run``: every target, every scenario, interleaved rounds -> RESULTS.md.

Each round starts every target's server on core 0 (``taskset -c 0``), then runs each scenario on
every target in turn (A B C, A B C), so only the target being measured has work on core 0; the
mock upstream, wrk and the streaming client share core 1. The c=32 scenarios, whose CPU per
request makes the ratios, are taken in slices in turn. Options: ``--rounds``, ``--seconds``,
``--slices``, ``--only key,key``, ``--skip-litellm``, ``--section``. The response cache's
targets alone, against the pass-through they are compared with (a few minutes)::

    python -m benchmarks.run --skip-litellm --rounds 1 --section cache \
        --only aiohttp,gateway-starlette,gateway-cache-hit,gateway-cache-miss
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import measure, report
from benchmarks.measure import Sample
from benchmarks.procs import ForeignLoad, Server, rss_mb, wait_until_idle
from benchmarks.targets import (
    WORK,
    Target,
    bare_targets,
    confirm_cache_hit,
    ensure_litellm,
    event_loop,
    gateway_targets,
    litellm_target,
    register_provider_key,
)

SERVER_CORE, CLIENT_CORE = "0", "1"
MOCK_PORT, TARGET_PORT = 18100, 18200
GAP_DELAY_MS = 20


SCENARIOS = ("plain_c1", "plain_c32", "stream_c32", "stream_latency", "gaps")
WRK_BODIES = {"plain_c1": (1, False), "plain_c32": (32, False), "stream_c32": (32, True)}


@dataclass
class Live:
    """One target during a round: its server (None when the mock itself is the target), the
    process whose CPU is measured (the server, or the mock), and the sample being filled."""

    target: Target
    port: int
    server: Server | None
    pid: int
    gc_log: Path | None = None  # benchmarks.gcwatch's log of the server's full collections
    sample: Sample = field(default_factory=Sample)
    load: ForeignLoad = field(default_factory=ForeignLoad)


def _wrk_detail(result: measure.WrkResult) -> str:
    cpu = f"{result.cpu_ms_per_request:.2f}" if result.cpu_ms_per_request else "-"
    gcs = result.full_gcs_ms
    gc_text = f"  full GCs {len(gcs)} (max {max(gcs, default=0):.0f} ms)" if gcs is not None else ""
    return (
        f"{result.rps:8.0f} req/s  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms"
        f"  p99.9 {result.p999_ms:7.2f} ms  cpu {cpu} ms/req  errors {result.errors}{gc_text}"
    )


def _wrk(scenario: str, live: Live, seconds: float, *, measured: bool) -> measure.WrkResult:
    connections, stream = WRK_BODIES[scenario]
    if measured:
        live.load.start()
    result = measure.run_wrk(
        live.target.url(live.port), measure.chat_body(stream=stream), live.target.auth,
        connections=connections, seconds=seconds, server_pid=live.pid if measured else None,
        core=CLIENT_CORE, gc_log=live.gc_log if measured else None, vary=live.target.vary,
    )  # fmt: skip
    if measured:
        live.load.stop()
    return result


def _warm_up(scenario: str, live: Live, args: argparse.Namespace) -> None:
    _wrk(scenario, live, args.warmup, measured=False)
    wait_until_idle(live.pid)


def _fail(live: Live, exc: Exception) -> None:
    why = f"{type(exc).__name__}: {exc}"
    tail = live.server.tail() if live.server else ""
    print(f"    {live.target.label}: FAILED {why}\n{tail}", flush=True)
    live.sample = Sample(failure=why)


def measure_sliced(scenario: str, lives: list[Live], args: argparse.Namespace) -> None:
    """A c=32 scenario, whose CPU per request makes the ratios: every target warmed up, then
    measured in ``args.slices`` slices taken in turn (A B C, A B C, ...), so a burst of the
    neighbours' load falls on a slice of each target rather than on one target's whole run."""
    slices: dict[str, list[measure.WrkResult]] = {live.target.key: [] for live in lives}
    for live in lives:
        try:
            _warm_up(scenario, live, args)
        except Exception as exc:  # noqa: BLE001 - one broken target must not stop the run
            _fail(live, exc)
    seconds = args.seconds / args.slices
    for _ in range(args.slices):
        for live in lives:
            if live.sample.failure:
                continue
            try:
                slices[live.target.key].append(_wrk(scenario, live, seconds, measured=True))
            except Exception as exc:  # noqa: BLE001 - one broken target must not stop the run
                _fail(live, exc)
    for live in lives:
        if not live.sample.failure:
            parts = live.sample.slices[scenario] = slices[live.target.key]
            result = live.sample.wrk[scenario] = measure.combine(parts)
            print(f"    {live.target.key:22} {_wrk_detail(result)}", flush=True)


def measure_scenario(scenario: str, live: Live, args: argparse.Namespace) -> None:
    """Run one unsliced scenario against one target, into its sample; prints its line. Its only
    wrk scenario is c=1: both c=32 ones are sliced (``measure_sliced``)."""
    target, sample = live.target, live.sample
    url = target.url(live.port)
    if scenario in WRK_BODIES:
        _warm_up(scenario, live, args)
        result = sample.wrk[scenario] = _wrk(scenario, live, args.seconds_c1, measured=True)
        detail = _wrk_detail(result)
    elif scenario == "stream_latency":
        live.load.start()
        lat = sample.latency = measure.stream_latency(url, target.auth, args.stream_count)
        live.load.stop()
        detail = f"ttfb p50 {lat.ttfb_p50_ms:.2f} ms  full p50 {lat.full_p50_ms:.2f} ms"
    else:
        live.load.start()
        gaps = sample.gaps = measure.chunk_gaps(
            url, target.auth, GAP_DELAY_MS, connections=1, per_connection=args.gap_requests
        )
        live.load.stop()
        detail = f"added {gaps.added_p50_ms:+.2f} / {gaps.added_p99_ms:+.2f} ms (p50/p99)"
    print(f"    {target.key:22} {detail}", flush=True)


def run_round(
    round_no: int,
    targets: list[Target],
    mock: Server,
    log_dir: Path,
    args: argparse.Namespace,
    registered: set[str],
) -> dict[str, Sample]:
    """One round: every target's server up at once (pinned to the server core, idle until its
    turn), then each scenario on every target in turn, so that the targets compared in a ratio
    are measured seconds apart, under the same conditions on a shared machine."""
    lives: list[Live] = []
    failures: dict[str, Sample] = {}
    try:
        for index, target in enumerate(targets):
            port = MOCK_PORT if target.argv is None else TARGET_PORT + index
            try:
                server = (
                    None if target.argv is None else start_target(target, port, log_dir, round_no)
                )
            except Exception as exc:  # noqa: BLE001 - one broken target must not stop the run
                print(f"round {round_no}: {target.label} FAILED to start: {exc}", flush=True)
                failures[target.key] = Sample(failure=f"{type(exc).__name__}: {exc}")
                continue
            pid = mock.pid if server is None else server.pid
            gc_log = None if server is None else gc_log_path(log_dir, target, round_no)
            lives.append(Live(target, port, server, pid, gc_log))
            if target.key.startswith("gateway") and target.auth not in registered:
                if target.auth is None:
                    raise RuntimeError(f"{target.key} has no gateway key")
                register_provider_key(port, target.auth)  # once per tenant: the store keeps it
                registered.add(target.auth)
            if target.key == report.CACHE_HIT and target.auth is not None:
                confirm_cache_hit(port, target.auth, measure.chat_body(stream=False))
        servers = [live.pid for live in lives if live.server is not None]
        for live in lives:
            live.load = ForeignLoad(idle=[pid for pid in servers if pid != live.pid])
        for scenario in SCENARIOS:
            print(f"round {round_no}: {scenario}", flush=True)
            if scenario in report.SLICED_SCENARIOS:
                measure_sliced(scenario, [live for live in lives if not live.sample.failure], args)
                continue
            for live in lives:
                if live.sample.failure:
                    continue
                try:
                    measure_scenario(scenario, live, args)
                except Exception as exc:  # noqa: BLE001 - one broken target must not stop the run
                    _fail(live, exc)
        for live in lives:
            if not live.sample.failure:
                live.sample.rss_mb = rss_mb(live.pid)
                live.sample.foreign_load = live.load.share()
        print(
            f"round {round_no}: RSS / other load  "
            + "  ".join(
                f"{live.target.key} {live.sample.rss_mb:.0f} MB {live.sample.foreign_load:.0%}"
                for live in lives
            ),
            flush=True,
        )
    finally:
        for live in lives:
            if live.server is not None:
                live.server.stop()
    return {**failures, **{live.target.key: live.sample for live in lives}}


def gc_log_path(log_dir: Path, target: Target, round_no: int) -> Path:
    return log_dir / f"{target.key}-r{round_no}.gc"


def start_target(target: Target, port: int, log_dir: Path, round_no: int) -> Server:
    assert target.argv is not None
    argv = [part.replace("{port}", str(port)) for part in target.argv]
    gc_log = gc_log_path(log_dir, target, round_no)
    gc_log.unlink(missing_ok=True)
    return Server.start(
        argv,
        core=SERVER_CORE,
        port=port,
        env={**target.env, "BENCH_GC_LOG": str(gc_log)},
        log=log_dir / f"{target.key}-r{round_no}.log",
        cwd=Path(__file__).resolve().parent.parent,
        timeout=target.startup_timeout,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="odd, so the median is a round")
    parser.add_argument(
        "--seconds", type=float, default=10, help="each c=32 measurement, over all its slices"
    )
    parser.add_argument(
        "--slices", type=int, default=5, help="c=32 slices per target and round, taken in turn"
    )
    parser.add_argument("--seconds-c1", type=float, default=4, help="each c=1 wrk run")
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--stream-count", type=int, default=100)
    parser.add_argument(
        "--gap-requests", type=int, default=24, help="one after another (19 gaps each)"
    )
    parser.add_argument("--only", default="", help="comma-separated target keys")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    parser.add_argument(
        "--section",
        default="http",
        help="RESULTS.md section to write; a partial run (--only) can keep the full one",
    )
    args = parser.parse_args(argv)
    per_slice = args.seconds / args.slices if args.slices > 0 else 0
    if per_slice < 1 or per_slice != int(per_slice):  # wrk runs for whole seconds
        parser.error("--seconds / --slices must be a whole number of seconds, at least 1")
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
        registered: set[str] = set()
        samples: dict[str, list[Sample]] = {t.key: [] for t in targets}
        for round_no in range(1, args.rounds + 1):
            measured = run_round(round_no, targets, mock, log_dir, args, registered)
            for key, sample in measured.items():
                samples[key].append(sample)
        elapsed = time.monotonic() - started
        report.write(args.output, targets, samples, args, loop, notes, elapsed, GAP_DELAY_MS)
        print(f"wrote {args.output} in {elapsed:.0f} s")
    finally:
        mock.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

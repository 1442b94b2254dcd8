"""``python -m benchmarks.compare_ref --ref COMMIT [--ref COMMIT ...]``: this tree's gateway against
older commits', in one run.

A figure in RESULTS.md was measured on another day, on another machine, under other load; "within
10% of what RESULTS.md shows" is best checked by running the older code beside this one. This
checks ``--ref`` out into a temporary git worktree and starts, pinned to core 0 as ``make bench``
does: the raw-aiohttp pass-through (c), the gateway as ``serve`` runs it from this tree (e*), and
the same from each older tree (its own SQLite store, tenant and provider key, made with its own
CLI). wrk drives each at c=32 in slices taken in turn (A B C, A B C, ...), plain or streamed; the
mock upstream, wrk and this script are on core 1.

Prints and writes (section ``compare-ref``, or ``compare-ref-stream``) the server CPU per request
and its ratio to raw aiohttp (median of the paired slices), the older gateway's ratio beside it,
p50, and the p99 / p99.9 of all slices together. With several ``--ref``s, each later one is also
set against the first (``--ref A --ref B``: how much of this tree's difference from A was there
at B already).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import measure
from benchmarks.procs import Server, checked_out
from benchmarks.results import replace_section
from benchmarks.targets import (
    ROOT,
    bare_targets,
    event_loop,
    gateway_targets,
    register_provider_key,
)

SERVER_CORE, CLIENT_CORE = "0", "1"
MOCK_PORT, FIRST_PORT = 18400, 18410


def _cli(python: str, tree: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [python, "-m", "byok_middleware", *args],
        env={**os.environ, **env, "PYTHONPATH": str(tree)},
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def _start_ref(tree: Path, port: int, upstream: str, work: Path, loop: str) -> tuple[Server, str]:
    """The older tree's gateway as its ``serve`` ran it, with a tenant and a provider key."""
    python = sys.executable
    env = {
        "BYOK_DATABASE_URL": f"sqlite:///{work / f'{tree.name}.db'}",
        "BYOK_BASE_URL_OPENAI": upstream + "/v1",
    }
    env["BYOK_MASTER_KEY"] = _cli(python, tree, env, "master-key")
    gateway_key = _cli(python, tree, env, "tenant", "create", "bench")
    serving = (tree / "byok_middleware" / "serving.py").exists()
    app = "byok_middleware.serving:create_app" if serving else "benchmarks.gateway_app:create_serve"
    argv = [python, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--no-access-log", "--loop", loop, "--http", "httptools", "--log-level", "warning"]
    server = Server.start(
        argv,
        core=SERVER_CORE,
        port=port,
        env={**env, "PYTHONPATH": str(tree)},
        log=work / f"{tree.name}.log",
        cwd=tree,
    )
    register_provider_key(port, gateway_key)
    return server, gateway_key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ref",
        required=True,
        action="append",
        help="an older commit (a hash or a tag); repeat to run several beside this tree",
    )
    parser.add_argument("--rounds", type=int, default=6, help="slices per target")
    parser.add_argument("--seconds", type=int, default=2, help="wrk seconds per slice")
    parser.add_argument("--stream", action="store_true", help="streamed chat instead of plain")
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    work = Path(tempfile.mkdtemp(prefix="byok-compare-"))
    cleanup = contextlib.ExitStack()
    refs: list[str] = list(dict.fromkeys(args.ref))
    loop = event_loop()
    upstream = f"http://127.0.0.1:{MOCK_PORT}"
    servers: dict[str, tuple[Server, str | None]] = {}
    mock = Server.start(
        [sys.executable, "-m", "benchmarks.mock_upstream", "--port", str(MOCK_PORT)],
        core=CLIENT_CORE, port=MOCK_PORT, env={}, log=work / "mock.log", cwd=ROOT,
    )  # fmt: skip
    started = time.monotonic()
    try:
        # Inside the try: a ref that does not check out removes the worktrees made before it.
        trees = [
            cleanup.enter_context(checked_out(ref, work / f"ref-{i}")) for i, ref in enumerate(refs)
        ]
        raw = next(t for t in bare_targets(loop, upstream) if t.key == "aiohttp")
        now = next(t for t in gateway_targets(loop, upstream, work) if t.key == "gateway-starlette")
        for port, target in enumerate((raw, now), FIRST_PORT):
            argv = [part.replace("{port}", str(port)) for part in target.argv or []]
            server = Server.start(
                argv, core=SERVER_CORE, port=port, env=target.env, log=work / f"{target.key}.log",
                cwd=ROOT,
            )  # fmt: skip
            servers[target.key] = (server, target.auth)
        register_provider_key(FIRST_PORT + 1, now.auth or "")
        for i, tree in enumerate(trees):
            servers[f"ref-{i}"] = _start_ref(tree, FIRST_PORT + 2 + i, upstream, work, loop)
        body = measure.chat_body(stream=args.stream)
        results: dict[str, list[measure.WrkResult]] = {key: [] for key in servers}
        for server, auth in servers.values():  # warm-up
            measure.run_wrk(
                f"http://127.0.0.1:{server.port}/v1/chat/completions", body, auth,
                connections=32, seconds=1, server_pid=server.pid, core=CLIENT_CORE,
            )  # fmt: skip
        order = list(servers)
        for turn in range(args.rounds):
            for key in order if turn % 2 == 0 else order[::-1]:
                server, auth = servers[key]
                results[key].append(
                    measure.run_wrk(
                        f"http://127.0.0.1:{server.port}/v1/chat/completions",
                        body,
                        auth,
                        connections=32,
                        seconds=args.seconds,
                        server_pid=server.pid,
                        core=CLIENT_CORE,
                    )
                )
    finally:
        for server, _ in servers.values():
            server.stop()
        mock.stop()
        cleanup.close()
    load = os.getloadavg()
    labels = {
        "aiohttp": "(c) Starlette + raw aiohttp",
        "gateway-starlette": "(e*) the gateway as `serve` runs it, this tree",
        **{f"ref-{i}": f"(e*) the same, at `{ref}`" for i, ref in enumerate(refs)},
    }
    scenario = "streamed chat (20 chunks + usage + [DONE])" if args.stream else "plain chat"
    lines = [
        f"## This tree against {' and '.join(f'`{ref}`' for ref in refs)}: "
        "`python -m benchmarks.compare_ref`",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {scenario}, c=32; {args.rounds} slices "
        f"of {args.seconds} s per target, taken in turn; the run took "
        f"{(time.monotonic() - started) / 60:.1f} min; load average at the end "
        f"{load[0]:.1f} (2 cores, shared).",
        "",
        "| target | server CPU ms/req | x raw aiohttp (median of paired slices) | p50 ms | "
        "p99 ms | p99.9 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    base = results["aiohttp"]
    ratios: dict[str, float] = {}
    for key, slices in results.items():
        cpu = sum(s.cpu_seconds or 0 for s in slices) / sum(s.counted for s in slices) * 1e3
        paired = [
            (s.cpu_seconds or 0) / s.counted / ((b.cpu_seconds or 0) / b.counted)
            for s, b in zip(slices, base, strict=True)
        ]
        ratios[key] = statistics.median(paired)
        lines.append(
            f"| {labels[key]} | {cpu:.3f} | {ratios[key]:.2f} | "
            f"{statistics.median(s.p50_ms for s in slices):.1f} | "
            f"{measure.merged_percentile(slices, 99):.1f} | "
            f"{measure.merged_percentile(slices, 99.9):.1f} |"
        )
    lines.append("")
    for i, ref in enumerate(refs):
        lines.append(
            f"This tree's ratio over `{ref}`'s: "
            f"**{ratios['gateway-starlette'] / ratios[f'ref-{i}']:.2f}**."
        )
    for i, ref in enumerate(refs[1:], 1):
        lines.append(
            f"`{ref}`'s ratio over `{refs[0]}`'s: {ratios[f'ref-{i}'] / ratios['ref-0']:.2f}."
        )
    print("\n".join(lines))
    replace_section("compare-ref-stream" if args.stream else "compare-ref", lines, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())

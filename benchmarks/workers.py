"""``python -m benchmarks.workers``: several worker processes on one SQLite store.

Runs ``byok-middleware serve --workers N`` for each N of ``--workers`` (1 and 2), then uvicorn's
own ``--workers 2 --factory byok_middleware.serving:create_app``, each on a fresh default SQLite
store (the file, its WAL and the ledger journal next to it). The client is
``benchmarks.soak``'s: ``--requests`` plain and streamed chat requests over 32 keep-alive
connections, every one completed, so the ledger is checked row for row after the server
stopped: no row lost or doubled, no answer other than 200 (a "database is locked" would surface
as a 5xx), and the server log searched for "database is locked". Throughput is requests per
second of wall time. Nothing is pinned: the workers, the mock and the client share both cores,
so N = 2 can at most use the core the client and the mock leave. Writes the ``workers`` section
of RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import soak
from benchmarks.procs import Server, wait_until_idle
from benchmarks.results import replace_section
from benchmarks.targets import ROOT


async def _load(requests: int, key: str, connections: int) -> tuple[soak.Tally, float]:
    kinds = [soak._request(soak._bodies(0, stream), key) for stream in (False, True)]
    streamed = [False, True]
    tally = soak.Tally()
    started = time.monotonic()
    per = requests // connections
    await asyncio.gather(
        *(
            soak._connection(kinds, streamed, range(c, per * connections, connections), tally)
            for c in range(connections)
        )
    )
    return tally, time.monotonic() - started


def _one(label: str, argv: list[str], args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="byok-workers-"))
    db = tmp / "byok.db"
    env = {
        "BYOK_MASTER_KEY": soak._cli({}, "master-key").splitlines()[-1],
        "BYOK_DATABASE_URL": f"sqlite:///{db}",
        "BYOK_BASE_URL_OPENAI": f"http://127.0.0.1:{soak.MOCK_PORT}/v1",
        "BYOK_REQUEST_LOG": "false",
    }
    key = soak._cli(env, "tenant", "create", "workers").splitlines()[-1]
    log = tmp / "server.log"
    server = Server.start(
        argv, core="0-1", port=soak.GATEWAY_PORT, env=env, log=log, cwd=ROOT, timeout=60
    )
    try:
        time.sleep(2)  # every worker up (the port answers as soon as the first one is)
        soak._add_key(key, f"sk-workers-{os.urandom(8).hex()}", 1)
        warm, _ = asyncio.run(_load(args.warmup, key, args.connections))
        tally, seconds = asyncio.run(_load(args.requests, key, args.connections))
        wait_until_idle(server.pid)
    finally:
        server.stop()
    ledger = soak._ledger(db)
    answered = warm.done + tally.done
    ok = warm.by_status.get(200, 0) + tally.by_status.get(200, 0)
    locked = log.read_text(errors="replace").count("database is locked")
    print(f"{label}: {tally.done / seconds:.0f} req/s, ledger {ledger}, answered {answered}")
    return {
        "label": label,
        "rps": tally.done / seconds,
        "answered": answered,
        "ok": ok,
        "rows": ledger["rows"],
        "distinct": ledger["distinct"],
        "locked": locked,
        "statuses": {**warm.by_status, **tally.by_status},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated N for serve")
    parser.add_argument("--requests", type=int, default=40_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="byok-workers-mock-"))
    mock = Server.start(
        [sys.executable, "-m", "benchmarks.mock_upstream", "--port", str(soak.MOCK_PORT)],
        core="0-1", port=soak.MOCK_PORT, env={}, log=tmp / "mock.log", cwd=ROOT,
    )  # fmt: skip
    port = str(soak.GATEWAY_PORT)
    runs = []
    try:
        for n in (int(x) for x in args.workers.split(",")):
            serve = [sys.executable, "-m", "byok_middleware", "serve", "--port", port]
            runs.append(_one(f"`byok-middleware serve --workers {n}`", [*serve, "--workers",
                                                                        str(n)], args))  # fmt: skip
        uvicorn = [
            sys.executable, "-m", "uvicorn", "--factory", "byok_middleware.serving:create_app",
            "--host", "127.0.0.1", "--port", port, "--workers", "2", "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        runs.append(_one("uvicorn `--workers 2 --factory byok_middleware.serving:create_app`",
                         uvicorn, args))  # fmt: skip
    finally:
        mock.stop()
    lines = [
        "## Several workers on the default SQLite store: `python -m benchmarks.workers`",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {args.requests:,d} requests per run "
        f"after {args.warmup:,d} warm-up ones, plain and streamed alternately, "
        f"{args.connections} connections; nothing pinned (2 cores shared with the mock, the "
        f"client and other sessions; load average at the end {os.getloadavg()[0]:.1f}).",
        "",
        "| server | req/s | answers | 200s | ledger rows (distinct ids) | 'database is locked' "
        "in its log |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run['label']} | {float(str(run['rps'])):,.0f} | {run['answered']:,} "
            f"| {run['ok']:,} | {run['rows']:,} ({run['distinct']:,}) | {run['locked']} |"
        )
    good = all(r["rows"] == r["answered"] == r["ok"] == r["distinct"] and not r["locked"]
               for r in runs)  # fmt: skip
    lines += [
        "",
        ("- ✓" if good else "- ✗") + " every answer a 200 with exactly one ledger row, and no "
        "'database is locked' in any run.",
    ]
    replace_section("workers", lines, args.output)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

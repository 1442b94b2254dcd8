"""``python -m benchmarks.server_instructions``: whole servers' instructions per request.

Each target (default: raw aiohttp, the gateway on Starlette, the gateway in the FastAPI example)
runs under ``valgrind --tool=callgrind --instr-atstart=no`` with the mock upstream outside it. After
a wrk warm-up, counting is switched on (``callgrind_control -i on``) for a timed wrk run at c=32
and off again, and the count is divided by the requests wrk completed. Unlike CPU time, the
figures do not move with the neighbours' load, so the ratio to raw aiohttp is steady between
runs; they miss what only time shows (cache misses, thread hand-offs). Under valgrind a server is
some 50 times slower, so the ledger's 0.2 s batches hold fewer rows than at full speed and its
per-batch costs weigh more here. About 40 s per target. ``--stream`` counts streamed chat
requests instead (the mock's 20 chunks, usage and ``[DONE]``). Run from a worktree of an older
commit (with this file copied in), it counts that commit's code the same way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import measure, targets
from benchmarks.procs import wait_for_port

MOCK_PORT, TARGET_PORT = 18600, 18700
REFERENCE = "aiohttp"


def _callgrind(argv: list[str], out: Path) -> list[str]:
    tool = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    return [*tool, *argv]


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], capture_output=True, check=False, timeout=60)


def _totals(directory: Path, stem: str) -> int:
    """Instructions in the dumps of one run (``stem`` and ``stem.N``; start-up was not counted)."""
    total = 0
    for dump in [*directory.glob(stem), *directory.glob(f"{stem}.*")]:
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total


def count(
    target: targets.Target, work: Path, seconds: float, *, register: bool, stream: bool = False
) -> tuple[int, int]:
    """(instructions, requests) of ``target`` over ``seconds`` of wrk at c=32."""
    if target.argv is None:
        raise ValueError(f"{target.key} is not a server")
    argv = [arg.replace("{port}", str(TARGET_PORT)) for arg in target.argv]
    stem = f"callgrind.{target.key}"
    env = {**os.environ, **target.env, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(
        _callgrind(argv, work / stem), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(TARGET_PORT, proc, 180)
        if register and target.auth:
            targets.register_provider_key(TARGET_PORT, target.auth)
        url, body = target.url(TARGET_PORT), measure.chat_body(stream=stream)

        def wrk(duration: float) -> measure.WrkResult:
            return measure.run_wrk(
                url, body, target.auth, connections=32, seconds=duration, server_pid=None, core="1"
            )

        wrk(5)  # warm-up, not counted
        _control("-i", "on", str(proc.pid))
        result = wrk(seconds)
        _control("-i", "off", str(proc.pid))
        time.sleep(1)  # let the last responses and ledger writes finish uncounted
        _control("-d", str(proc.pid))
        if result.errors:
            raise RuntimeError(f"{target.key}: {result.errors} failed requests")
    finally:
        proc.terminate()
        proc.wait(60)
    return _totals(work, stem), result.requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="aiohttp,gateway-starlette,gateway")
    parser.add_argument("--seconds", type=float, default=20, help="the counted wrk run")
    parser.add_argument("--stream", action="store_true", help="streamed chat instead of plain")
    args = parser.parse_args()
    kind = "streamed" if args.stream else "plain"
    if shutil.which("valgrind") is None or shutil.which("wrk") is None:
        raise SystemExit("needs valgrind and wrk: apt-get install -y valgrind wrk")
    upstream = f"http://127.0.0.1:{MOCK_PORT}"
    mock_argv = [sys.executable, "-m", "benchmarks.mock_upstream", "--port", str(MOCK_PORT)]
    mock = subprocess.Popen(["taskset", "-c", "1", *mock_argv])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        loop = targets.event_loop()
        known = targets.bare_targets(loop, upstream) + targets.gateway_targets(loop, upstream, work)
        by_key = {target.key: target for target in known}
        per_request: dict[str, float] = {}
        registered = False
        try:
            wait_for_port(MOCK_PORT, mock, 30)
            for key in args.only.split(","):
                target = by_key[key]
                instructions, requests = count(
                    target, work, args.seconds, register=not registered, stream=args.stream
                )
                registered = registered or target.auth is not None
                per_request[key] = instructions / requests
                ratio = ""
                if REFERENCE in per_request and key != REFERENCE:
                    ratio = f"  x{per_request[key] / per_request[REFERENCE]:.2f} of raw aiohttp"
                print(
                    f"{target.label}: {per_request[key]:,.0f} instructions per {kind} request "
                    f"({requests} requests){ratio}",
                    flush=True,
                )
        finally:
            mock.terminate()
            mock.wait(30)


if __name__ == "__main__":
    main()

"""``python -m benchmarks.profile``: py-spy on the gateway under wrk load, plain and streamed.

Starts the mock (core 1) and the gateway (core 0) as ``benchmarks.run`` does, drives it with wrk at
c=32 and records with ``py-spy`` (pinned to core 1, ``--nonblocking``). Writes speedscope files
``benchmarks/out/profile-<label>-{plain,stream}.speedscope.json`` (an ignored folder: profiles
hold machine paths and are regenerated, never committed; open them in https://www.speedscope.app)
and prints the top costs: self time by function and inclusive time of the package's own functions.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from benchmarks import measure
from benchmarks.procs import Server
from benchmarks.targets import (
    ROOT,
    WORK,
    bare_targets,
    event_loop,
    gateway_targets,
    register_provider_key,
)

MOCK_PORT, GATEWAY_PORT = 18100, 18300
OUT = ROOT / "benchmarks" / "out"
PY_SPY = Path(sys.executable).with_name("py-spy")


def _record(pid: int, seconds: int, out: Path, fmt: str) -> subprocess.Popen[bytes]:
    argv = ["taskset", "-c", "1", str(PY_SPY), "record", "--pid", str(pid), "--duration"]
    argv += [str(seconds), "--rate", "250", "--nonblocking", "--format", fmt, "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _frame(frame: dict[str, object]) -> str:
    path = str(frame.get("file", ""))
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{frame.get('name', '?')}"


def summarize(speedscope: Path, top: int = 25) -> str:
    """Self and inclusive shares per function from a py-spy speedscope file (all threads)."""
    data = json.loads(speedscope.read_text())
    frames = [_frame(f) for f in data["shared"]["frames"]]
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0.0
    for prof in data["profiles"]:
        for stack, weight in zip(prof["samples"], prof["weights"], strict=True):
            if not stack:
                continue
            names = [frames[i] for i in stack]
            total += weight
            own[names[-1]] += weight
            for name in set(names):
                inclusive[name] += weight
    lines = [f"samples: {total:.0f}", "", "self time (leaf frame):"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive time, byok_middleware functions:"]
    ours = [(name, n) for name, n in inclusive.most_common() if name.startswith("byok_middleware")]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in ours[:top]]
    lines += ["", "inclusive time, everything:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def profile(
    name: str, body: bytes, url: str, auth: str | None, pid: int, seconds: int, label: str
) -> str:
    measure.run_wrk(url, body, auth, connections=32, seconds=2, server_pid=None, core="1")
    speedscope = OUT / f"profile-{label}-{name}.speedscope.json"
    load = threading.Thread(
        target=measure.run_wrk,
        args=(url, body, auth),
        kwargs={"connections": 32, "seconds": seconds + 2, "server_pid": None, "core": "1"},
    )
    load.start()
    _record(pid, seconds, speedscope, "speedscope").wait()
    load.join()
    return summarize(speedscope)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--label", default="after", help="profile-<label>-<scenario> files")
    parser.add_argument(
        "--target",
        default="gateway",
        help="a target key of benchmarks.run (gateway, gateway-starlette, aiohttp, ...)",
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    WORK.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    upstream = f"http://127.0.0.1:{MOCK_PORT}"
    tmp = Path(tempfile.mkdtemp(prefix="byok-profile-"))
    mock = Server.start(
        [sys.executable, "-m", "benchmarks.mock_upstream", "--port", str(MOCK_PORT)],
        core="1", port=MOCK_PORT, env={}, log=WORK / "profile-mock.log", cwd=ROOT,
    )  # fmt: skip
    try:
        targets = bare_targets(event_loop(), upstream) + gateway_targets(
            event_loop(), upstream, tmp
        )
        target = next((t for t in targets if t.key == args.target and t.argv), None)
        if target is None or target.argv is None:
            raise SystemExit(f"no server target {args.target!r}")
        argv = [p.replace("{port}", str(GATEWAY_PORT)) for p in target.argv]
        server = Server.start(
            argv, core="0", port=GATEWAY_PORT, env=target.env, log=WORK / "profile-gw.log",
            cwd=ROOT,
        )  # fmt: skip
        try:
            if target.auth is not None:  # a gateway: its tenant needs a provider key
                register_provider_key(GATEWAY_PORT, target.auth)
            url = target.url(GATEWAY_PORT)
            for name, stream in (("plain", False), ("stream", True)):
                body = measure.chat_body(stream=stream)
                print(f"== {name} ==")
                print(
                    profile(name, body, url, target.auth, server.pid, args.seconds, args.label),
                    flush=True,
                )
        finally:
            server.stop()
    finally:
        mock.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m benchmarks.bytecodes [--stream]``: Python bytecodes per request, by function.

The in-process set-up of ``benchmarks.inproc`` (stub upstream, SQLite store), one batch traced
with ``sys.settrace`` and opcode events: every bytecode the event loop's thread executes is
counted against its function. The counts are exact and repeat from run to run, so they say which
function a difference between two versions is made of, where ``benchmarks.instructions`` gives
one total. They count Python bytecodes only: C work (orjson, SQLite, uvloop) is invisible, and a
bytecode that calls into C weighs as much as a ``LOAD_FAST``. ``--save FILE`` keeps the counts as
JSON; ``--against FILE`` prints the functions whose counts differ most from a saved run (take the
older version's counts from a worktree of it, run with this file copied in).

"calls" are a frame's entries: a coroutine resumed after an ``await`` that suspended counts again.

``--stream`` streams instead: the stub answers 20 content events, a usage event and ``[DONE]``,
the mock upstream's stream, every event in its own read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

from benchmarks import inproc, mock_upstream
from byok_middleware.asgi import Message

STREAM_REQUEST = (
    b'{"model":"openai/gpt-4o","stream":true,"messages":[{"role":"user","content":"Hi"}]}'
)


def _unchunked(frame: bytes) -> bytes:
    """An SSE event of the mock's chunked-encoding frame (``<hex length>\\r\\n<data>\\r\\n``)."""
    size, _, rest = frame.partition(b"\r\n")
    return rest[: int(size, 16)]


_ROOT = str(Path(__file__).resolve().parent.parent) + "/"
EVENTS = [_unchunked(e) for e in (*mock_upstream._CONTENT_EVENTS, mock_upstream._USAGE_EVENT)]
EVENTS.append(b"data: [DONE]\n\n")


class _Tracer:
    """Bytecodes and calls per code object while installed with ``sys.settrace``."""

    def __init__(self) -> None:
        self.bytecodes: Counter[CodeType] = Counter()
        self.calls: Counter[CodeType] = Counter()

    def _local(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "opcode":
            self.bytecodes[frame.f_code] += 1
        return self._local

    def __call__(self, frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        self.calls[frame.f_code] += 1
        return self._local


def _name(code: CodeType) -> str:
    path = code.co_filename
    for marker in ("site-packages/", "python3.11/", "python3.12/", "python3.13/"):
        path = path.split(marker)[-1]
    return f"{path.removeprefix(_ROOT)}:{code.co_name}"


async def count(requests: int, *, stream: bool) -> dict[str, tuple[float, float]]:
    """``{"file:function": (bytecodes, calls)}`` per request over one traced batch."""
    body = STREAM_REQUEST if stream else inproc.REQUEST
    upstream = (
        inproc.StubUpstream(EVENTS, "text/event-stream", sleep=True)
        if stream
        else inproc.StubUpstream()
    )
    async with inproc.bench_gateway(upstream) as (middleware, gateway_key):
        gateway = middleware.gateway
        scope = inproc.chat_scope(gateway_key, body)
        statuses: list[int] = []

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        async def batch() -> None:
            for _ in range(requests):
                await middleware(scope, inproc.receiver(body), send)
            await gateway.ledger.flush()

        await batch()  # warm-up: caches, prices, the first SQLite write
        tracer = _Tracer()
        sys.settrace(tracer)
        try:
            await batch()
        finally:
            sys.settrace(None)
    if set(statuses) != {200}:
        raise RuntimeError(f"unexpected statuses: {sorted(set(statuses))}")
    counts: dict[str, tuple[float, float]] = {}
    for code, n in tracer.bytecodes.items():
        bytecodes, calls = counts.get(_name(code), (0.0, 0.0))
        counts[_name(code)] = (bytecodes + n / requests, calls + tracer.calls[code] / requests)
    return counts


def _compare(old: dict[str, list[float]], new: dict[str, tuple[float, float]], top: int) -> None:
    total_old = sum(v[0] for v in old.values())
    total_new = sum(v[0] for v in new.values())
    print(f"bytecodes per request: {total_new:,.0f}, against {total_old:,.0f} saved")
    names = sorted(
        set(old) | set(new), key=lambda k: -abs(new.get(k, (0, 0))[0] - old.get(k, [0])[0])
    )
    print(f"{'saved':>8} {'now':>8} {'change':>8}  calls  function")
    for name in names[:top]:
        was, now = old.get(name, [0.0, 0.0]), new.get(name, (0.0, 0.0))
        change = now[0] - was[0]
        print(f"{was[0]:8.0f} {now[0]:8.0f} {change:+8.0f}  {was[1]:.0f}->{now[1]:.0f}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--stream", action="store_true", help="streamed chat instead of plain")
    parser.add_argument("--top", type=int, default=40, help="functions to print")
    parser.add_argument("--save", type=Path, help="write the counts to this JSON file")
    parser.add_argument("--against", type=Path, help="compare with counts saved by --save")
    args = parser.parse_args()
    counts = asyncio.run(count(args.requests, stream=args.stream))
    if args.save is not None:
        args.save.write_text(json.dumps(counts, indent=0, sort_keys=True))
    if args.against is not None:
        _compare(json.loads(args.against.read_text()), counts, args.top)
        return
    ours = sum(v[0] for k, v in counts.items() if k.startswith("byok_middleware/"))
    print(
        f"bytecodes per request: {sum(v[0] for v in counts.values()):,.0f}, of which "
        f"{ours:,.0f} in byok_middleware (the rest: asyncio's Python event loop, the stdlib)"
    )
    for name, (bytecodes, calls) in sorted(counts.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"{bytecodes:8.0f}  {calls:5.1f} calls  {name}")


if __name__ == "__main__":
    main()

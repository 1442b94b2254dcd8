"""The bytecode counter of ``benchmarks.bytecodes`` counts what a request runs, per function."""

from __future__ import annotations

import sys

from benchmarks import bytecodes


async def test_a_plain_request_runs_its_handler_once_and_the_counts_repeat() -> None:
    first = await bytecodes.count(4, stream=False)
    second = await bytecodes.count(4, stream=False)
    assert sys.gettrace() is None  # the tracer is off again
    bytecodes_, calls = first["byok_middleware/proxy/chat.py:handle_chat"]
    assert calls == 1.0
    assert bytecodes_ > 0
    assert "byok_middleware/gateway/core.py:record" in first
    # Exact counts: the package's own functions run the same bytecodes every time.
    ours = {k: v for k, v in first.items() if k.startswith("byok_middleware/proxy/")}
    assert ours == {k: v for k, v in second.items() if k.startswith("byok_middleware/proxy/")}


async def test_a_streamed_request_reads_every_event() -> None:
    counts = await bytecodes.count(3, stream=True)
    assert counts["byok_middleware/proxy/chat.py:handle_chat"][0] > 0
    # 20 content events, the usage event and [DONE], each read on its own: the relay looks at
    # every read, and splits only the three that are not plain chunks (the one with the finish
    # reason, the usage event, [DONE]) into events.
    assert counts["byok_middleware/proxy/rewriters.py:unchanged"][1] == len(bytecodes.EVENTS)
    assert counts["byok_middleware/proxy/sse.py:feed"][1] == 3

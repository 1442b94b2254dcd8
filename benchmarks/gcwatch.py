"""``python -m benchmarks.gcwatch UVICORN-ARGS``: uvicorn, with every full collection logged.

With ``BENCH_GC_LOG=path`` set, a ``gc.callbacks`` hook appends one line per full (generation 2)
collection to ``path``: its start (``time.monotonic_ns()``, the same clock in every process), its
duration in ns and the objects it freed. The benchmark reads the lines that fall inside a
measured run, so it can say how many full collections the run had and how long each stalled
the event loop. One ``os.write`` per full collection (about one a second at most) is all the
hook costs; younger generations are not logged.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path


def install(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    started = [0]

    def watch(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.monotonic_ns()
            return
        elapsed = time.monotonic_ns() - started[0]
        os.write(fd, b"%d %d %d\n" % (started[0], elapsed, info["collected"]))

    gc.callbacks.append(watch)


def read(path: Path, since_ns: int, until_ns: int) -> list[float]:
    """Durations in ms of the full collections that started in [since_ns, until_ns)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and since_ns <= int(parts[0]) < until_ns:
            found.append(int(parts[1]) / 1e6)
    return found


def main() -> None:
    path = os.environ.get("BENCH_GC_LOG")
    if path:
        install(path)
    import uvicorn

    sys.argv = ["uvicorn", *sys.argv[1:]]
    uvicorn.main()


if __name__ == "__main__":
    main()

"""``python -m benchmarks.instructions``: the gateway's instructions per request, by callgrind.

Runs ``benchmarks.inproc`` (stub upstream, SQLite store) under ``valgrind --tool=callgrind`` twice,
with ``--requests`` N and 6N (one round each, after its warm-up batch of the same size), and
prints the difference over the 10N extra requests. Start-up and imports cancel out. Instruction
counts do not depend on what else the machine runs, so two versions of the code can be compared
in single runs where timings on a shared machine differ by ±20%. They miss what time shows
(cache misses, the GIL hand-offs of the SQLite thread), so confirm a gain with ``make bench``.
Each run takes about a minute; ``--requests`` 100 is enough. ``--ref COMMIT`` counts that commit
too, checked out into a temporary git worktree and run the same way (its own ``benchmarks.inproc``,
this venv), and prints this tree's count over it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.procs import checked_out

ROOT = Path(__file__).resolve().parent.parent


def count(requests: int, root: Path = ROOT) -> int:
    """Total instructions (Ir, every thread) of one inproc run with ``requests`` per batch, of
    the code in ``root``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
        argv += ["-m", "benchmarks.inproc", "--requests", str(requests), "--rounds", "1"]
        env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every run
        subprocess.run(argv, cwd=root, env=env, check=True, capture_output=True)
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no totals")


def per_request(requests: int, root: Path = ROOT) -> float:
    """Instructions per plain request of the code in ``root``: the runs do 2N and 12N."""
    small, large = count(requests, root), count(6 * requests, root)
    return (large - small) / (10 * requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="N (the runs do 2N and 12N)")
    parser.add_argument("--ref", help="an older commit to count the same way (a hash or a tag)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind: apt-get install -y valgrind")
    here = per_request(args.requests)
    print(f"gateway instructions per plain request: {here:,.0f}")
    if args.ref is None:
        return
    with (
        tempfile.TemporaryDirectory(prefix="byok-instructions-") as work,
        checked_out(args.ref, Path(work) / "ref") as tree,
    ):
        there = per_request(args.requests, tree)
    print(f"at {args.ref}: {there:,.0f}; this tree over it: {here / there:.2f}")


if __name__ == "__main__":
    main()

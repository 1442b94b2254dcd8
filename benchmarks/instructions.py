"""``python -m benchmarks.instructions``: the gateway's instructions per request, by callgrind.

Runs ``benchmarks.inproc`` (stub upstream, SQLite store) under ``valgrind --tool=callgrind`` twice,
with ``--requests`` N and 6N (one round each, after its warm-up batch of the same size), and
prints the difference over the 10N extra requests. Start-up and imports cancel out. Instruction
counts do not depend on what else the machine runs, so two versions of the code can be compared
in single runs where timings on a shared machine differ by ±20%. They miss what time shows
(cache misses, the GIL hand-offs of the SQLite thread), so confirm a gain with ``make bench``.
Each run takes about a minute; ``--requests`` 100 is enough.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def count(requests: int) -> int:
    """Total instructions (Ir, every thread) of one inproc run with ``requests`` per batch."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
        argv += ["-m", "benchmarks.inproc", "--requests", str(requests), "--rounds", "1"]
        env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every run
        subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True)
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no totals")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="N (the runs do 2N and 12N)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind: apt-get install -y valgrind")
    small, large = count(args.requests), count(6 * args.requests)
    per_request = (large - small) / (10 * args.requests)
    print(f"gateway instructions per plain request: {per_request:,.0f}")


if __name__ == "__main__":
    main()
